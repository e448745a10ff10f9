"""The registry of shipped models (SemiSupCardiacSegLib/shipped.py) against the files in models/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from SemiSupCardiacSegLib.checkpoint import load_checkpoint, resolve_model_path
from SemiSupCardiacSegLib.shipped import MODELS_DIR, SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_record_matches_its_checkpoint_and_card(name):
    """Every record's file and card exist; its labels are the checkpoint's labels 1, 2, ... in order."""
    record = SHIPPED[name]
    assert record.name == name and record.path.parent == MODELS_DIR
    assert record.path.is_file(), f"{record.file} missing from models/"
    assert record.card.is_file() and record.card.name == Path(record.file).stem + ".md"
    assert f"`{record.file}`" in record.card.read_text(encoding="utf-8")  # the card names its file
    assert record.file.startswith(f"{name}_")  # the file name starts with the name users type
    labels = load_checkpoint(record.path)["labels"]
    assert tuple(labels[k] for k in sorted(labels, key=int)) == record.labels
    assert [int(k) for k in sorted(labels, key=int)] == list(range(1, len(labels) + 1))


def test_every_shipped_file_is_in_the_registry():
    """No checkpoint in models/ that the registry (and so the CLI and the Slicer module) does not list."""
    assert sorted(p.name for p in MODELS_DIR.glob("*.pt")) == sorted(m.file for m in SHIPPED.values())


def test_short_names_and_paths_resolve(tmp_path):
    assert list(SHIPPED)[0] == "la"  # the default model comes first in the UI's list
    assert resolve_model_path(None) == SHIPPED["la"].path
    assert resolve_model_path("cine") == SHIPPED["cine"].path
    assert resolve_model_path(str(tmp_path / "m.pt")) == tmp_path / "m.pt"


def test_registry_imports_without_torch():
    """A UI lists the shipped models (and what they segment) before torch is installed."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); from SemiSupCardiacSegLib.shipped import SHIPPED; "
        "assert SHIPPED['la'].labels == ('left atrium',); assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
