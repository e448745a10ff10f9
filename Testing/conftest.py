"""Shared test fixtures: repo on sys.path, real-data locations (skipped with a message when absent)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
LA_DIR = SHARED / "data" / "LA2018"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def la_dir() -> Path:
    """The real LA2018 data folder, or skip: it lives outside the repo and is never committed."""
    if not (LA_DIR / "train.list").is_file():
        pytest.skip(f"real LA2018 data not found at {LA_DIR} (it is kept outside the repository)")
    return LA_DIR
