"""``advtune robustness --run R [--runs R2,R3] [--task T] [--steps 100] [--c 0.01] [--step-size 5e-3] [--n 200]``.

ΔL_max of FreeLB eq. 5 (see :mod:`advtune.attacks.embedding`): the median over the examples that
every compared run classifies correctly, like FreeLB's Table 5. The paper runs 2000 PGD steps;
the default here is 100 (a CPU budget) and the table states the number used.
"""

from __future__ import annotations

import sys

from .. import devices
from ..errors import UsageError
from ..threads import HELP as THREADS_HELP
from ..threads import apply as apply_threads
from . import ArgumentParser


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="advtune robustness", description=__doc__.splitlines()[2].strip())
    parser.add_argument("--run", required=True, help="run folder")
    parser.add_argument("--runs", help="comma-separated further runs to compare on the same examples")
    parser.add_argument("--task", help="task (default: the run's own)")
    parser.add_argument("--split", help="split (default: the task's first evaluation split)")
    parser.add_argument("--n", type=int, default=200, help="first N examples of the split (default: 200)")
    parser.add_argument(
        "--sample-seed", type=int,
        help="a seeded random sample of N instead of the first N (for splits sorted by label: the intent test sets)",
    )  # fmt: skip
    parser.add_argument("--c", type=float, default=0.01, help="ε = c·‖X‖_F per example (default: 0.01)")
    parser.add_argument("--steps", type=int, default=100, help="PGD steps (paper: 2000; default: 100)")
    parser.add_argument("--step-size", type=float, default=5e-3, help="PGD step size α (default: 5e-3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", help="data folder (default: $ADVTUNE_DATA_DIR)")
    parser.add_argument("--threads", help=THREADS_HELP)
    parser.add_argument("--device", help=devices.HELP)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    devices.choose(args.device)

    from rich.console import Console
    from rich.table import Table

    from ..attacks.embedding import evaluate_robustness

    run_dirs = [args.run] + [r.strip() for r in (args.runs or "").split(",") if r.strip()]
    _check(args, run_dirs)
    results = evaluate_robustness(
        run_dirs,
        task=args.task,
        split=args.split,
        n=args.n,
        c=args.c,
        steps=args.steps,
        step_size=args.step_size,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        sample_seed=args.sample_seed,
    )
    r0 = results[0]
    table = Table(
        title=(
            f"median ΔL_max on {r0['task']}.{r0['split']}: {r0['n_examples']} of {r0['n_requested']} examples "
            f"classified correctly by every run; ε = {args.c}·‖X‖_F, {args.steps} PGD steps of {args.step_size}"
        )
    )
    for col in ("run", "method", "median ΔL_max", "sd ΔL_max", "median clean loss"):
        table.add_column(col, justify="left" if col in ("run", "method") else "right")
    from ..runs import RUN_CONFIG, read_json

    for r in results:
        method = read_json(f"{r['run']}/{RUN_CONFIG}")["method"]["name"]
        table.add_row(
            r["run"],
            method,
            f"{r['median_delta_loss']:.3e}",
            f"{r['std_delta_loss']:.3e}",
            f"{r['median_clean_loss']:.3e}",
        )
    Console(file=sys.stdout, width=160).print(table)
    return 0


def _check(args, run_dirs: list[str]) -> None:
    """Numbers, run folders, task, split and data, before any model is loaded (errors come first and alone)."""
    import math

    from ..pipeline import read_run
    from ..tasks import get_task, resolve_data_dir

    for name in ("c", "step_size"):
        if not math.isfinite(getattr(args, name)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    tasks = [read_run(r)[2] for r in run_dirs]
    target = get_task(args.task) if args.task else tasks[0]
    target.load(target.canonical_split(args.split or target.eval_splits[0]), data_dir=resolve_data_dir(args.data_dir))
