"""The models shipped in ``models/`` by short name (torch-free, so a UI can list them before torch exists)."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
#: Short name -> file in ``MODELS_DIR``.
SHIPPED_MODELS = {"la": "la_sassnet.pt", "cine": "acdc_bmtctl.pt"}
#: Short name -> the structures its labels 1, 2, ... are (checked against each checkpoint by the tests),
#: so a UI can name what a shipped model segments without loading it.
SHIPPED_LABELS = {"la": ["left atrium"], "cine": ["right ventricle", "myocardium", "left ventricle"]}
