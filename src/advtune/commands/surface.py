"""``advtune surface --run R [--task T] [--grid 7] [--batches 2]``: training-loss surface plot (TAT Figure 3)."""

from __future__ import annotations

import argparse

from ..threads import HELP as THREADS_HELP
from ..threads import apply as apply_threads


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="advtune surface",
        description="Training loss on a 2-D grid of filter-normalised random directions around a run's weights.",
    )
    parser.add_argument("--run", required=True, help="run folder")
    parser.add_argument("--task", help="task whose training data is used (default: the run's own)")
    parser.add_argument("--grid", type=int, default=7, help="points per axis (default: 7)")
    parser.add_argument("--batches", type=int, default=2, help="training batches per grid point (default: 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--span", type=float, default=1.0, help="grid covers [-span, span]^2 (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the directions and the batches")
    parser.add_argument("--data-dir", help="data folder (default: $ADVTUNE_DATA_DIR)")
    parser.add_argument("--threads", help=THREADS_HELP)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    from ..surface import surface_for_run

    json_path, png = surface_for_run(
        args.run,
        task=args.task,
        grid=args.grid,
        batches=args.batches,
        batch_size=args.batch_size,
        span=args.span,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    print(f"written: {json_path}\nwritten: {png}")
    return 0
