"""Atomic file writes: write to a temporary name in the same folder, fsync, then ``os.replace``.

A reader (or a crash at any moment) sees either the previous file or the complete new one.
An OSError raised while writing (disk full, read-only file system, ...) always carries the target
path (``filename``), so the command lines can say which file and why (``errors.describe_os_error``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The suffix of ``path`` is kept (writers such as SimpleITK pick the format from it).
    With ``overwrite=False`` an existing ``path`` raises FileExistsError before anything is written.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"refusing to overwrite existing file: {path}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        if _read_only(folder):
            raise OSError(errno.EROFS, "read-only file system", str(folder))
        raise PermissionError(f"output folder is not writable: {folder}")
    suffix = "".join(path.suffixes) or ".tmp"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem.split('.')[0]}.", suffix=".part" + suffix, dir=folder)
    except OSError as exc:
        raise _with_path(exc, path) from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # disk full, read-only, ...: name the target, not the temporary file
            raise _with_path(exc, path) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False


def _with_path(exc: OSError, path: Path) -> OSError:
    """``exc`` as an OSError of the same errno naming ``path`` (the file the user asked for)."""
    if exc.errno is None:
        return exc
    if exc.errno == errno.EACCES and _read_only(path.parent):
        return OSError(errno.EROFS, "read-only file system", str(path))
    try:
        return type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    except Exception:  # noqa: BLE001 - an OSError subclass with another constructor
        return OSError(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None], overwrite: bool = True) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result onto ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer(tmp)
