"""The library without the packages stock 3D Slicer does not bundle (tqdm, h5py, matplotlib):
``segment`` runs (plain progress printout), an ``.h5`` input or ``--montage`` fails with one line
saying what to install; ``dependencies.missing_packages`` reports what is not importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from SemiSupCardiacSegLib import dependencies
from SemiSupCardiacSegLib.dependencies import OPTIONAL, REQUIRED, is_available, missing_packages
from SemiSupCardiacSegLib.io import write_volume
from SemiSupCardiacSegLib.phantoms import make_la_phantom
from SemiSupCardiacSegLib.reporting import OUTPUT_FILES
from SemiSupCardiacSegLib.volume import Volume

REPO = Path(__file__).resolve().parent.parent
BLOCKED = ("tqdm", "h5py", "matplotlib")
# A None entry in sys.modules makes `import NAME` raise ImportError (as if it were not installed).
PRELUDE = (
    "import runpy, sys\n"
    "sys.modules.update({n: None for n in %r})\n"
    "sys.argv = ['semisupcardiacseg'] + sys.argv[1:]\n"
    "runpy.run_module('SemiSupCardiacSegLib', run_name='__main__', alter_sys=True)\n"
) % (BLOCKED,)


def _cli_without_optional(args, cwd):
    return subprocess.run(
        [sys.executable, "-c", PRELUDE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )


def test_missing_packages_reports_only_missing():
    assert missing_packages() == []  # numpy, scipy, SimpleITK are here (and bundled by Slicer)
    assert set(REQUIRED) == {"numpy", "scipy", "SimpleITK"} and set(OPTIONAL) == {"h5py", "tqdm", "matplotlib"}
    assert "torch" not in REQUIRED and "torch" not in OPTIONAL  # comes with the SlicerPyTorch extension
    assert missing_packages(["numpy", "h5py", "surely_not_installed_pkg_42"]) == ["surely_not_installed_pkg_42"]
    assert missing_packages(["a_missing.sub_module"]) == ["a_missing.sub_module"]
    assert is_available("scipy") and not is_available("surely_not_installed_pkg_42")


def test_missing_packages_has_no_import_side_effects():
    code = (
        "import sys; from SemiSupCardiacSegLib.dependencies import missing_packages, REQUIRED, OPTIONAL;"
        "print(missing_packages(list(REQUIRED) + list(OPTIONAL)));"
        "print(sorted(n for n in ('numpy', 'scipy', 'SimpleITK', 'h5py', 'tqdm', 'matplotlib') if n in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "[]"


def test_blocked_module_counts_as_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert missing_packages(["tqdm", "numpy"]) == ["tqdm"]
    hint = dependencies.install_hint("tqdm")
    assert hint == "pip install tqdm; in Slicer: slicer.util.pip_install('tqdm')"


def test_progress_fallback_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    from SemiSupCardiacSegLib.progress import PlainProgress, progress_bar

    items = list(progress_bar(range(5), desc="load", leave=False))
    assert items == list(range(5))
    with progress_bar(total=4, initial=1, desc="train", dynamic_ncols=True) as bar:
        assert isinstance(bar, PlainProgress)
        bar.set_postfix(loss="0.5")
        bar.update(3)
        bar.write("a message")
    err = capsys.readouterr()
    assert "load: 100% (5/5)" in err.err and "train: 100% (4/4) loss=0.5" in err.err and "a message" in err.out
    with progress_bar(total=3, disable=True) as quiet:
        quiet.update(3)
    assert capsys.readouterr().err == ""


def test_segment_runs_without_tqdm_h5py_matplotlib(trained, phantom_folder, tmp_path):
    ph = make_la_phantom(shape=(48, 44, 24), seed=3)
    inp = tmp_path / "case.nrrd"
    write_volume(Volume(ph.image.astype(np.float32), spacing=(2.5, 2.5, 2.5), origin=(3, 4, 5)), inp)
    model = str(trained / "model.pt")
    proc = _cli_without_optional(
        [
            "segment",
            str(inp),
            "--out",
            str(tmp_path / "out"),
            "--model",
            model,
            "--mc-samples",
            "2",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "error" not in proc.stderr and "Traceback" not in proc.stderr
    assert "segment: 100%" in proc.stderr  # the plain progress printout stands in for tqdm
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input"] == str(inp)
    for name in OUTPUT_FILES:
        assert (tmp_path / "out" / name).is_file(), name

    # An .h5 input needs h5py, --montage needs matplotlib: one line each, exit code 2, nothing written.
    h5 = _cli_without_optional(
        [
            "segment",
            str(phantom_folder / "case0.h5"),
            "--out",
            str(tmp_path / "h5"),
            "--model",
            model,
            "--device",
            "cpu",
        ],
        tmp_path,
    )
    assert h5.returncode == 2
    assert h5.stderr.strip().splitlines() == [
        "error: reading case0.h5 needs the h5py package (pip install h5py; in Slicer: slicer.util.pip_install('h5py'))"
    ]
    mont = _cli_without_optional(
        ["segment", str(inp), "--out", str(tmp_path / "m"), "--model", model, "--montage", "--device", "cpu"], tmp_path
    )
    assert mont.returncode == 2 and not (tmp_path / "m").exists()
    assert mont.stderr.strip().splitlines() == [
        "error: --montage needs the matplotlib package (pip install matplotlib; "
        "in Slicer: slicer.util.pip_install('matplotlib'))"
    ]
