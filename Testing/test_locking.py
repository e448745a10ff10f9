"""Two trainings into one folder: the second refuses while the first lives; stale locks are replaced."""

import os
import socket
import subprocess
import sys

import pytest

from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.locking import LOCK_NAME, folder_lock
from SemiSupCardiacSegLib.training import Trainer


def test_live_lock_refuses_and_is_released(tmp_path):
    with folder_lock(tmp_path) as lock:
        assert lock.read_text() == f"{os.getpid()}@{socket.gethostname()}"
        with pytest.raises(InputError, match=f"in use by another training \\(process {os.getpid()}"):
            with folder_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_replaced(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid}@{socket.gethostname()}")
    with pytest.warns(UserWarning, match="stale lock"):
        with folder_lock(tmp_path) as lock:
            assert lock.read_text().startswith(f"{os.getpid()}@")
    assert not (tmp_path / LOCK_NAME).exists()


def test_trainer_refuses_a_locked_folder_and_leaves_it_untouched(tmp_path, phantom_folder):
    from conftest import TINY

    out = tmp_path / "run"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{live.pid}@{socket.gethostname()}")
        with pytest.raises(InputError, match=f"process {live.pid}"):
            Trainer({**TINY, "data": str(phantom_folder), "iterations": 2}, out, device="cpu", progress=False).run()
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        live.kill()
        live.wait()
