"""Distributed training with torchrun (gloo on CPU, 2 processes) against the 1-process run with the
same global batch: it trains, only rank 0 writes, the checkpoint loads in one process, and the loss
curves are close."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from conftest import REPO, TINY

ITER = 24


def _run(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _divergence(out):
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return [r["rank_parameter_divergence"] for r in logs if "rank_parameter_divergence" in r]


def _losses(out):
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return np.array([r["loss_seg"] for r in logs if "loss_seg" in r])


def test_torchrun_two_processes_matches_one_process(phantom_folder, tmp_path):
    base = {
        **TINY,
        "data": str(phantom_folder),
        "iterations": ITER,
        "validation": {"last": 1, "every": ITER},
        "checkpoint_every": 8,
    }
    one = {**base, "batch_size": 4, "labeled_per_batch": 2}
    two = {**base, "batch_size": 2, "labeled_per_batch": 1}  # per rank: global batch 4 = 2 labeled + 2 unlabeled
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps(two))
    train = str(REPO / "Training" / "train.py")
    _run(
        [
            sys.executable,
            train,
            "--config",
            str(tmp_path / "one.json"),
            "--out",
            str(tmp_path / "one"),
            "--threads",
            "1",
            "--no-progress",
        ],
        REPO,
    )
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            train,
            "--config",
            str(tmp_path / "two.json"),
            "--out",
            str(tmp_path / "two"),
            "--threads",
            "1",
            "--no-progress",
        ],
        REPO,
    )
    # Rank 0 alone wrote the log: one line per iteration, not two.
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(l2) == ITER == len(l1)
    assert not (tmp_path / "two" / ".lock").exists()
    # Segmenter and discriminator ended bit-identical on both ranks (checked by the trainer, logged once).
    assert _divergence(tmp_path / "two") == [0.0] and _divergence(tmp_path / "one") == []
    # It trains, and the curve is close to the single-process one with the same global batch.
    assert l2[-6:].mean() < l2[:3].mean()
    assert abs(l2[-6:].mean() - l1[-6:].mean()) < 0.25 * l1[:3].mean()
    # The checkpoint loads and runs in a single process.
    import torch

    from SemiSupCardiacSegLib.checkpoint import load_model

    model, meta = load_model(tmp_path / "two" / "model.pt")
    assert meta.iteration == ITER and meta.method == "sassnet"
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 32, 32, 16))
    assert out["seg"].shape == (1, 2, 32, 32, 16)


def test_torchrun_ema_teacher_identical_across_ranks(phantom_folder, tmp_path):
    """UA-MT under torchrun: student and EMA teacher (no gradient, updated from the averaged student)
    stay identical on both ranks while their dropout masks and noise differ."""
    cfg = {
        **TINY,
        "method": "uamt",
        "method_params": {"mc_passes": 2},
        "data": str(phantom_folder),
        "iterations": 6,
        "validation": {"last": 1, "every": 0},
        "checkpoint_every": 6,
        "batch_size": 2,
        "labeled_per_batch": 1,
    }
    (tmp_path / "uamt.json").write_text(json.dumps(cfg))
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(REPO / "Training" / "train.py"),
            "--config",
            str(tmp_path / "uamt.json"),
            "--out",
            str(tmp_path / "u"),
            "--threads",
            "1",
            "--no-progress",
        ],
        REPO,
    )
    assert _divergence(tmp_path / "u") == [0.0]
    import torch

    from SemiSupCardiacSegLib.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "u" / "last.pt")["method_state"]
    teacher = [k for k in state if k.startswith("teacher.")]
    assert teacher and any(
        not torch.equal(state[k], state["model." + k[len("teacher.") :]])
        for k in teacher
        if state[k].is_floating_point()
    )  # the teacher is a moving average, not a copy


def _divergence_worker(rank: int, init_file: str, results) -> None:
    import torch
    import torch.distributed as dist

    from SemiSupCardiacSegLib.distributed import DistContext

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ctx = DistContext(rank, 2, rank)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    same = ctx.parameter_divergence(net)
    with torch.no_grad():
        net.bias[1] += 0.25 * rank  # rank 1 drifts
    results[rank] = (same, ctx.parameter_divergence(net))
    dist.destroy_process_group()


def test_parameter_divergence_detects_a_drifted_rank(tmp_path):
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_divergence_worker, args=(str(tmp_path / "store"), results), nprocs=2, join=True)
    for rank in (0, 1):
        same, drifted = results[rank]
        assert same == 0.0
        assert abs(drifted - 0.25) < 1e-7  # every rank learns the worst difference
