"""``advtune eval --run R [--task T] [--split S] [--data-file F --text-fields a[,b] --label-field l]``."""

from __future__ import annotations

import sys

from .. import devices
from ..threads import HELP as THREADS_HELP
from ..threads import apply as apply_threads
from . import ArgumentParser


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="advtune eval", description="Evaluate a finished run.")
    parser.add_argument("--run", required=True, help="run folder written by advtune train")
    parser.add_argument(
        "--task", help="task to evaluate on (default: the run's own; another task = zero-shot transfer)"
    )
    parser.add_argument("--split", help="split (default: the task's evaluation splits), e.g. test-difficult")
    parser.add_argument("--data-file", help="labelled csv / tsv / jsonl file (or an AdvGLUE dev.json with --task)")
    parser.add_argument("--text-fields", help="text column(s) of --data-file: a or a,b")
    parser.add_argument("--label-field", help="label column of --data-file")
    parser.add_argument("--data-dir", help="data folder (default: $ADVTUNE_DATA_DIR)")
    parser.add_argument("--max-samples", type=int, help="evaluate on the first N examples only")
    parser.add_argument(
        "--sample-seed", type=int, help="with --max-samples: a seeded random sample of N instead of the first N"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", help=THREADS_HELP)
    parser.add_argument("--device", help=devices.HELP)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    devices.choose(args.device)

    from rich.console import Console
    from rich.table import Table

    from ..pipeline import evaluate

    results = evaluate(
        args.run,
        task=args.task,
        split=args.split,
        data_file=args.data_file,
        text_fields=args.text_fields,
        label_field=args.label_field,
        data_dir=args.data_dir,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        sample_seed=args.sample_seed,
    )
    table = Table(title=f"evaluation of {args.run}")
    table.add_column("task.split")
    keys = sorted({k for m in results.values() for k in m})
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in results.items():
        table.add_row(name, *[f"{m.get(k, float('nan')):.4f}" for k in keys])
    Console(file=sys.stdout).print(table)
    return 0
