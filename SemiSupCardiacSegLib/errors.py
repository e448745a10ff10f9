"""The library's user-facing error types (no third-party imports, so anything may import them)."""


class InputError(ValueError):
    """Bad user input (file, geometry, values); the message names the problem in one line."""


class MissingPackageError(InputError, ImportError):
    """A package one feature needs is not installed; the one-line message says how to install it.

    An ``InputError`` (the command lines print it as one ``error:`` line, exit code 2) and an
    ``ImportError``.
    """
