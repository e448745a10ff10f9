"""The registry of models shipped in ``models/``: one record per model, by the short name users type
(``--model la``). Torch-free, so a UI can list the models and name what they segment before torch exists.

File names say what a file holds: ``<short name>_<network>_<how it was trained>.pt``, its model card
(``.md``, written by Training/model_card.py) beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model.

    name: the short name users type (``--model la``, the Slicer module's model list).
    file: checkpoint file name in ``MODELS_DIR``.
    labels: the structures its labels 1, 2, ... are (the tests check them against the checkpoint's
      metadata), so a UI names what the model segments without loading it.
    modality: the images it was trained for, in a few words.
    """

    name: str
    file: str
    labels: tuple[str, ...]
    modality: str

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return MODELS_DIR / self.file

    @property
    def card(self) -> Path:
        """The model card beside the checkpoint (how it was trained, its held-out figures)."""
        return self.path.with_suffix(".md")


#: The shipped models by short name, in the order a UI lists them (the default, ``la``, first).
SHIPPED: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel("la", "la_vnet_selftrained.pt", ("left atrium",), "3D LGE-MRI"),
        ShippedModel(
            "cine",
            "cine_unet2d_selftrained.pt",
            ("right ventricle", "myocardium", "left ventricle"),
            "short-axis cine MRI (slice by slice)",
        ),
    )
}
