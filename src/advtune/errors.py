"""User-facing errors.

Anything the user can fix (a bad flag, a missing file, a wrong column) is raised as
:class:`UsageError`. The CLI prints its message on one line to stderr and exits with code 2,
without a traceback. Library users catch it like any ``ValueError``.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A problem with the user's input: printed as one line by the CLI (exit code 2)."""
