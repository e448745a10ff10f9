"""A lock file that keeps two trainings out of one output folder.

``folder_lock(folder)`` creates ``folder/.lock`` holding ``pid@host`` with O_EXCL (atomic on local
file systems). A lock whose process is gone (same host, pid not alive) is stale: it is replaced,
with a warning. The lock is removed when the block ends, also on error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import warnings
from pathlib import Path
from typing import Iterator

from .errors import InputError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, owned by someone else
    return True


def _read(lock: Path) -> tuple[int | None, str]:
    try:
        pid, _, host = lock.read_text().strip().partition("@")
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder/.lock`` for the duration of the block; InputError if a live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = f"{os.getpid()}@{socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host = _read(lock)
            if host == socket.gethostname() and pid is not None and not _alive(pid):
                warnings.warn(f"removing stale lock {lock} of process {pid}, which is no longer running")
                lock.unlink(missing_ok=True)
                continue
            raise InputError(
                f"{folder} is in use by another training (process {pid} on {host or 'unknown host'}; lock file {lock})"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:  # pragma: no cover - another process took the lock between unlink and create twice
        raise InputError(f"could not take the lock {lock}")
    try:
        yield lock
    finally:
        if _read(lock)[0] == os.getpid():
            lock.unlink(missing_ok=True)
