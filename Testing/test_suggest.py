"""`suggest`: unlabeled cases ranked by the model's per-case uncertainty score; labeled cases never
suggested; segmentations reused for the same model, settings and input, and redone when the model
changes; a training library's manifest remembers the scores per model id."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from SemiSupCardiacSegLib.checkpoint import load_checkpoint, model_id, save_checkpoint
from SemiSupCardiacSegLib.cli import main as cli_main
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.io import write_volume
from SemiSupCardiacSegLib.phantoms import make_la_phantom
from SemiSupCardiacSegLib.suggest import DEFAULT_SCORE, case_score, rank_order, thumbnail
from SemiSupCardiacSegLib.training_library import append_to_manifest, read_manifest
from SemiSupCardiacSegLib.volume import Volume

SPACING = (2.0, 2.0, 2.5)


def _library(folder: Path, n_unlabeled: int, n_labeled: int) -> Path:
    """A training library as the module writes it: NAME.nrrd (+ NAME_label.nrrd) and manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_unlabeled + n_labeled):
        ph = make_la_phantom(shape=(48, 44, 24), spacing=SPACING, seed=40 + i)
        name = f"case{i}"
        labeled = i >= n_unlabeled
        if labeled:
            write_volume(Volume(ph.label.astype(np.uint8), SPACING), folder / f"{name}_label.nrrd")
        write_volume(Volume(ph.image, SPACING), folder / f"{name}.nrrd")
        append_to_manifest(
            folder,
            {
                "name": name,
                "image": f"{name}.nrrd",
                "label": f"{name}_label.nrrd" if labeled else None,
                "labeled": labeled,
            },
        )
    return folder


def _argv(data, out, model):
    return ["suggest", "--model", str(model), "--data", str(data), "--out", str(out), "--mc-samples", "2", "--quiet"]


def _perturbed(model: Path, out: Path) -> Path:
    """Another model: the same checkpoint with one weight changed (so another model id)."""
    ckpt = load_checkpoint(model)
    sd = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[key] += 0.05 * torch.randn_like(sd[key])
    save_checkpoint(out, {**ckpt, "state_dict": sd, "model_id": model_id(sd)})
    return out


def test_rank_order_follows_the_score_and_diversity_breaks_up_near_copies():
    order, sims = rank_order([0.1, 0.5, 0.3, 0.45])
    assert order == [1, 3, 2, 0] and sims == [None] * 4
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(16, 16, 8)), rng.normal(size=(16, 16, 8))
    thumbs = [a, a + 0.01 * rng.normal(size=a.shape), b]  # 0 and 1 near-copies, 2 unlike them
    assert rank_order([0.9, 0.8, 0.7], thumbs, 0.0)[0] == [0, 1, 2]
    order, sims = rank_order([0.9, 0.8, 0.7], thumbs, 0.5)
    assert order == [0, 2, 1] and sims[0] is None and sims[2] > 0.99 and sims[1] < 0.2
    with pytest.raises(InputError, match="diversity"):
        rank_order([0.1], None, 1.5)


def test_case_score_is_the_least_reliable_structure_and_a_missing_one_comes_first():
    report = {"structures": {"a": {"s": 0.1}, "b": {"s": 0.4}}}
    assert case_score(report, "s") == 0.4
    assert case_score({"structures": {"a": {"s": 0.1}, "b": {"s": None}}}, "s") == float("inf")


def test_thumbnail_has_the_fixed_shape_whatever_the_grid():
    for shape in [(48, 44, 24), (7, 9, 3), (200, 180, 88)]:
        t = thumbnail(np.random.default_rng(1).normal(size=shape))
        assert t.shape == (16, 16, 8) and np.isfinite(t).all()


def test_suggest_ranks_the_unlabeled_cases_reuses_outputs_and_redoes_them_for_another_model(trained, tmp_path, capsys):
    library = _library(tmp_path / "library", n_unlabeled=3, n_labeled=2)
    out = tmp_path / "suggest"
    model = trained / "model.pt"
    assert cli_main(_argv(library, out, model)) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = json.loads((out / "suggestions.json").read_text())
    names = [c["case"] for c in result["cases"]]
    assert sorted(names) == ["case0", "case1", "case2"]  # the labeled case3 and case4 never
    assert result["n_labeled_skipped"] == 2 and printed["ranked"] == 3 and result["failed"] == {}
    # The ranking follows the score each case's own report.json gives (the tiny model has no quality rule).
    assert result["score"] == DEFAULT_SCORE and result["score_source"].startswith("default")
    scores = {n: case_score(json.loads((out / "cases" / n / "report.json").read_text()), DEFAULT_SCORE) for n in names}
    assert names == sorted(scores, key=lambda n: -scores[n])
    assert [c["score"] for c in result["cases"]] == pytest.approx([scores[n] for n in names])
    table = list(csv.DictReader((out / "suggestions.csv").open()))
    assert [r["case"] for r in table] == names and [int(r["rank"]) for r in table] == [1, 2, 3]
    # The library's manifest remembers the scores under the model's id; labeled entries get none.
    meta_id = json.loads((out / "cases" / names[0] / "report.json").read_text())["model"]["id"]
    entries = {c["name"]: c for c in read_manifest(library)}
    assert entries[names[0]]["scores"][meta_id]["score"] == pytest.approx(scores[names[0]])
    assert "scores" not in entries["case3"] and "scores" not in entries["case4"]

    # Same model, settings and inputs: nothing is recomputed.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.nrrd")}
    assert cli_main(_argv(library, out, model)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nrrd")} == mtimes
    # An input changed on disk: that case alone is redone.
    ph = make_la_phantom(shape=(48, 44, 24), spacing=SPACING, seed=99)
    write_volume(Volume(ph.image, SPACING), library / "case1.nrrd", overwrite=True)
    assert cli_main(_argv(library, out, model)) == 0
    changed = {p for p in mtimes if p.stat().st_mtime_ns != mtimes[p]}
    assert changed and {p.parent.name for p in changed} == {"case1"}
    # Another model: every case is redone and its id recorded beside the first one's.
    other = _perturbed(model, tmp_path / "other.pt")
    assert cli_main(_argv(library, out, other)) == 0
    reports = [json.loads((out / "cases" / n / "report.json").read_text()) for n in names]
    other_id = reports[0]["model"]["id"]
    assert other_id != meta_id and all(r["model"]["id"] == other_id for r in reports)
    entries = {c["name"]: c for c in read_manifest(library)}
    assert set(entries["case0"]["scores"]) == {meta_id, other_id}


def test_suggest_refuses_a_folder_of_labeled_cases_only_and_too_few_mc_samples(trained, tmp_path, capsys):
    library = _library(tmp_path / "library", n_unlabeled=0, n_labeled=2)
    assert cli_main(_argv(library, tmp_path / "s", trained / "model.pt")) == 2
    assert "every one of its 2 cases is labeled" in capsys.readouterr().err
    library = _library(tmp_path / "library2", n_unlabeled=1, n_labeled=0)
    argv = _argv(library, tmp_path / "s2", trained / "model.pt")
    argv[argv.index("--mc-samples") + 1] = "1"
    assert cli_main(argv) == 2
    assert "needs at least 2 MC samples" in capsys.readouterr().err and not (tmp_path / "s2").exists()


def test_batch_segment_does_not_pass_off_another_models_outputs_as_done(trained, tmp_path, capsys):
    """segment FOLDER reuses a case only when its set is this model's; another's is not replaced silently."""
    library = _library(tmp_path / "library", n_unlabeled=1, n_labeled=0)
    out = tmp_path / "out"
    seg = ["segment", str(library), "--out", str(out), "--mc-samples", "2", "--device", "cpu", "--quiet"]
    assert cli_main([*seg, "--model", str(trained / "model.pt")]) == 0
    other = _perturbed(trained / "model.pt", tmp_path / "other.pt")
    capsys.readouterr()
    assert cli_main([*seg, "--model", str(other)]) == 1
    assert "another model" in capsys.readouterr().err
    assert cli_main([*seg, "--model", str(other), "--overwrite"]) == 0
    assert json.loads((out / "case0" / "report.json").read_text())["model"]["id"] == model_id(
        load_checkpoint(other)["state_dict"]
    )
