"""A writer killed (SIGKILL) in the middle of saving a checkpoint leaves the previous file intact."""

import signal
import subprocess
import sys
import time

import torch
from conftest import REPO

from SemiSupCardiacSegLib.checkpoint import load_checkpoint, save_checkpoint

WRITER = r"""
import sys, torch
sys.path.insert(0, {repo!r})
from SemiSupCardiacSegLib.checkpoint import save_checkpoint
big = torch.zeros(40_000_000)  # 160 MB: each save takes long enough to be killed mid-write
print("writing", flush=True)
for i in range(1, 1000):
    big[0] = i
    save_checkpoint({path!r}, {{"kind": "model", "version": i, "state_dict": {{"w": big}}}})
"""


def test_sigkill_during_checkpoint_write_keeps_a_complete_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"kind": "model", "version": 0, "state_dict": {"w": torch.zeros(4)}})
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(repo=str(REPO), path=str(path))], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)  # inside the first (or a later) write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ck = load_checkpoint(path)  # must parse: the old file or a complete new one, never a torn one
    version = ck["version"]
    assert version == 0 or float(ck["state_dict"]["w"][0]) == version
    partial = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    # A killed writer cannot clean up: its temporary file, if any, is a hidden *.part* file.
    assert all(name.startswith(".last.") and ".part" in name for name in partial)
