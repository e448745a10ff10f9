"""End to end on phantoms: a tiny training run whose loss falls, resume, then `segment` and `evaluate`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY

from SemiSupCardiacSegLib.cli import main as cli_main
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.io import read_label, read_volume, write_volume
from SemiSupCardiacSegLib.phantoms import make_la_phantom
from SemiSupCardiacSegLib.training import Trainer
from SemiSupCardiacSegLib.volume import Volume


def _losses(out: Path, key="loss_seg") -> list[float]:
    return [r[key] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if key in r]


def test_training_loss_falls_and_files_exist(trained):
    seg = _losses(trained)
    assert len(seg) == TINY["iterations"]
    assert np.mean(seg[-5:]) < 0.8 * np.mean(seg[:5])
    for name in ("last.pt", "best.pt", "model.pt", "config.json", "log.jsonl"):
        assert (trained / name).is_file()
    from SemiSupCardiacSegLib.checkpoint import load_model

    _, meta = load_model(trained / "model.pt")
    assert meta.training_data["n_labeled"] == 2 and meta.training_data["n_unlabeled"] == 2
    assert meta.training_data["validation_cases"] == ["case9"]
    assert 0.0 <= meta.validation["dice"] <= 1.0


def test_refuses_to_train_over_existing_run(trained, phantom_folder):
    from SemiSupCardiacSegLib.errors import InputError

    with pytest.raises(InputError, match="already holds a training run"):
        Trainer({**TINY, "data": str(phantom_folder)}, trained, device="cpu", progress=False).run()


def test_resume_continues_to_more_iterations(trained, phantom_folder, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained, run)
    result = Trainer({**TINY, "data": str(phantom_folder), "iterations": 34}, run, device="cpu", progress=False).run(
        resume=True
    )
    assert result["iterations"] == 34
    its = [r["iteration"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert its[-4:] == [31, 32, 33, 34]


def test_segment_end_to_end_on_input_grid(trained, tmp_path, capsys):
    # An oblique, anisotropic phantom: outputs must come back on exactly its grid.
    ph = make_la_phantom(shape=(90, 80, 40), spacing=(1.1, 1.1, 1.4), seed=11)
    from scipy.spatial.transform import Rotation

    direction = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    vol = Volume(ph.image, ph.spacing, (10.0, -20.0, 5.0), direction)
    inp = write_volume(vol, tmp_path / "in.nrrd")
    out = tmp_path / "out"
    code = cli_main(
        [
            "segment",
            str(inp),
            "--out",
            str(out),
            "--model",
            str(trained / "model.pt"),
            "--mc-samples",
            "3",
            "--device",
            "cpu",
            "--montage",
            "--quiet",
        ]
    )
    assert code == 0
    for name in (
        "segmentation.nrrd",
        "probability.nrrd",
        "distance.nrrd",
        "uncertainty.nrrd",
        "report.json",
        "montage.png",
    ):
        assert (out / name).is_file(), name
    seg = read_label(out / "segmentation.nrrd")
    assert seg.same_grid(vol) and seg.array.dtype == np.uint8
    for name in ("probability.nrrd", "distance.nrrd", "uncertainty.nrrd"):
        v = read_volume(out / name)
        assert v.same_grid(vol) and v.array.dtype == np.float32 and np.isfinite(v.array).all()
    prob = read_volume(out / "probability.nrrd").array
    assert prob.min() >= 0 and prob.max() <= 1
    unc = read_volume(out / "uncertainty.nrrd").array
    assert unc.min() >= 0 and unc.max() <= np.log(2) + 1e-5  # binary entropy bound (nats)
    sdm = read_volume(out / "distance.nrrd").array
    assert sdm.min() >= -1 and sdm.max() <= 1
    report = json.loads((out / "report.json").read_text())
    la = report["structures"]["left atrium"]
    assert la["volume_ml"] == pytest.approx(seg.array.sum() * np.prod(ph.spacing) / 1000, rel=1e-6)
    assert report["timings_s"]["mc_samples"] == 3 and report["model"]["id"]
    # A second run into the same folder refuses to overwrite.
    capsys.readouterr()
    assert cli_main(["segment", str(inp), "--out", str(out), "--model", str(trained / "model.pt"), "--quiet"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "segment",
                str(inp),
                "--out",
                str(tmp_path / "gate"),
                "--model",
                str(trained / "model.pt"),
                "--mc-gate",
                "1.5",
                "--quiet",
            ]
        )
        == 2
    )
    assert "mc-gate" in capsys.readouterr().err and not (tmp_path / "gate" / "report.json").exists()


def test_segment_h5_and_evaluate(trained, phantom_folder, tmp_path):
    out = tmp_path / "seg"
    assert (
        cli_main(
            [
                "segment",
                str(phantom_folder / "case0.h5"),
                "--out",
                str(out),
                "--model",
                str(trained / "model.pt"),
                "--mc-samples",
                "1",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    seg = read_label(out / "segmentation.nrrd")
    assert seg.shape == make_la_phantom(seed=0).label.shape
    res_file = tmp_path / "metrics.json"
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(trained / "model.pt"),
                "--data",
                str(phantom_folder),
                "--out",
                str(res_file),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    res = json.loads(res_file.read_text())
    assert res["n_cases"] == 3 and set(res["per_case"]) == {"case0", "case1", "case9"}
    for key in ("dice", "jaccard", "hd95", "asd", "ravd", "precision", "recall"):
        assert key in res["mean"]["left atrium"]


def test_cli_bad_input_one_line_and_exit_code(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    proc = subprocess.run(
        [sys.executable, "-m", "SemiSupCardiacSegLib", "segment", str(bad), "--out", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "SemiSupCardiacSegLib",
            "segment",
            str(tmp_path / "nope.nrrd"),
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_unwritable_output_is_named(trained, tmp_path):
    """An output folder that cannot be created (a file is in the way): one error line naming the
    path, exit code 2."""

    image = write_volume(
        Volume(make_la_phantom(shape=(40, 40, 20), seed=1).image, (2.5, 2.5, 2.5)), tmp_path / "in.nrrd"
    )
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "SemiSupCardiacSegLib",
            "segment",
            str(image),
            "--out",
            str(blocker / "out"),
            "--model",
            str(trained / "model.pt"),
            "--mc-samples",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error:") and "blocker" in proc.stderr


def test_read_only_output_folder_is_named(tmp_path):
    import os

    from SemiSupCardiacSegLib.atomic import atomic_write_text

    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop root, so this check cannot fail here")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            atomic_write_text(ro / "x.json", "{}")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_train_script_runs_headless(phantom_folder, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY, "iterations": 3, "validation": {"last": 0}}))
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "Training" / "train.py"),
            "--config",
            str(cfg),
            "--data",
            str(phantom_folder),
            "--method",
            "supervised",
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["iterations"] == 3
    assert (tmp_path / "run" / "model.pt").is_file()


@pytest.mark.parametrize("method", ["supervised", "dtc", "uamt", "dtml", "mtctl"])
def test_every_registered_3d_method_trains_through_the_trainer(method, phantom_folder, tmp_path):
    cfg = {
        **TINY,
        "method": method,
        "iterations": 4,
        "validation": {"last": 0},
        "method_params": {"mc_passes": 2, **({"disc_filters": 4} if method == "mtctl" else {})},
    }
    if method not in ("uamt", "mtctl"):
        cfg["method_params"] = {}
    result = Trainer({**cfg, "data": str(phantom_folder)}, tmp_path / method, device="cpu", progress=False).run()
    assert result["iterations"] == 4
    logs = [json.loads(x) for x in (tmp_path / method / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in logs if "loss" in r)
    from SemiSupCardiacSegLib.checkpoint import load_model

    _, meta = load_model(tmp_path / method / "model.pt")
    assert meta.method == method


def test_stopped_and_resumed_run_equals_uninterrupted_run(phantom_folder, tmp_path):
    """On CPU with a fixed seed, losses after a stop + --resume equal those of one straight run."""
    cfg = {**TINY, "data": str(phantom_folder), "iterations": 10, "validation": {"last": 0}, "checkpoint_every": 100}
    Trainer(cfg, tmp_path / "straight", device="cpu", progress=False).run()
    first = Trainer(cfg, tmp_path / "sliced", device="cpu", progress=False).run(stop_after=4)
    assert first["stopped_early"] and first["iterations"] == 4
    Trainer(cfg, tmp_path / "sliced", device="cpu", progress=False).run(resume=True)

    def losses(run):
        return [
            (r["iteration"], r["loss"], r["loss_adv"])
            for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
            if "loss" in r
        ]

    assert losses(tmp_path / "sliced") == losses(tmp_path / "straight")
    assert len(losses(tmp_path / "straight")) == 10


def test_quality_flag_rules():
    from dataclasses import replace

    from SemiSupCardiacSegLib.inference import InferenceSettings
    from SemiSupCardiacSegLib.model_meta import QualityRule
    from SemiSupCardiacSegLib.reporting import quality_flag

    def mc(n, scope="decoder"):
        return InferenceSettings((16, 16, 16), mc_samples=n, mc_scope=scope)

    q = QualityRule.from_dict({"score": "mean_boundary_mutual_info", "threshold": 0.23, "min_mc_samples": 10}, "m.pt")
    assert quality_flag({"mean_boundary_mutual_info": 0.30}, q, mc(10)) is True
    assert quality_flag({"mean_boundary_mutual_info": 0.10}, q, mc(16)) is False
    assert quality_flag({"mean_boundary_mutual_info": 0.30}, q, mc(1)) is None  # MI needs MC sampling
    assert quality_flag({"mean_boundary_mutual_info": None}, q, mc(10)) is None  # empty structure
    assert quality_flag({"mean_boundary_mutual_info": 0.30}, None, mc(10)) is None  # model without a threshold
    # A threshold chosen with decoder-scope MC says nothing about head-only MC values, and the reverse.
    assert quality_flag({"mean_boundary_mutual_info": 0.30}, q, mc(10, "head")) is None
    assert quality_flag({"mean_boundary_mutual_info": 0.30}, replace(q, mc_scope="head"), mc(10, "head")) is True
    assert quality_flag({"mean_boundary_mutual_info": 0.30}, replace(q, mc_scope="head"), mc(10)) is None


def test_empty_label_map_in_training_is_named(tmp_path):
    from SemiSupCardiacSegLib.data import find_cases, load_case
    from SemiSupCardiacSegLib.errors import InputError
    from SemiSupCardiacSegLib.io import write_volume
    from SemiSupCardiacSegLib.preprocessing import Preprocessing
    from SemiSupCardiacSegLib.volume import Volume

    img = Volume(np.random.default_rng(0).normal(size=(12, 12, 12)).astype(np.float32))
    write_volume(img, tmp_path / "c.nrrd")
    write_volume(img.with_array(np.zeros((12, 12, 12), np.uint8)), tmp_path / "c_label.nrrd")
    (case,) = find_cases(tmp_path)
    with pytest.raises(InputError, match="label map is empty"):
        load_case(case, Preprocessing(spacing=(1.0, 1.0, 1.0)), 2)


def test_swa_model_is_the_mean_of_its_snapshots_and_survives_resume(phantom_folder, tmp_path):
    """With ``swa``, model.pt holds the equal-weight mean of the weights after iterations start + every, ...
    (checked against snapshots taken by separate runs stopped at those iterations), with BatchNorm
    statistics recomputed; a stop + resume in the middle of averaging gives the same average."""
    from SemiSupCardiacSegLib.checkpoint import build_model_from_checkpoint, load_checkpoint

    base = {
        **TINY,
        "data": str(phantom_folder),
        "method": "supervised",
        "method_params": {},
        "iterations": 8,
        "validation": {"last": 1, "every": 100},
        "checkpoint_every": 100,
    }
    swa_cfg = {**base, "swa": {"start": 4, "every": 2, "bn_batches": 3}}
    Trainer(swa_cfg, tmp_path / "swa", device="cpu", progress=False).run()
    snapshots = []
    for n in (6, 8):  # iterations 4 + 2 and 4 + 4
        Trainer({**base, "iterations": 8}, tmp_path / f"plain{n}", device="cpu", progress=False).run(stop_after=n)
        state = torch.load(tmp_path / f"plain{n}" / "last.pt", weights_only=True)["method_state"]
        snapshots.append({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
    swa = load_checkpoint(tmp_path / "swa" / "model.pt")
    assert swa["swa"]["n_averaged"] == 2 and (tmp_path / "swa" / "swa.pt").is_file()
    params = dict(build_model_from_checkpoint(swa).named_parameters())
    assert params, "no parameters"
    for name in params:
        expected = (snapshots[0][name] + snapshots[1][name]) / 2
        assert torch.allclose(swa["state_dict"][name].float(), expected, atol=1e-6), name
    bn_mean = next(k for k in swa["state_dict"] if k.endswith("running_mean"))
    assert not torch.allclose(swa["state_dict"][bn_mean].float(), snapshots[1][bn_mean])  # recomputed, not copied
    assert np.isfinite(swa["validation"]["dice"])
    logs = [json.loads(x) for x in (tmp_path / "swa" / "log.jsonl").read_text().splitlines()]
    assert logs[-1]["swa_n_averaged"] == 2 and "swa_val_dice" in logs[-1]

    # The model card names the averaging and shows the averaged network's validation row.
    metrics = tmp_path / "metrics.json"
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "swa" / "model.pt"),
                "--data",
                str(phantom_folder),
                "--out",
                str(metrics),
                "--mc-samples",
                "2",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    sys.path.insert(0, str(REPO / "Training"))
    import model_card

    assert (
        model_card.main(
            [
                "--run",
                str(tmp_path / "swa"),
                "--model",
                str(tmp_path / "swa" / "model.pt"),
                "--eval",
                str(metrics),
                "--hardware",
                "test CPU",
                "--command",
                "test",
                "--out",
                str(tmp_path / "card.md"),
            ]
        )
        == 0
    )
    text = (tmp_path / "card.md").read_text()
    assert "mean of the weights after iterations 6, 8 (2 snapshots" in text
    assert f"| 8, weight average of 2 | {logs[-1]['swa_val_dice']:.4f} |" in text

    Trainer(swa_cfg, tmp_path / "sliced", device="cpu", progress=False).run(stop_after=7)
    Trainer(swa_cfg, tmp_path / "sliced", device="cpu", progress=False).run(resume=True)
    resumed = load_checkpoint(tmp_path / "sliced" / "model.pt")
    for name in params:
        assert torch.allclose(resumed["state_dict"][name], swa["state_dict"][name]), name

    with pytest.raises(InputError, match="swa"):
        Trainer({**swa_cfg, "swa": {"start": 0, "every": 0}}, tmp_path / "bad", device="cpu", progress=False).run()


def test_sigterm_during_set_up_is_a_stop_request_that_saves_last_pt(phantom_folder, tmp_path, monkeypatch):
    """A stop that comes while the data load (the Slicer module's Stop, or its cleanup, right after
    the run started) ends the run after its first step with last.pt, as one in the loop does; the
    signal handlers are given back afterwards."""
    import os
    import signal

    from SemiSupCardiacSegLib.training import trainer as trainer_module

    real_load = trainer_module.TrainingData.load

    def load_then_signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered now, in the main thread, mid set-up
        return real_load(*args, **kwargs)

    monkeypatch.setattr(trainer_module.TrainingData, "load", staticmethod(load_then_signalled))
    before = signal.getsignal(signal.SIGTERM)
    cfg = {**TINY, "data": str(phantom_folder), "iterations": 50, "validation": {"last": 0}}
    result = Trainer(cfg, tmp_path / "run", device="cpu", progress=False).run()
    assert result["stopped_early"] and result["iterations"] == 1
    assert (tmp_path / "run" / "last.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) is before


def test_intensity_augmentation_reaches_the_training_crops(phantom_folder, tmp_path):
    """``intensity_augmentation``: two runs without it end on the same weights (seeded), a run with
    it on others (its crops' intensities changed); the run's config records it."""
    from SemiSupCardiacSegLib.checkpoint import load_checkpoint

    base = {
        **TINY,
        "data": str(phantom_folder),
        "method": "supervised",
        "method_params": {},
        "iterations": 3,
        "validation": {"last": 1, "every": 100},
        "checkpoint_every": 100,
    }
    runs = {}
    variants = (("a", base), ("b", base), ("aug", {**base, "intensity_augmentation": True}))
    extra = (("fold", {**base, "intensity_fold": 1.0}), ("field", {**base, "background_field": 1.0}))
    for name, cfg in variants + extra:
        Trainer(cfg, tmp_path / name, device="cpu", progress=False).run()
        runs[name] = load_checkpoint(tmp_path / name / "model.pt")["state_dict"]
    same = all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    differs = any(not torch.equal(runs["a"][k], runs["aug"][k]) for k in runs["a"])
    assert same and differs
    for name in ("fold", "field"):  # intensity_fold and background_field reach the crops too
        assert any(not torch.equal(runs["a"][k], runs[name][k]) for k in runs["a"]), name
    assert json.loads((tmp_path / "aug" / "config.json").read_text())["intensity_augmentation"] is True
