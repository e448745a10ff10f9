"""Atomic file writes: write to a temporary name in the same folder, fsync, then ``os.replace``.

A reader (or a crash at any moment) sees either the previous file or the complete new one.
An OSError raised while writing (disk full, read-only file system, ...) always carries the target
path (``filename``), so the command lines can say which file and why (``errors.describe_os_error``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import sys
import tempfile
import threading
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


# ------------------------------------------------------------------------------ sets of files
#: Name of the file whose presence marks a complete output set (written or moved in last).
DEFAULT_MARKER = "report.json"


def is_complete_set(folder: str | os.PathLike, marker: str = DEFAULT_MARKER) -> bool:
    """True when ``folder`` holds a finished output set (``atomic_folder`` publishes ``marker`` last)."""
    return (Path(folder) / marker).is_file()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (POSIX, main thread) while a few renames run: delivered right after."""

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where not supported."""

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
        return False  # old kernel or a file system without exchange: the caller falls back to two renames
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder`` and the folders themselves (POSIX; a no-op where not allowed)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _publish(tmp: Path, target: Path, overwrite: bool, owned: Callable[[str], bool], marker: str) -> None:
    """Move the complete set in ``tmp`` to ``target`` (see ``atomic_folder``)."""
    parent = target.parent
    if not target.exists():
        try:
            os.rename(tmp, target)
            _fsync_dir(parent)
            return
        except OSError:
            if not target.exists():
                raise  # not a race with another writer: a real error
    if not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder")
    if not overwrite and is_complete_set(target, marker):
        raise FileExistsError(
            f"{target} already holds a complete output set ({marker}); pass --overwrite to replace it"
        )
    entries = os.listdir(target)
    foreign = [e for e in entries if not owned(e)]
    if not foreign:  # the folder is ours: swap whole folders, the old one goes with tmp
        if not _exchange(tmp, target):
            old = Path(tempfile.mkdtemp(prefix=f"{target.name}.old-", dir=parent))
            os.rmdir(old)
            os.rename(target, old)  # a crash just here leaves the earlier set complete in TARGET.old-*
            os.rename(tmp, target)
            _remove_tree(old)
        _fsync_dir(parent)
        return
    # Other files live in the folder too (e.g. a log being written): move our earlier entries out
    # (the marker first), then the new ones in (the marker last). At no moment do entries of the two
    # runs sit side by side, and the marker is there only while a complete set is.
    old = Path(tempfile.mkdtemp(prefix=f"{target.name}.old-", dir=parent))
    try:
        for name in sorted((e for e in entries if owned(e)), key=lambda e: e != marker):
            os.rename(target / name, old / name)
        for name in sorted(os.listdir(tmp), key=lambda e: e == marker):
            os.rename(tmp / name, target / name)
        _fsync_dir(target)
    finally:
        _remove_tree(old)


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike,
    overwrite: bool = False,
    owned: Callable[[str], bool] | None = None,
    marker: str = DEFAULT_MARKER,
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` (``NAME.tmp-XXXX``); write a whole output set
    into it. When the block ends normally the set is moved into place, so ``path`` holds either its
    earlier complete set or the complete new one, never entries of both runs (Ctrl-C, a full disk
    or any error inside the block leaves ``path`` as it was and removes the temporary folder).

    * ``path`` missing: the folder is renamed onto it.
    * ``path`` holds only entries ``owned`` by the set (default: the names the new set has, and
      ``marker``): the two folders are swapped in one ``renameat2(RENAME_EXCHANGE)`` on Linux
      (elsewhere two renames: ``path -> NAME.old-XXXX``, the new one onto ``path``), then the
      earlier set is deleted.
    * ``path`` also holds other files (not ``owned``): they stay; the earlier set's entries are
      moved out (``marker`` first), then the new ones in (``marker`` last).
    ``marker`` marks a complete set (``is_complete_set``); without ``overwrite`` a ``path`` that
    holds one raises FileExistsError (an incomplete leftover of an interrupted run is replaced).
    SIGINT/SIGTERM are held back during the renames.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and is_complete_set(target, marker):
        raise FileExistsError(
            f"{target} already holds a complete output set ({marker}); pass --overwrite to replace it"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder the usual permissions
    try:
        try:
            yield tmp
            _fsync_tree(tmp)
        except OSError as exc:  # name the file the user asked for, not its temporary twin
            for attr in ("filename", "filename2"):
                name = getattr(exc, attr, None)
                if name and Path(str(name)).is_relative_to(tmp):
                    setattr(exc, attr, str(target / Path(str(name)).relative_to(tmp)))
            raise
        new_names = set(os.listdir(tmp)) | {marker}
        is_owned = owned if owned is not None else new_names.__contains__
        with _signals_deferred():
            _publish(tmp, target, overwrite, lambda e: e in new_names or is_owned(e), marker)
    finally:
        if tmp.exists():
            _remove_tree(tmp)
