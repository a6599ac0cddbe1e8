"""``advtune surface --run R [--task T] [--grid 7] [--batches 2]``: training-loss surface plot (TAT Figure 3)."""

from __future__ import annotations

from .. import devices
from ..errors import UsageError
from ..threads import HELP as THREADS_HELP
from ..threads import apply as apply_threads
from . import ArgumentParser


def main(argv: list[str]) -> int:
    parser = ArgumentParser(
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
    parser.add_argument("--device", help=devices.HELP)
    args = parser.parse_args(argv)
    apply_threads(args.threads)  # a bad flag first: it needs no file
    devices.choose(args.device)
    _check(args)
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


def _check(args) -> None:
    """Numbers, the run folder and the task, before the model is loaded (errors come first and alone)."""
    import math

    from ..pipeline import read_run
    from ..tasks import get_task

    if not math.isfinite(args.span):
        raise UsageError("--span must be a finite number")
    _, _, run_task = read_run(args.run)
    target = get_task(args.task) if args.task else run_task
    target.canonical_split(target.train_split)
