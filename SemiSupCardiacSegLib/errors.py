"""The library's user-facing error types (no third-party imports, so anything may import them)."""

import errno as _errno
import warnings


class InputError(ValueError):
    """Bad user input (file, geometry, values); the message names the problem in one line."""


class MissingPackageError(InputError, ImportError):
    """A package one feature needs is not installed; the one-line message says how to install it.

    An ``InputError`` (the command lines print it as one ``error:`` line, exit code 2) and an
    ``ImportError``.
    """


class InputWarning(UserWarning):
    """An assumption the library had to make about an input (a format that stores no spacing, a
    layout told apart by axis sizes) or an implausible result (EF outside 0-100 %): said, never
    silent. The command lines print each as one ``warning: ...`` line on stderr, and the same text
    goes into the output's ``assumptions`` / ``warnings`` list."""


def warn(message: str) -> str:
    """Issue ``message`` as an :class:`InputWarning`; returns it (to be stored in a report too)."""

    warnings.warn(message, InputWarning, stacklevel=2)
    return message


#: What an OSError's errno means for a user who ran a command (the path is added in front).
_ERRNO_TEXT = {
    "ENOSPC": "no space left on device (free some space or choose another output folder)",
    "EDQUOT": "disk quota exceeded (free some space or choose another output folder)",
    "EROFS": "read-only file system (choose another output folder)",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "ENOENT": "no such file or directory",
    "ENOTDIR": "a component of the path is not a folder",
    "EISDIR": "is a folder, not a file",
    "EEXIST": "already exists",
    "EMFILE": "too many open files",
    "EIO": "input/output error (failing disk or network file system?)",
    "ENAMETOOLONG": "file name too long",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the path it concerns and what its errno means ("no space left on
    device", "read-only file system", ...), whatever the raising code put in its message."""

    name = _errno.errorcode.get(exc.errno or -1, "")
    text = _ERRNO_TEXT.get(name) or (exc.strerror or "").strip() or (str(exc).strip().splitlines() or [""])[0]
    text = text or exc.__class__.__name__
    path = exc.filename
    if path is None:
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"{first} ({text})" if first and name in _ERRNO_TEXT and text not in first else (first or text)
    return f"{path}: {text}"
