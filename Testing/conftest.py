"""Shared test fixtures: repo on sys.path, real-data locations (skipped with a message when absent)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import h5py
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
LA_DIR = SHARED / "data" / "LA2018"

torch.set_num_threads(2)


def sigint_as_at_a_terminal() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: its SIGINT back to the default.

    A command started in the background by a non-interactive shell (``make test &``, some CI runners)
    inherits SIGINT ignored, and Python then leaves it ignored (Ctrl-C never reaches it, as POSIX
    wants for background jobs); the child would finish as if no signal had come."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


from SemiSupCardiacSegLib.phantoms import make_la_phantom, write_phantom_h5  # noqa: E402
from SemiSupCardiacSegLib.training import Trainer  # noqa: E402

# A tiny SASSNet configuration that trains in seconds on phantoms (shared by several test files).
TINY = {
    "method": "sassnet",
    "labeled": 2,
    "iterations": 30,
    "seed": 0,
    "num_workers": 0,
    "network": {"in_channels": 1, "num_classes": 2, "n_filters": 4, "normalization": "batch", "dropout": 0.5},
    "method_params": {"disc_filters": 4, "seg_loss": "dice_ce"},
    "preprocessing": {"spacing": [2.5, 2.5, 2.5]},
    "patch_size": [32, 32, 16],
    "validation": {"last": 1, "every": 15},
    "log_every": 1,
    "checkpoint_every": 10,
    "optim": {"model": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "constant"}},
}


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory) -> Path:
    """Five phantom cases as LA-style .h5: 3 with labels (2 train + 1 validation), 2 unlabeled."""
    folder = tmp_path_factory.mktemp("phantoms")
    for i in range(5):
        ph = make_la_phantom(seed=i)
        write_phantom_h5(ph, folder / f"case{i}.h5")
    for i in (3, 4):  # make cases 3 and 4 unlabeled
        with h5py.File(folder / f"case{i}.h5", "a") as f:
            del f["label"]
    # Put the labeled validation case last in listing order.
    (folder / "case2.h5").rename(folder / "case9.h5")
    return folder


@pytest.fixture(scope="session")
def trained(phantom_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    result = Trainer({**TINY, "data": str(phantom_folder)}, out, device="cpu", progress=False).run()
    assert result["iterations"] == TINY["iterations"]
    return out


@pytest.fixture(scope="session")
def la_dir() -> Path:
    """The real LA2018 data folder, or skip: it lives outside the repo and is never committed."""
    if not (LA_DIR / "train.list").is_file():
        pytest.skip(f"real LA2018 data not found at {LA_DIR} (it is kept outside the repository)")
    return LA_DIR


# A tiny BMT-CTL configuration for 2D cine phantoms (test_cine; test_pseudo_labels derives its teacher).
CINE_TINY = {
    "method": "bmtctl",
    "arch": "unet2d",
    "labeled": 4,
    "iterations": 60,
    "seed": 0,
    "num_workers": 0,
    "network": {"in_channels": 1, "num_classes": 4, "n_filters": 4, "dropout": 0.1},
    "method_params": {"disc_filters": 4, "mc_passes": 2, "seg_loss": "dice_ce"},
    "labels": {"1": "right ventricle", "2": "myocardium", "3": "left ventricle"},
    "preprocessing": {"in_plane_shape": [48, 48], "reorient": False},
    "patch_size": [32, 32, 1],
    "inference_patch_size": [48, 48, 1],
    "batch_size": 8,
    "labeled_per_batch": 4,
    "validation": {"last": 2, "every": 30},
    "log_every": 1,
    "checkpoint_every": 30,
    "optim": {"model": {"type": "adam", "lr": 0.003, "schedule": "constant"}},
}


def write_cine_frames(folder: Path, patients: int = 6) -> Path:
    """ED and ES phantom frames of ``patients`` patients as ACDC .h5 files (96 x 80 x 6, 2 x 2 x 10 mm)."""
    from SemiSupCardiacSegLib.cine_phantoms import make_cine_phantom, write_acdc_h5

    for p in range(patients):
        for phase, frame in (("ED", 1), ("ES", 2)):
            write_acdc_h5(
                make_cine_phantom(p, phase, shape=(96, 80, 6), spacing=(2.0, 2.0, 10.0)),
                folder / f"patient{p:03d}_frame{frame:02d}.h5",
            )
    return folder
