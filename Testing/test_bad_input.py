"""Never a silent wrong answer (issue 19, rules 1, 2, 3, 5, 6): every command refuses bad input with
one ``error: ...`` line naming the file and the cause and exit code 2 (no traceback), states what
it had to assume, writes only valid JSON and flags implausible physiology.

The commands run in-process (``cli.main`` / ``Training/train.py``'s ``main``) with capsys; the
tiny model is the session fixture ``trained`` of conftest.
"""

from __future__ import annotations

import errno
import gzip
import importlib.util
import json
import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO, TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from SemiSupCardiacSegLib import cli
from SemiSupCardiacSegLib.errors import InputError, InputWarning, describe_os_error
from SemiSupCardiacSegLib.io import read_h5_case, read_label, read_volume, reading_overrides
from SemiSupCardiacSegLib.volume import Volume

_spec = importlib.util.spec_from_file_location("train_script_for_bad_input", REPO / "Training" / "train.py")
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)


# ----------------------------------------------------------------------------- helpers
def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def run_train(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = train_script.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_error(rc: int, err: str, *needles: str) -> str:
    """Exit code 2, exactly one ``error:`` line (containing every needle), no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (what JSON itself refuses)."""

    def bad(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=bad)


def image_array(shape=(40, 36, 24), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape).astype(np.float32)
    a[10:30, 10:26, 6:18] += 3.0
    return a


def write_nrrd(path: Path, extra: str, data: np.ndarray | None = None) -> Path:
    d = image_array() if data is None else data
    hdr = (
        f"NRRD0004\ntype: float\ndimension: 3\nsizes: {d.shape[0]} {d.shape[1]} {d.shape[2]}\nendian: little\n"
        f"encoding: raw\n" + (extra + "\n" if extra else "") + "\n"
    )
    path.write_bytes(hdr.encode() + np.ascontiguousarray(d.transpose(2, 1, 0)).astype("<f4").tobytes())
    return path


def write_itk(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    im = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    im.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(im, str(path))
    return path


def nifti_with_pixdim(path: Path, pixdim) -> Path:
    tmp = path.with_name("base_" + path.name)
    write_itk(tmp, image_array(), (1.0, 1.0, 1.0))
    raw = bytearray(tmp.read_bytes())
    tmp.unlink()
    struct.pack_into("<3f", raw, 80, *pixdim)
    path.write_bytes(bytes(raw))
    return path


def mha_without_spacing(path: Path) -> Path:
    write_itk(path, image_array())
    data = path.read_bytes()
    end = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    head = "\n".join(ln for ln in data[:end].decode().split("\n") if not ln.startswith("ElementSpacing"))
    path.write_bytes(head.encode() + data[end:])
    return path


@pytest.fixture(scope="module")
def model(trained) -> Path:
    return trained / "model.pt"


@pytest.fixture()
def good(tmp_path) -> Path:
    return write_itk(tmp_path / "good.nrrd", image_array(), (2.5, 2.5, 2.5))


# ----------------------------------------------------------------------------- rule 1: geometry
GEOMETRY_CASES = {
    "nrrd without spacing": (lambda d: write_nrrd(d / "a.nrrd", ""), "stores no voxel spacing"),
    "nrrd NaN spacing": (lambda d: write_nrrd(d / "a.nrrd", "spacings: nan 1 1"), "not a number"),
    "nrrd inf spacing": (lambda d: write_nrrd(d / "a.nrrd", "spacings: 1 inf 1"), "not a number"),
    "nrrd zero spacing": (lambda d: write_nrrd(d / "a.nrrd", "spacings: 0 1 1"), "zero spacing"),
    "nrrd negative spacing": (lambda d: write_nrrd(d / "a.nrrd", "spacings: -1 1 1"), "negative spacing"),
    "nrrd sheared": (
        lambda d: write_nrrd(
            d / "a.nrrd",
            "space: left-posterior-superior\nspace directions: (1,0,0) (0.4,1,0) (0,0,1)\nspace origin: (0,0,0)",
        ),
        "direction is sheared",
    ),
    "nrrd singular": (
        lambda d: write_nrrd(
            d / "a.nrrd",
            "space: left-posterior-superior\nspace directions: (1,0,0) (1,0,0) (0,0,1)\nspace origin: (0,0,0)",
        ),
        "determinant is 0",
    ),
    "nrrd zero axis": (
        lambda d: write_nrrd(
            d / "a.nrrd",
            "space: left-posterior-superior\nspace directions: (1,0,0) (0,0,0) (0,0,1)\nspace origin: (0,0,0)",
        ),
        "determinant is 0",
    ),
    "nrrd NaN direction": (
        lambda d: write_nrrd(
            d / "a.nrrd",
            "space: left-posterior-superior\nspace directions: (nan,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)",
        ),
        "not a number",
    ),
    "nrrd NaN origin": (
        lambda d: write_nrrd(
            d / "a.nrrd",
            "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (nan,0,0)",
        ),
        "origin",
    ),
    "nifti pixdim 0": (lambda d: nifti_with_pixdim(d / "a.nii", (0.0, 0.0, 0.0)), "stores no voxel spacing"),
    "nifti pixdim NaN": (lambda d: nifti_with_pixdim(d / "a.nii", (float("nan"), 1.0, 1.0)), "not a number"),
    "nifti pixdim negative": (lambda d: nifti_with_pixdim(d / "a.nii", (1.0, -2.0, 1.0)), "negative spacing"),
    "mha without spacing": (lambda d: mha_without_spacing(d / "a.mha"), "stores no voxel spacing"),
}


@pytest.mark.parametrize("case", sorted(GEOMETRY_CASES))
def test_untrusted_geometry_is_refused_by_segment(case, tmp_path, capsys, model):
    make, cause = GEOMETRY_CASES[case]
    path = make(tmp_path)
    rc, out, err = run_cli(capsys, "segment", path, "--out", tmp_path / "out", "--model", model, "--quiet")
    one_error(rc, err, path.name, cause)
    assert not (tmp_path / "out" / "report.json").exists() and out == ""


def test_sheared_and_singular_agree_with_the_slicer_node_path(tmp_path):
    """The file reader and ``Volume.from_ijk_to_ras`` (what the Slicer Logic uses) refuse alike."""
    sheared = np.diag([-1.0, -1.0, 1.0, 1.0])
    sheared[0, 1] = -0.4
    with pytest.raises(InputError, match="direction is sheared"):
        Volume.from_ijk_to_ras(np.zeros((4, 4, 4), np.float32), sheared)
    with pytest.raises(InputError, match="direction is sheared"):
        read_volume(GEOMETRY_CASES["nrrd sheared"][0](tmp_path))
    singular = np.eye(4)
    singular[:3, 1] = singular[:3, 0]
    with pytest.raises(InputError, match="determinant is 0"):
        Volume.from_ijk_to_ras(np.zeros((4, 4, 4), np.float32), singular)


def test_spacing_flag_states_what_the_file_lacks(tmp_path):
    path = write_nrrd(tmp_path / "a.nrrd", "")
    with reading_overrides(spacing=(0.625, 0.625, 2.0)):
        with pytest.warns(InputWarning, match="given by --spacing"):
            vol = read_volume(path)
    assert vol.spacing.tolist() == [0.625, 0.625, 2.0]
    assert any("--spacing" in a for a in vol.assumptions)
    with pytest.raises(InputError, match="--spacing must be three finite numbers > 0"):
        with reading_overrides(spacing=(1.0, float("nan"), 1.0)):
            pass


def test_h5_guesses_are_stated_and_can_be_named(tmp_path):
    la = tmp_path / "la.h5"
    with h5py.File(la, "w") as f:
        f["image"] = image_array((40, 36, 24))
    with pytest.warns(InputWarning, match="stores no voxel spacing; read at the LA2018"):
        vol = read_volume(la)
    assert vol.spacing.tolist() == [0.625] * 3 and len(vol.assumptions) == 1
    odd = tmp_path / "odd.h5"  # the short axis is in the middle: neither layout fits it
    with h5py.File(odd, "w") as f:
        f["image"] = image_array((40, 8, 36))
    with pytest.warns(InputWarning, match="layout guessed as xyz"):
        read_volume(odd)
    with reading_overrides(h5_layout="slices_first", spacing=(1.5, 1.5, 8.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", InputWarning)
            try:
                image, _ = read_h5_case(odd)
            except InputWarning as w:  # only the stated spacing is reported
                assert "given by --spacing" in str(w)
    stored = tmp_path / "stored.h5"  # a spacing attribute is used, not guessed
    with h5py.File(stored, "w") as f:
        f["image"] = image_array((40, 36, 24))
        f.attrs["spacing"] = [1.25, 1.25, 2.5]
    vol, _ = read_h5_case(stored)
    assert vol.spacing.tolist() == [1.25, 1.25, 2.5] and vol.assumptions == []
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["image"] = image_array((40, 36, 24))
        f.attrs["spacing"] = [1.0, float("nan"), 1.0]
    with pytest.raises(InputError, match="bad.h5: voxel spacing is not a finite number"):
        read_h5_case(bad)


def test_segment_states_its_assumptions_in_report_and_stderr(tmp_path, capsys, model, phantom_folder):
    rc, out, err = run_cli(
        capsys,
        "segment",
        phantom_folder / "case0.h5",
        "--out",
        tmp_path / "o",
        "--model",
        model,
        "--mc-samples",
        "1",
        "--no-tta",
        "--quiet",
    )
    assert rc == 0, err
    assert "warning: case0.h5: the file stores no voxel spacing" in err and "error" not in err
    report = strict_json((tmp_path / "o" / "report.json").read_text())
    assert report["assumptions"] and "0.625" in report["assumptions"][0]
    strict_json(out)


# ----------------------------------------------------------------------------- rule 2: parameters
SEGMENT_PARAMS = {
    "overlap -1": (["--overlap", "-1"], "--overlap must be in [0, 1)"),
    "overlap 1": (["--overlap", "1"], "--overlap must be in [0, 1)"),
    "overlap nan": (["--overlap", "nan"], "--overlap must be in [0, 1)"),
    "mc 0": (["--mc-samples", "0"], "--mc-samples must be in [1, 1000]"),
    "mc huge": (["--mc-samples", "100000"], "--mc-samples must be in [1, 1000]"),
    "threads 0": (["--threads", "0"], "--threads must be in [1, 4096]"),
    "spacing 0": (["--spacing", "0", "1", "1"], "--spacing must be three numbers > 0"),
    "device gpu": (["--device", "gpu"], "--device must be auto, cpu or cuda"),
    "missing es": (["--es", "nope.nrrd"], "--es file not found: nope.nrrd"),
    "missing model": (["--model", "nope.pt"], "--model nope.pt"),
    "bad option value": (["--mc-samples", "two"], "invalid int value"),
}


@pytest.mark.parametrize("case", sorted(SEGMENT_PARAMS))
def test_segment_parameters_checked_before_work(case, tmp_path, capsys, good, model, monkeypatch):
    import SemiSupCardiacSegLib.io as io_mod

    monkeypatch.setattr(io_mod, "read_volume", lambda *a, **k: pytest.fail("read before the parameters were checked"))
    extra, cause = SEGMENT_PARAMS[case]
    args = ["segment", good, "--out", tmp_path / "o", "--quiet"] + (
        ["--model", model] if "--model" not in extra else []
    )
    rc, _, err = run_cli(capsys, *args, *extra)
    one_error(rc, err, cause)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, cause",
    [
        (["pseudo-label", "--keep-fraction", "0"], "--keep-fraction must be in (0, 1]"),
        (["pseudo-label", "--keep-fraction", "1.5"], "--keep-fraction must be in (0, 1]"),
        (["pseudo-label", "--mc-samples", "-3"], "--mc-samples must be in [1, 1000]"),
        (["evaluate", "--overlap", "2"], "--overlap must be in [0, 1)"),
    ],
)
def test_other_commands_check_parameters(argv, cause, tmp_path, capsys, model, phantom_folder):
    out = tmp_path / ("m.json" if argv[0] == "evaluate" else "pl")
    rc, _, err = run_cli(capsys, *argv, "--model", model, "--data", phantom_folder, "--out", out, "--quiet")
    one_error(rc, err, cause)
    assert not out.exists()


def test_indices_checks_spacing_and_inputs(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "indices", "--ed", tmp_path / "x.nrrd", "--es", tmp_path / "y.nrrd")
    one_error(rc, err, "--ed file not found", "x.nrrd")
    lab = write_itk(tmp_path / "l.nrrd", np.zeros((8, 8, 4), np.uint8))
    rc, _, err = run_cli(capsys, "indices", "--ed", lab, "--es", lab, "--spacing", "1", "-1", "1")
    one_error(rc, err, "--spacing must be three numbers > 0")


def test_roi_of_one_voxel_is_refused_by_name(tmp_path, capsys, good, model):
    mask = np.zeros((40, 36, 24), np.uint8)
    mask[20, 20, 10] = 1
    roi = write_itk(tmp_path / "roi.nrrd", mask, (2.5, 2.5, 2.5))
    rc, _, err = run_cli(
        capsys, "segment", good, "--out", tmp_path / "o", "--model", model, "--roi-mask", roi, "--quiet"
    )
    one_error(rc, err, "roi.nrrd", "too small")


def _config(tmp_path: Path, data: Path, **changes) -> Path:
    cfg = {**json.loads(json.dumps(TINY)), "data": str(data), **changes}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


TRAIN_CASES = {
    "iterations 0": ({}, ["--iterations", "0"], "--iterations must be >= 1"),
    "labeled 0": ({}, ["--labeled", "0"], "--labeled must be >= 1"),
    "stop-after 0": ({}, ["--stop-after", "0"], "--stop-after must be >= 1"),
    "config iterations 0": ({"iterations": 0}, [], "'iterations' must be an integer in [1, "),
    "unknown method": ({"method": "sassnett"}, [], "unknown method 'sassnett'"),
    "unknown key": ({"lerning_rate": 0.1}, [], "unknown config key(s) 'lerning_rate'"),
    "unknown method param": ({"method_params": {"disc_filterz": 4}}, [], "unknown method_params key(s) disc_filterz"),
    "patch not divisible": ({"patch_size": [30, 32, 16]}, [], "not divisible by [16, 16, 16]"),
    "inference patch not divisible": ({"inference_patch_size": [32, 32, 8]}, [], "'inference_patch_size'"),
    "all labeled in a semi batch": ({"batch_size": 2, "labeled_per_batch": 2}, [], "must be smaller than 'batch_size'"),
    "labeled_per_batch > batch": (
        {"batch_size": 2, "labeled_per_batch": 3},
        [],
        "'labeled_per_batch' must be an integer in [1, 2]",
    ),
    "lr 0": ({"optim": {"model": {"type": "sgd", "lr": 0}}}, [], "'optim.model.lr' must be a finite number"),
    "unknown optimizer": ({"optim": {"model": {"type": "adamw", "lr": 0.1}}}, [], "'optim.model.type' must be one of"),
    "NaN value": ({"seed": float("nan")}, [], "'seed' is not a finite number"),
    "overlap 1": ({"validation": {"last": 1, "every": 15, "overlap": 1.0}}, [], "'validation.overlap'"),
    "label outside classes": ({"labels": {"1": "la", "2": "lv"}}, [], "label value in 1..1"),
    "zero model spacing": ({"preprocessing": {"spacing": [0, 2.5, 2.5]}}, [], "'preprocessing.spacing'"),
    "swa every 0": ({"swa": {"start": 0, "every": 0}}, [], "'swa.every'"),
    "intensity augmentation not a bool": ({"intensity_augmentation": "yes"}, [], "'intensity_augmentation' must be"),
    "fold probability above 1": ({"intensity_fold": 1.5}, [], "'intensity_fold'"),
    "negative background field probability": ({"background_field": -0.1}, [], "'background_field'"),
    "unknown precision": ({"precision": "float16"}, [], "'precision' must be auto, float32 or bfloat16"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_training_config_checked_before_any_data(case, tmp_path, capsys, phantom_folder):
    data = tmp_path / "data"  # a truncated case among them: the config error must come first
    shutil.copytree(phantom_folder, data)
    raw = (data / "case0.h5").read_bytes()
    (data / "case0.h5").write_bytes(raw[: len(raw) // 3])
    changes, extra, cause = TRAIN_CASES[case]
    cfg = _config(tmp_path, data, **changes)
    rc, _, err = run_train(capsys, "--config", cfg, "--out", tmp_path / "run", "--no-progress", *extra)
    line = one_error(rc, err, cause)
    if not extra:
        assert str(cfg) in line  # the config file is named
    assert not (tmp_path / "run" / "model.pt").exists()


def test_semi_supervised_without_unlabeled_cases(tmp_path, capsys, phantom_folder):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("case0.h5", "case1.h5", "case9.h5"):  # all labeled
        shutil.copy(phantom_folder / name, data / name)
    rc, _, err = run_train(
        capsys, "--config", _config(tmp_path, data, labeled=2), "--out", tmp_path / "run", "--no-progress"
    )
    one_error(rc, err, "method sassnet learns from unlabeled images, but none is left")


def test_checkpoint_metadata_checked(tmp_path, capsys, good, model):
    ck = torch.load(model, weights_only=True)
    for key, value in (
        ("preprocessing", None),
        ("labels", None),
        ("patch_size", [30, 32, 16]),
        ("arch", "vnet3"),
        ("labels", {"7": "x"}),
    ):
        bad = {**ck}
        if value is None:
            bad.pop(key)
        else:
            bad[key] = value
        path = tmp_path / f"bad_{key}.pt"
        torch.save(bad, path)
        rc, _, err = run_cli(capsys, "segment", good, "--out", tmp_path / "o", "--model", path, "--quiet")
        one_error(rc, err, path.name, key)
        assert not (tmp_path / "o" / "report.json").exists()


# ----------------------------------------------------------------------------- rule 3: one line
def test_truncated_h5_named_by_pseudo_label_and_evaluate(tmp_path, capsys, phantom_folder, model):
    data = tmp_path / "data"
    shutil.copytree(phantom_folder, data)
    raw = (data / "case1.h5").read_bytes()
    (data / "case1.h5").write_bytes(raw[: len(raw) // 2])
    rc, _, err = run_cli(capsys, "pseudo-label", "--model", model, "--data", data, "--out", tmp_path / "pl", "--quiet")
    one_error(rc, err, "case1.h5", "cannot read h5 file")
    rc, _, err = run_cli(capsys, "evaluate", "--model", model, "--data", data, "--out", tmp_path / "m.json", "--quiet")
    one_error(rc, err, "case1.h5", "cannot read h5 file")


def _eval_folder(tmp_path: Path, label: np.ndarray, name="ev") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    write_itk(folder / "c.nrrd", image_array(), (2.5, 2.5, 2.5))
    write_itk(folder / "c_label.nrrd", label, (2.5, 2.5, 2.5))
    return folder


def test_evaluate_checks_labels_before_inference(tmp_path, capsys, model, monkeypatch):
    import SemiSupCardiacSegLib.evaluation as ev

    monkeypatch.setattr(
        ev.Predictor, "predict", lambda *a, **k: pytest.fail("inference ran before the labels were checked")
    )
    shape = _eval_folder(tmp_path, np.zeros((40, 36, 20), np.uint8), "shape")
    rc, _, err = run_cli(capsys, "evaluate", "--model", model, "--data", shape, "--out", tmp_path / "m.json", "--quiet")
    one_error(rc, err, "c_label.nrrd", "label shape (40, 36, 20) differs")
    lab = np.zeros((40, 36, 24), np.uint8)
    lab[10:30, 10:26, 6:18] = 255
    mask255 = _eval_folder(tmp_path, lab, "mask255")
    rc, _, err = run_cli(
        capsys, "evaluate", "--model", model, "--data", mask255, "--out", tmp_path / "m.json", "--quiet"
    )
    evaluate_line = one_error(rc, err, "c_label.nrrd", "0/255 mask")
    assert not (tmp_path / "m.json").exists()
    # training refuses the same file with the same words (one label convention)
    from SemiSupCardiacSegLib.data import find_cases, load_case
    from SemiSupCardiacSegLib.preprocessing import Preprocessing

    (case,) = find_cases(mask255)
    with pytest.raises(InputError) as exc:
        load_case(case, Preprocessing(spacing=(2.5, 2.5, 2.5)), 2)
    training_line = str(exc.value)
    assert "label values 0, 255 but the labels must be 0..1" in training_line and "0/255 mask" in training_line
    assert evaluate_line.replace(" (1 left atrium)", "") == "error: " + training_line


def test_disk_full_and_read_only_are_said(tmp_path, capsys, good, model, monkeypatch):
    import SemiSupCardiacSegLib.atomic as atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    rc, _, err = run_cli(
        capsys, "segment", good, "--out", tmp_path / "o", "--model", model, "--mc-samples", "1", "--no-tta", "--quiet"
    )
    one_error(rc, err, "no space left on device", str(tmp_path / "o"))
    monkeypatch.undo()

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", k.get("dir"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    rc, _, err = run_cli(
        capsys, "segment", good, "--out", tmp_path / "o2", "--model", model, "--mc-samples", "1", "--no-tta", "--quiet"
    )
    one_error(rc, err, "read-only file system", str(tmp_path / "o2"))


def test_disk_full_during_training_is_one_line(tmp_path, capsys, phantom_folder, monkeypatch):
    import SemiSupCardiacSegLib.atomic as atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    cfg = _config(tmp_path, phantom_folder, iterations=2, validation={"last": 1, "every": 0})
    rc, _, err = run_train(capsys, "--config", cfg, "--out", tmp_path / "run", "--no-progress")
    one_error(rc, err, "no space left on device", str(tmp_path / "run"))


def test_errno_messages():
    assert describe_os_error(OSError(errno.ENOSPC, "x", "/a/b")).startswith("/a/b: no space left on device")
    assert (
        describe_os_error(OSError(errno.EROFS, "x", "/a")) == "/a: read-only file system (choose another output folder)"
    )
    assert "permission denied" in describe_os_error(PermissionError(errno.EACCES, "x", "/a"))


def _root_can_mount() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _root_can_mount(), reason="needs root to mount a small tmpfs")
def test_really_full_tmpfs_in_segment(tmp_path, capsys, good, model):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        rc, _, err = run_cli(
            capsys, "segment", good, "--out", mnt / "o", "--model", model, "--mc-samples", "1", "--no-tta", "--quiet"
        )
        one_error(rc, err, "no space left on device", str(mnt / "o"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_unexpected_exception_is_one_line_and_debug_shows_it(tmp_path, capsys, good, model, monkeypatch):
    import SemiSupCardiacSegLib.checkpoint as ckpt

    def boom(*a, **k):
        raise ZeroDivisionError("division by zero somewhere")

    monkeypatch.setattr(ckpt, "load_model", boom)
    argv = ["segment", good, "--out", tmp_path / "o", "--model", model, "--quiet"]
    rc, _, err = run_cli(capsys, *argv)
    one_error(rc, err, "ZeroDivisionError: division by zero somewhere")
    rc, _, err = run_cli(capsys, *argv, "--debug")
    assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ZeroDivisionError")


# ----------------------------------------------------------------------------- rule 5: JSON, physiology
def test_jsonout_convention():
    from SemiSupCardiacSegLib.jsonout import dumps

    doc = {
        "a": {"hd95": float("nan"), "x": np.float32(2.5)},
        "b": [1.0, float("inf")],
        "c": {"ef": None, "null_reasons": {"/ef": "ED and ES are the same frame"}},
    }
    out = strict_json(dumps(doc))
    assert out["a"] == {"hd95": None, "x": 2.5} and out["b"] == [1.0, None] and out["c"] == {"ef": None}
    assert out["null_reasons"] == {
        "/a/hd95": "undefined: the prediction or the reference is empty",
        "/b/1": "not a finite number (infinite)",
        "/c/ef": "ED and ES are the same frame",
    }


def _cine_labels(lv=True, rv=True, myo=True, shrink=0) -> np.ndarray:
    lab = np.zeros((30, 30, 6), np.uint8)
    if rv:
        lab[4 : 12 - shrink, 8:22, 1:5] = 1
    if myo:
        lab[12:26, 8:22, 1:5] = 2
    if lv:
        lab[15 : 23 - shrink, 11:19, 1:5] = 3
    return lab


@pytest.mark.parametrize(
    "ed, es, warning, null_key",
    [
        (_cine_labels(), _cine_labels(), "identical", "lv_ef_percent"),
        (
            _cine_labels(),
            _cine_labels(rv=False),
            "right ventricle (label 1) is missing from the end-systolic",
            "rv_ef_percent",
        ),
        (_cine_labels(rv=False), _cine_labels(rv=False, shrink=2), "missing from both frames", "rv_ef_percent"),
        (_cine_labels(shrink=3), _cine_labels(), "ESV", None),
    ],
)
def test_indices_flags_implausible_physiology(ed, es, warning, null_key, tmp_path, capsys):
    edp, esp = write_itk(tmp_path / "ed.nrrd", ed, (1.5, 1.5, 8)), write_itk(tmp_path / "es.nrrd", es, (1.5, 1.5, 8))
    rc, out, err = run_cli(capsys, "indices", "--ed", edp, "--es", esp, "--out", tmp_path / "i.json")
    assert rc == 0, err
    assert any(ln.startswith("warning:") and warning in ln for ln in err.splitlines()), err
    result = strict_json((tmp_path / "i.json").read_text())
    assert any(warning in w for w in result["warnings"])
    if null_key:
        assert result[null_key] is None and f"/{null_key}" in result["null_reasons"]
    else:
        assert result["lv_ef_percent"] < 0  # kept, but flagged
    strict_json(out)


def test_indices_info_cfg_same_frame(tmp_path, capsys):
    pat = tmp_path / "patient001"
    pat.mkdir()
    (pat / "Info.cfg").write_text("ED: 1\nES: 1\nGroup: NOR\n")
    write_itk(pat / "patient001_frame01.nii.gz", image_array((30, 30, 6)), (1.5, 1.5, 8))
    write_itk(pat / "patient001_frame01_gt.nii.gz", _cine_labels(), (1.5, 1.5, 8))
    rc, out, err = run_cli(capsys, "indices", "--patient", pat, "--reference", "--out", tmp_path / "i.json")
    assert rc == 0, err
    assert "names frame 1 for both ED and ES" in err
    result = strict_json((tmp_path / "i.json").read_text())
    assert result["lv_ef_percent"] is None and result["warnings"][0].endswith("not measurable")


def test_indices_refuses_labels_outside_acdc(tmp_path, capsys):
    lab = _cine_labels() * 50
    p = write_itk(tmp_path / "ed.nrrd", lab, (1.5, 1.5, 8))
    rc, _, err = run_cli(capsys, "indices", "--ed", p, "--es", p)
    one_error(rc, err, "ed.nrrd", "labels must be 0..3")


def test_evaluate_json_has_null_not_nan(tmp_path, capsys, model):
    folder = _eval_folder(tmp_path, np.zeros((40, 36, 24), np.uint8))  # empty reference: distances undefined
    rc, out, err = run_cli(
        capsys, "evaluate", "--model", model, "--data", folder, "--out", tmp_path / "m.json", "--quiet"
    )
    assert rc == 0, err
    result = strict_json((tmp_path / "m.json").read_text())
    strict_json(out)
    la = result["per_case"]["c"]["left atrium"]
    if la["hd95"] is None:
        assert result["null_reasons"]["/per_case/c/left atrium/hd95"].startswith("undefined")


# ----------------------------------------------------------------------------- rule 6: training state
def test_resume_with_another_config_lists_the_keys(tmp_path, capsys, trained, phantom_folder):
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns(".lock"))
    saved = json.loads((run / "config.json").read_text())
    changed = json.loads(json.dumps(saved))
    changed["optim"]["model"]["lr"] = 0.5
    changed["network"]["n_filters"] = 8
    cfg = tmp_path / "changed.json"
    cfg.write_text(json.dumps(changed))
    before = (run / "config.json").read_text()
    rc, _, err = run_train(capsys, "--config", cfg, "--out", run, "--resume", "--no-progress")
    line = one_error(rc, err, "last.pt", "optim.model.lr: 0.05 -> 0.5", "network.n_filters: 4 -> 8")
    assert len(line) < 600 and "state_dict" not in line
    assert (run / "config.json").read_text() == before  # not overwritten


def test_resume_may_change_iterations():
    from SemiSupCardiacSegLib.config_check import config_differences

    a = {**TINY, "iterations": 30}
    assert config_differences(a, {**TINY, "iterations": 60, "num_workers": 1, "log_every": 5}) == []
    assert config_differences(a, {**TINY, "seed": 3}) == ["seed: 0 -> 3"]


def test_init_with_another_architecture_names_fields(tmp_path, capsys, trained, phantom_folder):
    cfg = _config(tmp_path, phantom_folder, network={**TINY["network"], "n_filters": 8})
    rc, _, err = run_train(
        capsys, "--config", cfg, "--out", tmp_path / "ft", "--init", trained / "model.pt", "--no-progress"
    )
    line = one_error(rc, err, "model.pt", "network.n_filters: 4 vs 8")
    assert len(line) < 400


# ----------------------------------------------------------------------------- readers: property test
def _valid_or_input_error(path: Path) -> None:
    for reader in (read_volume, read_label):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InputWarning)
                vol = reader(path)
        except InputError:
            continue
        assert isinstance(vol, Volume) and vol.array.ndim == 3 and min(vol.shape) >= 1
        assert np.all(np.isfinite(vol.spacing)) and np.all(vol.spacing > 0)
        assert np.all(np.isfinite(vol.origin))
        assert np.allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-3)


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -1.0, 1.0, 0.625]))
SIZES = st.lists(st.integers(0, 6), min_size=3, max_size=3)
SUFFIXES = [".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".h5"]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(
    data=st.binary(max_size=600),
    suffix=st.sampled_from(SUFFIXES),
    prefix=st.sampled_from(
        [b"", b"NRRD0004\n", b"\x5c\x01\x00\x00", b"ObjectType = Image\nNDims = 3\n", b"\x89HDF\r\n\x1a\n"]
    ),
)
def test_random_bytes_give_input_error_or_volume(tmp_path_factory, data, suffix, prefix):
    path = tmp_path_factory.mktemp("rb") / f"x{suffix}"
    raw = prefix + data
    path.write_bytes(gzip.compress(raw) if suffix == ".nii.gz" else raw)
    _valid_or_input_error(path)


@SETTINGS
@given(
    sizes=SIZES,
    spacing=st.lists(FLOATS, min_size=3, max_size=3),
    dirs=st.lists(FLOATS, min_size=9, max_size=9),
    use_dirs=st.booleans(),
    truncate=st.booleans(),
    huge=st.booleans(),
)
def test_random_nrrd_headers(tmp_path_factory, sizes, spacing, dirs, use_dirs, truncate, huge):
    path = tmp_path_factory.mktemp("nrrd") / "x.nrrd"
    if huge:
        sizes = [100000, 100000, 1000]
    n = int(np.prod(sizes)) if not huge else 10
    geom = (
        "space: left-posterior-superior\nspace directions: "
        + " ".join(f"({dirs[3 * i]},{dirs[3 * i + 1]},{dirs[3 * i + 2]})" for i in range(3))
        + "\nspace origin: (0,0,0)\n"
        if use_dirs
        else f"spacings: {spacing[0]} {spacing[1]} {spacing[2]}\n"
    )
    hdr = (
        f"NRRD0004\ntype: float\ndimension: 3\nsizes: {sizes[0]} {sizes[1]} {sizes[2]}\nendian: little\n"
        f"encoding: raw\n{geom}\n"
    )
    body = np.random.default_rng(0).normal(size=max(n - int(truncate), 0)).astype("<f4").tobytes()
    path.write_bytes(hdr.encode() + body)
    _valid_or_input_error(path)


@SETTINGS
@given(
    pixdim=st.lists(FLOATS, min_size=3, max_size=3),
    srow=st.lists(FLOATS, min_size=12, max_size=12),
    qform=st.integers(-1, 3),
    sform=st.integers(-1, 3),
    quatern=st.lists(FLOATS, min_size=3, max_size=3),
    gz=st.booleans(),
)
def test_random_nifti_headers(tmp_path_factory, pixdim, srow, qform, sform, quatern, gz):
    folder = tmp_path_factory.mktemp("nii")
    base = write_itk(folder / "base.nii", image_array((6, 5, 4)))
    raw = bytearray(base.read_bytes())
    struct.pack_into("<3f", raw, 80, *pixdim)
    struct.pack_into("<2h", raw, 252, qform, sform)
    struct.pack_into("<3f", raw, 256, *quatern)
    struct.pack_into("<12f", raw, 280, *srow)
    path = folder / ("x.nii.gz" if gz else "x.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    _valid_or_input_error(path)


@SETTINGS
@given(
    sizes=SIZES,
    spacing=st.lists(FLOATS, min_size=3, max_size=3),
    matrix=st.lists(FLOATS, min_size=9, max_size=9),
    with_spacing=st.booleans(),
    with_matrix=st.booleans(),
)
def test_random_mha_headers(tmp_path_factory, sizes, spacing, matrix, with_spacing, with_matrix):
    path = tmp_path_factory.mktemp("mha") / "x.mha"
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        f"DimSize = {sizes[0]} {sizes[1]} {sizes[2]}",
        "ElementType = MET_FLOAT",
    ]
    if with_spacing:
        lines.append(f"ElementSpacing = {spacing[0]} {spacing[1]} {spacing[2]}")
    if with_matrix:
        lines.append("TransformMatrix = " + " ".join(str(v) for v in matrix))
    lines.append("ElementDataFile = LOCAL")
    body = np.ones(int(np.prod(sizes)), "<f4").tobytes()
    path.write_bytes(("\n".join(lines) + "\n").encode() + body)
    _valid_or_input_error(path)


@SETTINGS
@given(
    shape=st.lists(st.integers(0, 7), min_size=1, max_size=4),
    dtype=st.sampled_from(["f4", "f8", "i2", "u1", "?"]),
    label=st.sampled_from([None, "same", "other", "float", "negative"]),
    spacing=st.one_of(st.none(), st.lists(FLOATS, min_size=1, max_size=4)),
)
def test_random_h5_cases(tmp_path_factory, shape, dtype, label, spacing):
    path = tmp_path_factory.mktemp("h5") / "x.h5"
    rng = np.random.default_rng(1)
    img = rng.normal(size=shape).astype(dtype) if dtype != "?" else rng.random(shape) > 0.5
    with h5py.File(path, "w") as f:
        f["image"] = img
        if label == "same":
            f["label"] = (rng.random(shape) > 0.5).astype(np.uint8)
        elif label == "other":
            f["label"] = np.zeros([s + 1 for s in shape], np.uint8)
        elif label == "float":
            f["label"] = rng.normal(size=shape)
        elif label == "negative":
            f["label"] = -np.ones(shape, np.int16)
        if spacing is not None:
            f.attrs["spacing"] = spacing
    _valid_or_input_error(path)
    try:
        image, lab = read_h5_case(path)
    except InputError:
        return
    assert image.array.ndim == 3 and (lab is None or lab.shape == image.shape)
