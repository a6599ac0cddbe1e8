"""``advtune compare RUN_A RUN_B [--split S] [--shuffles 10000] [--seed 0] [--json]``.

Paired significance tests between two runs evaluated on the same examples: McNemar's test for accuracy,
Fisher's approximate randomization test for F1 / MCC / correlations (``advtune.evaluation.significance``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UsageError
from . import ArgumentParser


def main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="advtune compare", description="Paired significance tests between two evaluated runs (B - A)."
    )
    parser.add_argument("run_a", help="run folder A (the baseline)")
    parser.add_argument("run_b", help="run folder B")
    parser.add_argument("--split", help="task.split or split name, e.g. test-difficult (default: every shared one)")
    parser.add_argument("--shuffles", type=int, default=10000, help="randomization-test shuffles (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the randomization test")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.shuffles < 1:
        raise UsageError(f"--shuffles must be >= 1, got {args.shuffles}")

    from ..evaluation.significance import compare_runs

    for run in (args.run_a, args.run_b):
        if not Path(run).is_dir():
            raise UsageError(f"run folder {run} {'is a file' if Path(run).exists() else 'does not exist'}")

    rows = compare_runs(args.run_a, args.run_b, args.split, shuffles=args.shuffles, seed=args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"A = {args.run_a}   B = {args.run_b}")
    for name, justify in (("task.split", "left"), ("metric", "left"), ("A", "right"), ("B", "right")):
        table.add_column(name, justify=justify)
    for name in ("B - A", "p-value", "n"):
        table.add_column(name, justify="right")
    table.add_column("test")
    for r in rows:
        table.add_row(
            r["split"],
            r["metric"],
            f"{r['a']:.4f}",
            f"{r['b']:.4f}",
            f"{r['diff']:+.4f}",
            f"{r['p_value']:.4g}",
            str(r["n"]),
            r["test"],
        )
    Console(file=sys.stdout, width=max(120, Console().width)).print(table)
    return 0
