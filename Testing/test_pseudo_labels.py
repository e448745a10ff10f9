"""Self-training: pseudo-labels written from a model's segmentations (images only read, doubtful
cases dropped, inputs never overwritten) and trained on as labeled cases (config ``pseudo_labels``)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
from conftest import CINE_TINY, write_cine_frames

from SemiSupCardiacSegLib.checkpoint import load_model
from SemiSupCardiacSegLib.data import find_cases
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
from SemiSupCardiacSegLib.io import read_h5_case, read_volume, write_h5_case
from SemiSupCardiacSegLib.model_meta import QualityRule
from SemiSupCardiacSegLib.pseudo_labels import MANIFEST, pseudo_label_cases
from SemiSupCardiacSegLib.training import Trainer, split_cases


@pytest.mark.parametrize("layout,shape", [("xyz", (20, 18, 12)), ("slices_first", (30, 26, 5))])
def test_write_h5_case_is_the_inverse_of_read_h5_case(tmp_path, layout, shape):
    rng = np.random.default_rng(0)
    image = rng.random(shape).astype(np.float32)
    label = rng.integers(0, 4, shape).astype(np.uint8)
    path = write_h5_case(tmp_path / "c.h5", image, label, layout=layout)
    with h5py.File(path) as f:
        stored = f["image"].shape
    assert stored == (shape if layout == "xyz" else shape[::-1])
    img, lab = read_h5_case(path)
    assert np.array_equal(img.array, image) and np.array_equal(lab.array, label)
    with pytest.raises(FileExistsError):
        write_h5_case(path, image, None, layout=layout)  # never replaced silently
    write_h5_case(path, image, None, layout=layout, overwrite=True)
    assert read_h5_case(path)[1] is None


#: A tiny supervised cine U-Net that finds all three structures on the phantoms (the teacher).
TEACHER = {
    **CINE_TINY,
    "method": "supervised",
    "labeled": 8,
    "iterations": 100,
    "labeled_per_batch": 8,
    "network": {**CINE_TINY["network"], "n_filters": 8},
    "validation": {"last": 2, "every": 0},
    "log_every": 10,
    "checkpoint_every": 100,
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """Six phantom patients as ACDC h5 frames and a teacher trained on eight of them."""
    data = write_cine_frames(tmp_path_factory.mktemp("acdc"))
    out = tmp_path_factory.mktemp("teacher")
    Trainer({**TEACHER, "data": str(data)}, out, device="cpu", progress=False).run()
    return data, out / "model.pt"


@pytest.fixture()
def unlabeled_inputs(teacher, tmp_path):
    """Two phantom frames whose files carry a *wrong* reference label (all myocardium): a pseudo-label
    that copied it instead of segmenting would show."""
    data, ckpt = teacher
    src = tmp_path / "inputs"
    src.mkdir()
    for name in ("patient004_frame01", "patient005_frame02"):
        shutil.copy(data / f"{name}.h5", src / f"{name}.h5")
        with h5py.File(src / f"{name}.h5", "a") as f:
            f["label"][...] = 2
    return src, ckpt


def test_pseudo_labels_are_the_models_segmentation_not_the_files_label(unlabeled_inputs, tmp_path):
    src, ckpt = unlabeled_inputs
    model, meta = load_model(ckpt)
    meta = replace(meta, quality=None)  # no flag: every non-empty result is kept
    cases = find_cases(src)
    manifest = pseudo_label_cases(model, meta, cases, tmp_path / "pl", mc_samples=2, device="cpu")
    assert manifest["n_kept"] == manifest["n_cases"] == 2
    for case in cases:
        image, label = read_h5_case(tmp_path / "pl" / f"{case.name}.h5")
        original = read_volume(case.image)
        assert np.array_equal(image.array, original.array)  # the image, in the input's layout
        settings = InferenceSettings.from_meta(meta, mc_samples=2, device="cpu")
        expected = Predictor(model, meta, settings).predict(original).labels.array
        assert np.array_equal(label.array, expected)
        assert not np.all(label.array == 2)
    on_disk = json.loads((tmp_path / "pl" / MANIFEST).read_text())
    assert on_disk["teacher"]["id"] == meta.model_id and set(on_disk["cases"]) == {c.name for c in cases}
    # The folder reads back as labeled training cases.
    assert all(c.label is not None for c in find_cases(tmp_path / "pl"))


def test_doubtful_cases_are_dropped_unless_asked(unlabeled_inputs, tmp_path):
    src, ckpt = unlabeled_inputs
    model, meta = load_model(ckpt)
    strict = replace(meta, quality=QualityRule("entropy_per_volume", -1.0, min_mc_samples=2))
    manifest = pseudo_label_cases(model, strict, find_cases(src), tmp_path / "a", mc_samples=2, device="cpu")
    assert manifest["n_kept"] == 0 and not list((tmp_path / "a").glob("*.h5"))
    assert all(r["reason"].startswith(("doubtful", "missing")) for r in manifest["cases"].values())
    kept = pseudo_label_cases(
        model, strict, find_cases(src), tmp_path / "b", mc_samples=2, keep_doubtful=True, device="cpu"
    )
    missing = sum(r["reason"].startswith("missing") for r in kept["cases"].values())
    assert kept["n_kept"] == 2 - missing and len(list((tmp_path / "b").glob("*.h5"))) == kept["n_kept"]


def test_pseudo_label_refuses_to_overwrite_inputs_or_an_earlier_run(unlabeled_inputs, tmp_path, capsys):
    from SemiSupCardiacSegLib.cli import main

    src, ckpt = unlabeled_inputs
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    args = ["pseudo-label", "--model", str(ckpt), "--data", str(src), "--mc-samples", "2", "--device", "cpu", "--quiet"]
    assert main(args + ["--out", str(src), "--overwrite"]) == 2
    assert "holds input cases" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert main(args + ["--out", str(tmp_path / "pl"), "--keep-doubtful"]) == 0
    assert main(args + ["--out", str(tmp_path / "pl")]) == 2
    assert MANIFEST in capsys.readouterr().err


def test_split_cases_adds_pseudo_labels_and_removes_their_namesakes(teacher):
    data, _ = teacher
    cases = find_cases(data)  # 12 labeled frames
    config = {"labeled": 2, "validation": {"last": 2}}
    plain_lab, plain_unl, val = split_cases(cases, config)
    pseudo = find_cases(data)[4:7]
    lab, unl, val2 = split_cases(cases, config, pseudo)
    assert [c.name for c in lab] == [c.name for c in plain_lab + pseudo]
    assert {c.name for c in unl} == {c.name for c in plain_unl} - {c.name for c in pseudo}
    assert [c.name for c in val2] == [c.name for c in val]
    with pytest.raises(InputError, match="validation or labeled"):
        split_cases(cases, config, [cases[-1]])
    with pytest.raises(InputError, match="validation or labeled"):
        split_cases(cases, config, [cases[0]])


def test_training_on_pseudo_labels_records_them(unlabeled_inputs, teacher, tmp_path):
    data, _ = teacher
    src, ckpt = unlabeled_inputs
    model, meta = load_model(ckpt)
    pseudo_label_cases(model, replace(meta, quality=None), find_cases(src), tmp_path / "pl", mc_samples=2, device="cpu")
    labeled = tmp_path / "labeled"
    labeled.mkdir()
    for name in ("patient000_frame01", "patient001_frame01", "patient002_frame01"):
        shutil.copy(data / f"{name}.h5", labeled / f"{name}.h5")
    config = {
        **TEACHER,
        "iterations": 4,
        "batch_size": 4,
        "labeled_per_batch": 4,
        "labeled": 2,
        "validation": {"last": 1, "every": 0},
        "data": str(labeled),
        "pseudo_labels": str(tmp_path / "pl"),
        "init": str(ckpt),
    }
    Trainer(config, tmp_path / "run", device="cpu", progress=False).run()
    _, run_meta = load_model(tmp_path / "run" / "model.pt")
    td = run_meta.training_data
    assert td["n_labeled"] == 2 and td["n_pseudo_labeled"] == 2
    assert td["labeled_cases"] == ["patient000_frame01", "patient001_frame01"]
    assert sorted(td["pseudo_labeled_cases"]) == ["patient004_frame01", "patient005_frame02"]


def test_keep_fraction_keeps_the_most_reliable_cases(unlabeled_inputs, tmp_path):
    src, ckpt = unlabeled_inputs
    model, meta = load_model(ckpt)
    with pytest.raises(InputError, match="quality score"):
        pseudo_label_cases(model, replace(meta, quality=None), find_cases(src), tmp_path / "x", keep_fraction=0.5)
    quality = QualityRule("entropy_per_volume", -1.0, min_mc_samples=2)  # the flag would drop all
    manifest = pseudo_label_cases(
        model,
        replace(meta, quality=quality),
        find_cases(src),
        tmp_path / "half",
        mc_samples=2,
        keep_fraction=0.5,
        device="cpu",
    )
    records = manifest["cases"]
    worst = {n: max(s["entropy_per_volume"] for s in r["structures"].values()) for n, r in records.items()}
    best = min(worst, key=worst.get)
    assert manifest["n_kept"] == 1 and records[best]["kept"] and records[best]["worst_score"] == worst[best]
    assert [p.stem for p in (tmp_path / "half").glob("*.h5")] == [best]


def test_pseudo_label_folder_is_all_or_nothing(unlabeled_inputs, tmp_path, monkeypatch):
    """A disk filling up at the second case leaves the folder as it was (before: the first case's
    file and no manifest, and the rerun refused on it); with --overwrite a case the new run drops
    does not stay behind beside the new manifest."""
    import errno

    from SemiSupCardiacSegLib import pseudo_labels

    src, ckpt = unlabeled_inputs
    model, meta = load_model(ckpt)
    meta = replace(meta, quality=None)
    out = tmp_path / "pl"
    real = pseudo_labels.write_h5_case
    calls = []

    def full_disk_at_second(path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(pseudo_labels, "write_h5_case", full_disk_at_second)
    with pytest.raises(OSError, match="No space"):
        pseudo_label_cases(model, meta, find_cases(src), out, mc_samples=2, device="cpu")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()
    first = pseudo_label_cases(model, meta, find_cases(src), out, mc_samples=2, device="cpu")  # the rerun works
    assert first["n_kept"] == 2 and len(list(out.glob("*.h5"))) == 2
    (out / "notes.txt").write_text("the user's own file")
    strict = replace(meta, quality=QualityRule("entropy_per_volume", -1.0, min_mc_samples=2))
    second = pseudo_label_cases(model, strict, find_cases(src), out, mc_samples=2, device="cpu", overwrite=True)
    assert second["n_kept"] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "notes.txt"])  # no case of the first run left
