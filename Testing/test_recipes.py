"""Recipes (``recipes.run_recipe`` through ``Training/train.py --recipe``): stages run in order into
OUT/<stage>/, a rerun skips finished stages, an interrupted train stage resumes, and a bad recipe is
refused before any training, with the recipe file named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

from SemiSupCardiacSegLib.checkpoint import load_model
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.recipes import MARKER, load_recipe, run_recipe

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "Training" / "train.py"


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TRAIN), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _write(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _two_stage_recipe(folder: Path, data: Path) -> Path:
    """first (10 iterations) -> second (6 more, from first's last weights) -> export of second."""
    _write(
        folder / "first.json",
        {**TINY, "data": str(data), "iterations": 10, "validation": {"last": 1, "every": 5}, "checkpoint_every": 5},
    )
    _write(folder / "second.json", {"extends": "first.json", "iterations": 6, "seed": 1})
    return _write(
        folder / "recipe.json",
        {
            "stages": [
                {"name": "first", "kind": "train", "config": "first.json"},
                {
                    "name": "second",
                    "kind": "train",
                    "config": "second.json",
                    "init": {"stage": "first", "file": "last.pt"},
                },
                {"name": "export", "kind": "export", "model": {"stage": "second", "file": "last.pt"}},
            ]
        },
    )


def _stages(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["stages"]


def test_recipe_runs_resumes_an_interrupted_stage_and_skips_finished_ones(phantom_folder, tmp_path):
    recipe = _two_stage_recipe(tmp_path, phantom_folder)
    out = tmp_path / "runs"
    args = ["--recipe", str(recipe), "--out", str(out), "--device", "cpu", "--no-progress"]
    # Interrupted: the first stage stops after 4 iterations (last.pt saved, no marker), the recipe stops.
    assert _stages(_train(args + ["--stop-after", "4"], tmp_path)) == {"first": "stopped"}
    assert (out / "first" / "last.pt").is_file() and not (out / "first" / MARKER).exists()
    assert not (out / "second").exists()
    # Rerun: the first stage continues from iteration 4, then the others run.
    assert _stages(_train(args, tmp_path)) == {"first": "done", "second": "done", "export": "done"}
    logged = [json.loads(ln) for ln in (out / "first" / "log.jsonl").read_text().splitlines()]
    steps = [r["iteration"] for r in logged if "loss" in r]
    assert steps == list(range(1, 11)), steps  # resumed: each iteration once
    second = json.loads((out / "second" / "config.json").read_text())
    assert second["init"] == str(out / "first" / "last.pt") and second["iterations"] == 6
    _, meta = load_model(out / "export" / "model.pt")
    assert meta.iteration == 6 and meta.kind == "model"
    for stage in ("first", "second", "export"):
        assert json.loads((out / stage / MARKER).read_text())["stage"]["name"] == stage
    # Rerun of a finished recipe: every stage skipped, nothing retrained.
    mtime = (out / "second" / "last.pt").stat().st_mtime_ns
    assert _stages(_train(args, tmp_path)) == {"first": "skipped", "second": "skipped", "export": "skipped"}
    assert (out / "second" / "last.pt").stat().st_mtime_ns == mtime
    # One stage alone (its inputs complete): --stage.
    (out / "export" / MARKER).unlink()
    assert _stages(_train(args + ["--stage", "export"], tmp_path)) == {"export": "done"}
    # A quality stage measures the model's held-out cases, which for phantoms are not under ../shared.
    stages = json.loads(recipe.read_text())["stages"] + [{"name": "q", "kind": "quality", "model": {"stage": "export"}}]
    with_quality = _write(tmp_path / "with_quality.json", {"stages": stages})
    with pytest.raises(InputError, match="stage 'q' measured nothing"):
        run_recipe(with_quality, out, device="cpu", progress=False)
    assert not (out / "q" / MARKER).exists()


def _recipe_with(tmp_path: Path, stages: list[dict]) -> Path:
    _write(tmp_path / "cfg.json", {**TINY, "data": str(tmp_path)})
    return _write(tmp_path / "bad_recipe.json", {"stages": stages})


TRAIN_STAGE = {"name": "a", "kind": "train", "config": "cfg.json"}


@pytest.mark.parametrize(
    "stages, message",
    [
        ([TRAIN_STAGE, {"name": "b", "kind": "distill", "model": {"stage": "a"}}], "unknown kind 'distill'"),
        (
            [{**TRAIN_STAGE, "init": {"stage": "b"}}, {**TRAIN_STAGE, "name": "b"}],
            "init names stage 'b', which is not an earlier stage",
        ),
        ([{**TRAIN_STAGE, "init": {"stage": "nowhere"}}], "init names stage 'nowhere'"),
        ([TRAIN_STAGE, {**TRAIN_STAGE}], "the name is used by an earlier stage"),
        ([{**TRAIN_STAGE, "iterations": 5}], "unknown key(s) iterations for kind train"),
        ([{"name": "e", "kind": "export"}], "missing model"),
        ([], "non-empty list 'stages'"),
    ],
)
def test_bad_recipe_refused_before_any_stage_runs(tmp_path, stages, message):
    recipe = _recipe_with(tmp_path, stages)
    out = tmp_path / "runs"
    with pytest.raises(InputError) as err:
        run_recipe(recipe, out)
    assert message in str(err.value) and str(recipe) in str(err.value)
    assert not out.exists()


def test_train_stage_config_checked_up_front_with_both_files_named(tmp_path):
    recipe = _recipe_with(tmp_path, [TRAIN_STAGE, {**TRAIN_STAGE, "name": "b", "config": "typo.json"}])
    _write(tmp_path / "typo.json", {"extends": "cfg.json", "iteratoins": 3})
    with pytest.raises(InputError, match="iteratoins") as err:
        load_recipe(recipe)
    assert str(tmp_path / "typo.json") in str(err.value) and str(recipe) in str(err.value)
    proc = _train(["--recipe", str(recipe), "--out", str(tmp_path / "runs")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "iteratoins" in proc.stderr and not (tmp_path / "runs").exists()


def test_shipped_recipes_are_valid():
    for name in ("la.json", "cine.json"):
        stages = load_recipe(REPO / "recipes" / name)
        assert stages[0].kind == "train" and stages[-1].kind == "export"
