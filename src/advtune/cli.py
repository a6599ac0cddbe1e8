"""``advtune <command> ...``: a thin dispatcher to ``advtune.commands.<module>.main(argv)``.

Every command parses its own flags. A :class:`~advtune.errors.UsageError` (bad input the user can
fix) is printed as one line on stderr with exit code 2 and no traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

from .errors import UsageError, describe

COMMANDS: dict[str, str] = {
    "train": "advtune.commands.train",
    "eval": "advtune.commands.evaluate",
    "compare": "advtune.commands.compare",
    "attack": "advtune.commands.attack",
    "bench": "advtune.commands.bench",
    "report": "advtune.commands.report",
    "export": "advtune.commands.export",
    "robustness": "advtune.commands.robustness",
    "surface": "advtune.commands.surface",
}

HELP = {
    "train": "fine-tune a model on a task with a method (writes a run folder)",
    "eval": "evaluate a finished run on its task, another task or a labelled file",
    "compare": "paired significance tests between two runs",
    "attack": "word-substitution attack on a run (ACC / AUA / AVG)",
    "bench": "run a benchmark suite (grid of task x method x seed)",
    "report": "tables and plots from a results folder",
    "export": "keep a results folder's records (metrics, predictions, configs) without its models",
    "robustness": "maximum loss increase in the embedding neighbourhood (FreeLB eq. 5)",
    "surface": "loss-surface plot around a run's weights",
}


def _usage() -> str:
    lines = ["usage: advtune <command> [options]   (advtune <command> --help for its options)", "", "commands:"]
    for name in COMMANDS:
        lines.append(f"  {name:<11} {HELP.get(name, '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"advtune: error: unknown command '{command}' (choose from: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        try:
            module = importlib.import_module(COMMANDS[command])
        except ModuleNotFoundError as exc:
            if exc.name and COMMANDS[command].startswith(exc.name):
                print(f"advtune: error: command '{command}' is not available in this installation", file=sys.stderr)
                return 2
            raise
        return int(module.main(rest) or 0)
    except UsageError as exc:
        print(f"advtune {command}: error: {describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"advtune {command}: interrupted (finished runs are kept; rerun with --resume)", file=sys.stderr)
        return 130


def run() -> int:
    """The console entry point: :func:`main`, then the process group of a launched run is closed (every
    rank leaves together; see :func:`advtune.distributed.shutdown`)."""
    from .distributed import shutdown

    try:
        code = main()
    except BaseException:
        shutdown(wait=False)
        raise
    shutdown(wait=code == 0)
    return code


if __name__ == "__main__":
    sys.exit(run())
