"""User-facing errors.

Anything the user can fix (a bad flag, a missing file, a wrong column) is raised as
:class:`UsageError`. The CLI prints its message on one line to stderr and exits with code 2,
without a traceback. Library users catch it like any ``ValueError``.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A problem with the user's input: printed as one line by the CLI (exit code 2)."""


class DamagedFileError(UsageError):
    """A file advtune wrote no longer parses (cut short by a kill, edited, corrupted).

    ``str(exc)`` is the parser's reason alone, so a reader that names files its own way (the report
    names them relative to their run) can prefix it; :func:`describe` gives the full one-line message.
    """

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(reason)
        self.path = path


def describe(exc: BaseException) -> str:
    """The one line a user sees for an error: the file and the reason for damaged files, else the message."""
    if isinstance(exc, DamagedFileError):
        return f"{exc.path} is damaged: {exc}"
    return str(exc)
