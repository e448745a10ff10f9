"""`adapt`: a model's batch-norm statistics re-estimated on another scanner's images, every weight
kept; labels never read; seeded; the checkpoint says what it was adapted from and on what."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from SemiSupCardiacSegLib.checkpoint import load_checkpoint, load_model, save_checkpoint, state_dict_for_export
from SemiSupCardiacSegLib.cli import main as cli_main
from SemiSupCardiacSegLib.io import write_volume
from SemiSupCardiacSegLib.networks import build_network
from SemiSupCardiacSegLib.phantoms import make_la_phantom
from SemiSupCardiacSegLib.volume import Volume

SPACING = (2.0, 2.0, 2.5)


def _other_scanner(folder: Path, n: int = 3) -> Path:
    """Phantoms as another protocol gives them: gamma 1.8, more noise; a label file that is not a
    label at all beside one (adapt must not read it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ph = make_la_phantom(shape=(48, 44, 24), spacing=SPACING, seed=70 + i, noise_std=0.3)
        x = ph.image - ph.image.min()
        write_volume(Volume((1000 * (x / x.max()) ** 1.8).astype(np.float32), SPACING), folder / f"scan{i}.nrrd")
    (folder / "scan0_label.nrrd").write_bytes(b"not an image")
    return folder


def _adapt(capsys, model, data, out, *extra) -> tuple[int, dict | None, str]:
    rc = cli_main(["adapt", "--model", str(model), "--data", str(data), "--out", str(out), "--quiet", *extra])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out.strip().splitlines()[-1]) if rc == 0 else None), cap.err


def _bn_buffers(state: dict) -> list[str]:
    return [k for k in state if k.endswith(("running_mean", "running_var"))]


def test_adapt_changes_only_batch_norm_statistics_and_records_it(trained, tmp_path, capsys):
    data = _other_scanner(tmp_path / "scanner")
    src = load_checkpoint(trained / "model.pt")
    rc, printed, err = _adapt(capsys, trained / "model.pt", data, tmp_path / "a.pt", "--batches", "6")
    assert rc == 0, err
    out = load_checkpoint(tmp_path / "a.pt")
    buffers = _bn_buffers(out["state_dict"])
    assert buffers, "the tiny network has batch norm"
    weights = [k for k in out["state_dict"] if k not in buffers and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(out["state_dict"][k].float(), src["state_dict"][k].float()) for k in weights)
    changed = [k for k in buffers if not torch.allclose(out["state_dict"][k], src["state_dict"][k])]
    assert len(changed) == len(buffers)  # every statistic re-estimated
    rec = out["adapted_batch_norm"]
    assert rec["from_model_id"] == src["model_id"] and rec["cases"] == ["scan0", "scan1", "scan2"]
    assert rec["batches"] == 6 and printed["model_id"] == out["model_id"] != src["model_id"]
    _, meta = load_model(tmp_path / "a.pt")  # a usable model: its metadata validates
    assert meta.adapted_batch_norm == rec

    rc, again, _ = _adapt(capsys, trained / "model.pt", data, tmp_path / "b.pt", "--batches", "6")
    assert rc == 0 and again["model_id"] == printed["model_id"]  # seeded: the same statistics


def test_adapt_refuses_to_overwrite_and_a_network_without_batch_norm(trained, tmp_path, capsys):
    data = _other_scanner(tmp_path / "scanner", n=1)
    (tmp_path / "a.pt").write_bytes(b"the user's file")
    rc, _, err = _adapt(capsys, trained / "model.pt", data, tmp_path / "a.pt", "--batches", "1")
    assert rc != 0 and "exists; pass --overwrite" in err and (tmp_path / "a.pt").read_bytes() == b"the user's file"

    ckpt = load_checkpoint(trained / "model.pt")
    network = {**ckpt["network"], "normalization": "instance"}
    net = build_network(ckpt["arch"], network)
    no_bn = {k: v for k, v in ckpt.items() if k != "format"}
    no_bn.update(network=network, state_dict=state_dict_for_export(net))
    save_checkpoint(tmp_path / "instance.pt", no_bn)
    rc, _, err = _adapt(capsys, tmp_path / "instance.pt", data, tmp_path / "c.pt")
    assert rc != 0 and "no batch normalization to adapt" in err and not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("batches", ["0", "-3"])
def test_adapt_refuses_a_batch_count_below_one(trained, tmp_path, capsys, batches):
    data = _other_scanner(tmp_path / "scanner", n=1)
    rc, _, err = _adapt(capsys, trained / "model.pt", data, tmp_path / "a.pt", "--batches", batches)
    assert rc != 0 and "--batches" in err and not (tmp_path / "a.pt").exists()


def test_adapt_job_runs_in_a_child_and_reports_progress(trained, tmp_path):
    """jobs.AdaptJob (the Slicer module's background adaptation): the CLI in a child process prints
    PROGRESS lines up to 1 and writes a loadable checkpoint that says what it was adapted from."""
    import sys

    from SemiSupCardiacSegLib.jobs import AdaptJob

    data = _other_scanner(tmp_path / "scanner")
    out = tmp_path / "adapted" / "model.pt"
    job = AdaptJob(data, out, model=str(trained / "model.pt"), device="cpu", python=sys.executable)
    assert job.wait(300) == 0, job.log_path.read_text()[-2000:]
    assert job.progress() == pytest.approx(1.0)
    assert job.log_path.parent == out.parent
    _, meta = load_model(out)
    record = load_checkpoint(out)["adapted_batch_norm"]
    assert record["from_model_id"] == load_model(trained / "model.pt")[1].model_id != meta.model_id
    assert record["cases"] == ["scan0", "scan1", "scan2"]
