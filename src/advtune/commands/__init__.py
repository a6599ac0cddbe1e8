"""One module per ``advtune`` command; each has ``main(argv) -> exit code``.

:class:`ArgumentParser` replaces argparse's error path (the whole usage, then the message, then
``SystemExit(2)``) with a one-line :class:`~advtune.errors.UsageError` plus a ``--help`` hint, so a
mistyped flag reads like every other bad input.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from ..errors import UsageError


class OneLineErrors:
    """Mixin for argparse parsers (HfArgumentParser included): errors raise UsageError, no usage dump."""

    prog: str

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (see the module docstring)."""
