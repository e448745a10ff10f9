"""The library under the Pythons of stock 3D Slicer: 3.9 (Slicer 5.6, 5.8) and 3.12 (Slicer 5.10).

(a) Every ``.py`` file of SemiSupCardiacSegLib/, Training/ and the module folder SemiSupCardiacSeg/
    compiles with that interpreter (its own parser: ``match``, ``except*``, PEP 695 ... fail here).
(b) With numpy + scipy + SimpleITK importable there (h5py too for the ``.h5`` part), the torch-free
    modules are imported and really run in a subprocess: NRRD write/read-back with an oblique
    geometry, label maps, ``.h5`` cases, canonical reorientation, metrics, cardiac indices (also via
    the ``indices`` command line), uncertain regions, ``dependencies.missing_packages``.
    Runtime-evaluated 3.10+ constructs at import time (``X | Y`` outside annotations, dataclass
    ``slots=``/``kw_only=``) fail here. torch is not installed there (PyPI's pulls GBs of CUDA).

Interpreters looked up, in order: ``$SEMISUP_PY39`` / ``$SEMISUP_PY312`` (a python executable),
``$SEMISUP_COMPAT_VENVS/venv39|venv312/bin/python`` (default: the folder above the repository),
then ``python3.9`` / ``python3.12`` on PATH or under ``~/.pyenv/versions`` (compile check only,
unless they have the packages). Create the venvs (outside the repository) with
``make compat-venvs`` or by hand::

    python3.9 -m venv ../venv39 && ../venv39/bin/pip install numpy scipy SimpleITK h5py
    python3.12 -m venv ../venv312 && ../venv312/bin/pip install numpy scipy SimpleITK h5py

A missing interpreter or package skips with a message naming it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VERSIONS = {"3.9": "venv39", "3.12": "venv312"}
SOURCE_DIRS = ("SemiSupCardiacSegLib", "Training", "SemiSupCardiacSeg")


def _version_of(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_interpreters(version: str) -> list[str]:
    """Candidate executables for Python ``version``, the venv with packages first."""
    tag = version.replace(".", "")
    venvs = Path(os.environ.get("SEMISUP_COMPAT_VENVS", REPO.parent))
    cands = [
        os.environ.get(f"SEMISUP_PY{tag}"),
        str(venvs / VERSIONS[version] / "bin" / "python"),
        shutil.which(f"python{version}"),
    ]
    cands += sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / f"{version}.*" / "bin" / f"python{version}")))
    found = []
    for c in cands:
        if c and Path(c).is_file() and c not in found and _version_of(c) == version:
            found.append(c)
    return found


def interpreter(version: str) -> str:
    found = find_interpreters(version)
    if not found:
        pytest.skip(
            f"no Python {version} interpreter found (set SEMISUP_PY{version.replace('.', '')} or run "
            f"`make compat-venvs`, which creates ../{VERSIONS[version]})"
        )
    return found[0]


COMPILE_ALL = r"""
import sys
from pathlib import Path
bad = []
n = 0
for d in sys.argv[1:]:
    for p in sorted(Path(d).rglob("*.py")):
        n += 1
        try:
            compile(p.read_bytes(), str(p), "exec", dont_inherit=True)  # no .pyc written
        except SyntaxError as e:
            bad.append("%s:%s: %s" % (p, e.lineno, e.msg))
print("\n".join(bad) if bad else "compiled %d files" % n)
sys.exit(1 if bad else 0)
"""


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_every_file_compiles(version):
    python = interpreter(version)
    proc = subprocess.run(
        [python, "-c", COMPILE_ALL, *SOURCE_DIRS], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"Python {version} ({python}) cannot compile:\n{proc.stdout}{proc.stderr}"
    assert int(proc.stdout.split()[1]) > 40


SMOKE = r"""
import importlib, json, pkgutil, sys, tempfile
from pathlib import Path
import numpy as np
import SemiSupCardiacSegLib
# every module that does not need torch imports (the torch ones stop at 'No module named torch')
torch_free, need_torch = [], []
for m in pkgutil.walk_packages(SemiSupCardiacSegLib.__path__, "SemiSupCardiacSegLib."):
    if m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(m.name)
        torch_free.append(m.name)
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        need_torch.append(m.name)
from SemiSupCardiacSegLib.cardiac import cardiac_indices
from SemiSupCardiacSegLib.cine_phantoms import make_cine_phantom
from SemiSupCardiacSegLib.cli import main as cli_main
from SemiSupCardiacSegLib.dependencies import is_available, missing_packages
from SemiSupCardiacSegLib.io import read_h5_case, read_label, read_volume, write_volume
from SemiSupCardiacSegLib.metrics import binary_metrics
from SemiSupCardiacSegLib.phantoms import make_la_phantom, write_phantom_h5
from SemiSupCardiacSegLib.uncertain_regions import rank_uncertain_regions
from SemiSupCardiacSegLib.volume import Volume, canonical_reorientation, reorient_volume

tmp = Path(tempfile.mkdtemp())
ph = make_la_phantom(shape=(40, 36, 22), seed=1)
direction = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
vol = Volume(ph.image.astype(np.float32), spacing=(0.7, 0.8, 1.5), origin=(10, -5, 3), direction=direction)
write_volume(vol, tmp / "img.nrrd")
back = read_volume(tmp / "img.nrrd")
assert back.same_grid(vol) and back.shape == (40, 36, 22) and np.allclose(back.array, vol.array), "nrrd round trip"
assert np.allclose(back.ijk_to_ras(), vol.ijk_to_ras())
can = reorient_volume(back, canonical_reorientation(back.direction))
assert sorted(can.shape) == sorted(back.shape) and abs(can.voxel_volume_ml() - vol.voxel_volume_ml()) < 1e-12
write_volume(vol.with_array(ph.label.astype(np.uint8)), tmp / "lab.nrrd")
lab = read_label(tmp / "lab.nrrd")
assert lab.array.dtype == np.uint8 and (lab.array == ph.label).all()
assert binary_metrics(lab.array > 0, ph.label > 0, lab.spacing)["dice"] == 1.0
h5 = is_available("h5py")
if h5:
    write_phantom_h5(ph, tmp / "case.h5")
    img5, lab5 = read_h5_case(tmp / "case.h5")
    assert lab5 is not None and (lab5.array == ph.label).all() and np.allclose(img5.array, ph.image)
ed, es = make_cine_phantom(seed=0, phase="ED"), make_cine_phantom(seed=0, phase="ES")
ind = cardiac_indices(ed.label, es.label, ed.spacing)
assert 0 < ind["lv_ef_percent"] < 100 and ind["lv_edv_ml"] > ind["lv_esv_ml"] > 0
write_volume(Volume(ed.label.astype(np.uint8), spacing=ed.spacing), tmp / "ed.nrrd")
write_volume(Volume(es.label.astype(np.uint8), spacing=es.spacing), tmp / "es.nrrd")
assert cli_main(["indices", "--ed", str(tmp / "ed.nrrd"), "--es", str(tmp / "es.nrrd"),
                 "--out", str(tmp / "i.json")]) == 0
assert abs(json.loads((tmp / "i.json").read_text())["lv_ef_percent"] - ind["lv_ef_percent"]) < 1e-9
entropy = vol.with_array(np.where(ph.label > 0, 0.6, 0.01).astype(np.float32))
regions = rank_uncertain_regions(entropy, num_classes=2)
assert regions, "the uncertain blob is found"
assert missing_packages(["numpy", "not_a_package_xyz"]) == ["not_a_package_xyz"]
print("SMOKE " + json.dumps({"python": sys.version.split()[0], "h5": h5, "torch_free": len(torch_free),
                             "need_torch": len(need_torch), "regions": len(regions)}))
"""


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_torch_free_modules_run(version, tmp_path):
    found = find_interpreters(version)
    if not found:
        pytest.skip(
            f"no Python {version} interpreter found (run `make compat-venvs`, which creates ../{VERSIONS[version]})"
        )
    probe = (
        "import importlib.util as u; "
        "print(' '.join(n for n in ('numpy', 'scipy', 'SimpleITK') if u.find_spec(n) is None))"
    )
    python, lacking = None, ""
    for cand in found:
        lacking = subprocess.run([cand, "-c", probe], capture_output=True, text=True, timeout=30).stdout.strip()
        if not lacking:
            python = cand
            break
    if python is None:
        pytest.skip(
            f"Python {version} ({found[0]}) lacks {lacking.replace(' ', ', ')}: "
            f"run `make compat-venvs` (pip install numpy scipy SimpleITK h5py into ../{VERSIONS[version]})"
        )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([python, "-c", SMOKE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"Python {version} ({python}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SMOKE "))
    info = json.loads(line[len("SMOKE ") :])
    assert info["python"].startswith(version + ".")
    assert info["torch_free"] >= 15 and info["need_torch"] >= 1
