"""Fine-tune launcher: the config and command line it builds, a short real fine-tune in a separate
process that yields a checkpoint the module can load, and cancellation."""

from __future__ import annotations

import json
import sys
import time

import pytest
import torch

from SemiSupCardiacSegLib.checkpoint import load_checkpoint, load_model, save_checkpoint
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.jobs import TRAIN_SCRIPT, fine_tune_command, fine_tune_config, start_fine_tune


def test_config_and_command_line(trained, phantom_folder, tmp_path):
    _, meta = load_model(trained / "model.pt")
    cfg = fine_tune_config(meta, phantom_folder, iterations=50)
    assert cfg["method"] == meta.method == "sassnet" and cfg["network"] == meta.network
    assert (
        cfg["preprocessing"] == meta.preprocessing.to_dict()
        and cfg["labeled"] is None
        and cfg["data"] == str(phantom_folder)
    )
    cmd = fine_tune_command("c.json", "out", "m.pt", slicer="/opt/Slicer/Slicer")
    assert cmd[:4] == ["/opt/Slicer/Slicer", "--no-main-window", "--python-script", str(TRAIN_SCRIPT)]
    assert cmd[4:] == ["--config", "c.json", "--out", "out", "--init", "m.pt", "--no-progress"]
    assert fine_tune_command("c.json", "out", "m.pt")[0] == sys.executable
    with pytest.raises(InputError, match="not found"):
        fine_tune_config(meta, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        fine_tune_config(meta, tmp_path / "empty")


def test_self_trained_model_fine_tunes_with_its_teachers_method(trained, phantom_folder, tmp_path):
    """A student (method supervised) exported with --fine-tune-from its teacher: a library with unlabeled
    cases is trained with the teacher's semi-supervised method and parameters; labeled-only stays supervised."""
    import shutil

    from conftest import REPO

    sys.path.insert(0, str(REPO / "Training"))
    import export_model

    _, teacher = load_model(trained / "model.pt")
    student = tmp_path / "student.pt"
    payload = {**load_checkpoint(trained / "model.pt"), "method": "supervised", "method_params": {"sdm_weight": 0.3}}
    save_checkpoint(tmp_path / "plain_student.pt", payload)
    assert (
        export_model.main(
            [
                "--model",
                str(tmp_path / "plain_student.pt"),
                "--out",
                str(student),
                "--fine-tune-from",
                str(trained / "model.pt"),
            ]
        )
        == 0
    )
    _, meta = load_model(student)
    assert meta.fine_tune["from_model_id"] == teacher.model_id
    cfg = fine_tune_config(meta, phantom_folder, iterations=5)  # the folder has unlabeled cases
    assert cfg["method"] == "sassnet" and cfg["method_params"] == teacher.method_params
    labeled_only = tmp_path / "lib"
    labeled_only.mkdir()
    for name in ("case0.h5", "case1.h5", "case9.h5"):
        shutil.copy(phantom_folder / name, labeled_only / name)
    assert fine_tune_config(meta, labeled_only, iterations=5)["method"] == "supervised"
    _, plain = load_model(tmp_path / "plain_student.pt")
    assert fine_tune_config(plain, phantom_folder, iterations=5)["method"] == "supervised"  # no teacher named


def test_short_real_fine_tune_gives_loadable_checkpoint(trained, phantom_folder, tmp_path):
    model, meta = load_model(trained / "model.pt")
    job = start_fine_tune(meta, trained / "model.pt", phantom_folder, tmp_path / "ft", iterations=3, threads=1)
    assert job.wait(600) == 0, (tmp_path / "ft" / "fine_tune_stdout.txt").read_text()[-2000:]
    assert job.progress() == 1.0
    new, new_meta = load_model(tmp_path / "ft" / "model.pt")
    assert new_meta.iteration == 3 and new_meta.network == meta.network
    assert json.loads((tmp_path / "ft" / "fine_tune_config.json").read_text())["iterations"] == 3
    with pytest.raises(InputError, match="already holds a training run"):
        start_fine_tune(meta, trained / "model.pt", phantom_folder, tmp_path / "ft", iterations=3)


def test_cancel_stops_the_process_and_keeps_its_state(trained, phantom_folder, tmp_path):
    _, meta = load_model(trained / "model.pt")
    job = start_fine_tune(meta, trained / "model.pt", phantom_folder, tmp_path / "ft", iterations=100000, threads=1)
    deadline = time.time() + 300
    while job.progress() == 0.0 and time.time() < deadline and job.poll() is None:
        time.sleep(0.5)
    assert job.poll() is None, (tmp_path / "ft" / "fine_tune_stdout.txt").read_text()[-2000:]
    job.cancel()
    assert job.poll() is not None
    assert (tmp_path / "ft" / "last.pt").exists()  # SIGTERM: saved, resumable
    assert 0.0 < job.progress() < 1.0


def test_fine_tune_model_is_the_weight_average_of_its_start_and_last_weights(trained, phantom_folder, tmp_path):
    """average_with_init = lam: model.pt holds (1 - lam) * init + lam * the last weights (floats; batch
    counts the run's own), names lam and the start's model id; the run itself (last.pt) is untouched."""
    from conftest import TINY

    from SemiSupCardiacSegLib.training import Trainer

    start_net, start_meta = load_model(trained / "model.pt")
    cfg = {
        **TINY,
        "data": str(phantom_folder),
        "iterations": 4,
        "checkpoint_every": 4,
        "validation": {"last": 0},
        "init": str(trained / "model.pt"),
        "average_with_init": 0.25,
    }
    Trainer(cfg, tmp_path / "ft", device="cpu", progress=False).run()
    averaged, meta = load_model(tmp_path / "ft" / "model.pt")
    assert meta.averaged_with_init == {"lam": 0.25, "init_model_id": start_meta.model_id}
    state = load_checkpoint(tmp_path / "ft" / "last.pt")["method_state"]
    last = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    start = start_net.state_dict()
    moved = 0.0
    for k, v in averaged.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * start[k] + 0.25 * last[k], rtol=1e-5, atol=1e-6)
            moved = max(moved, float((last[k] - start[k]).abs().max()))
        else:
            assert torch.equal(v, last[k])
    assert moved > 1e-4  # the fine-tune did move the weights: the average is not the start itself


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"average_with_init": 0.5}, "needs 'init'"),
        ({"average_with_init": 0.0, "init": "m.pt"}, r"in \(0, 1\]"),
        ({"average_with_init": 1.5, "init": "m.pt"}, r"in \(0, 1\]"),
        ({"average_with_init": 0.5, "init": "m.pt", "swa": {"start": 1, "every": 1}}, "cannot be combined"),
    ],
)
def test_average_with_init_is_refused_where_it_cannot_mean_anything(extra, message):
    from conftest import TINY

    from SemiSupCardiacSegLib.config_check import validate_config
    from SemiSupCardiacSegLib.training.config import DEFAULTS, merge_config

    with pytest.raises(InputError, match=message):
        validate_config(merge_config(DEFAULTS, {**TINY, **extra}))
