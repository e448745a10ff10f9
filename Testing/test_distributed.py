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


def _losses(out):
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return np.array([r["loss_seg"] for r in logs if "loss_seg" in r])


def test_torchrun_two_processes_matches_one_process(phantom_folder, tmp_path):
    base = {**TINY, "data": str(phantom_folder), "iterations": ITER, "validation": {"last": 1, "every": ITER},
            "checkpoint_every": 8}
    one = {**base, "batch_size": 4, "labeled_per_batch": 2}
    two = {**base, "batch_size": 2, "labeled_per_batch": 1}  # per rank: global batch 4 = 2 labeled + 2 unlabeled
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps(two))
    train = str(REPO / "Training" / "train.py")
    _run([sys.executable, train, "--config", str(tmp_path / "one.json"), "--out", str(tmp_path / "one"),
          "--threads", "1", "--no-progress"], REPO)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", train,
          "--config", str(tmp_path / "two.json"), "--out", str(tmp_path / "two"), "--threads", "1", "--no-progress"], REPO)
    # Rank 0 alone wrote the log: one line per iteration, not two.
    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(l2) == ITER == len(l1)
    assert not (tmp_path / "two" / ".lock").exists()
    # It trains, and the curve is close to the single-process one with the same global batch.
    assert l2[-6:].mean() < l2[:3].mean()
    assert abs(l2[-6:].mean() - l1[-6:].mean()) < 0.25 * l1[:3].mean()
    # The checkpoint loads and runs in a single process.
    import torch

    from SemiSupCardiacSegLib.checkpoint import load_model

    model, meta = load_model(tmp_path / "two" / "model.pt")
    assert meta["iteration"] == ITER and meta["method"] == "sassnet"
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 32, 32, 16))
    assert out["seg"].shape == (1, 2, 32, 32, 16)
