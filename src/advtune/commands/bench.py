"""``advtune bench --suite NAME [--methods a,b] [--seeds 1,2,3] [--tasks t1,t2] [--out DIR]``.

Runs a suite's grid (see :mod:`advtune.bench.suites`), resumable: rerun the same command after an
interruption and only unfinished cells are computed. Prints one summary table at the end and writes
``REPORT.md`` into the output folder (``advtune report DIR`` rebuilds it at any time).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..threads import HELP as THREADS_HELP
from ..threads import apply as apply_threads
from . import ArgumentParser


def _parse_set(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = _value(value.strip(), yaml)
    return out


def _value(text: str, yaml: Any) -> Any:
    """``3`` -> 3, ``1e-4`` -> 1e-4 (YAML 1.1 would keep that a string), ``true`` -> True, else YAML/str."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _check_training_keys(training: dict[str, Any]) -> None:
    """Refuse a --set key that no training or task argument has, before any cell starts."""
    import dataclasses

    from ..adapters import AdapterArguments
    from ..config import AdvTrainingArguments, TaskArguments

    classes = (AdvTrainingArguments, TaskArguments, AdapterArguments)
    known = {f.name for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(training) - known)
    if unknown:
        raise UsageError(
            f"--set {', '.join(unknown)}: not a training, task or adapter argument (see advtune train --help)"
        )


def build_parser() -> ArgumentParser:
    from ..bench.suites import SUITES

    lines = "\n".join(f"  {n:<11} {s.description}" for n, s in SUITES.items())
    parser = ArgumentParser(
        prog="advtune bench",
        description=f"Run a benchmark suite.\n\nsuites:\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--suite", required=True, help=f"one of: {', '.join(SUITES)}")
    parser.add_argument(
        "--methods",
        help="comma-separated methods (default: the suite's; unregistered ones are skipped); "
        "METHOD-VARIANT (vat-mtdnn) runs only that variant of the method",
    )
    parser.add_argument("--seeds", help="comma-separated seeds (default: the suite's)")
    parser.add_argument("--tasks", help="comma-separated task names or labels of the suite (default: all)")
    parser.add_argument(
        "--variants",
        help="comma-separated variant names to run besides the plain methods, e.g. lam0,lam0.5 "
        "(default: all of the suite's; 'none' = no variants)",
    )
    parser.add_argument("--out", help="results folder (default: results/<suite>)")
    parser.add_argument("--model", help="model alias, local folder or hub id (default: the suite's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training argument for every cell, e.g. --set num_train_epochs=2 (repeatable)",
    )
    parser.add_argument("--no-attack", action="store_true", help="skip the word-substitution attack")
    parser.add_argument("--attack-n", type=int, help="attack the first N examples (default: the suite's)")
    parser.add_argument("--no-report", action="store_true", help="do not write REPORT.md at the end")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their state, run nothing")
    parser.add_argument("--stop-on-error", action="store_true", help="stop at the first failing cell")
    _add_executor_flags(parser)
    parser.add_argument("--threads", help=THREADS_HELP + "; every cell, and the overhead suite's processes")
    return parser


def _add_executor_flags(parser: argparse.ArgumentParser) -> None:
    """Where the cells run (see docs/scale-out.md): this process, or Ray tasks on one machine or a cluster."""
    group = parser.add_argument_group("executor")
    group.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="local: one cell after another in this process (default); ray: every cell a Ray task",
    )  # fmt: skip
    group.add_argument(
        "--ray-address", help="join a running Ray cluster: 'auto' or HOST:PORT (default: start a local Ray)"
    )
    group.add_argument("--cpus-per-cell", type=float, help="CPUs of each Ray task, also its torch threads (default 1)")
    group.add_argument("--gpus-per-cell", type=float, help="GPUs of each Ray task, fractions allowed (default 0)")
    group.add_argument(
        "--max-retries", type=int,
        help="rerun a failed cell (an error, or its worker died) up to N more times (default: 0 local, 2 ray)",
    )  # fmt: skip


def _executor(args: argparse.Namespace) -> Any:
    """The executor the flags ask for; Ray flags without ``--executor ray`` are refused, not ignored."""
    from ..bench.executors import LocalExecutor, RayExecutor, check_resources

    if args.executor == "local":
        ray_only = [f for f, v in (("--ray-address", args.ray_address), ("--cpus-per-cell", args.cpus_per_cell),
                                   ("--gpus-per-cell", args.gpus_per_cell)) if v is not None]  # fmt: skip
        if ray_only:
            raise UsageError(f"{', '.join(ray_only)} only apply to --executor ray")
        retries = 0 if args.max_retries is None else args.max_retries
        check_resources(1, 0, retries)
        return LocalExecutor(max_retries=retries)
    return RayExecutor(
        address=args.ray_address,
        cpus_per_cell=1.0 if args.cpus_per_cell is None else args.cpus_per_cell,
        gpus_per_cell=args.gpus_per_cell or 0.0,
        max_retries=2 if args.max_retries is None else args.max_retries,
        threads=int(args.threads) if args.threads else None,  # --threads wins over the cell's CPUs
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setting = apply_threads(args.threads)
    from ..bench.suites import get_suite

    suite = get_suite(args.suite)
    out = Path(args.out or f"results/{suite.name}")
    from .. import runs

    runs.check_writable(out, "--out")
    if suite.kind == "overhead":
        if args.executor != "local":
            raise UsageError("the overhead suite measures in this process; --executor ray runs grids")
        return _overhead(suite, out, args, setting["threads"] if args.threads else None)
    from ..bench.runner import build_grid, run_grid, write_bench_record

    training = _parse_set(args.set)
    _check_training_keys(training)
    cells, notes = build_grid(
        suite,
        out,
        methods=args.methods,
        seeds=args.seeds,
        tasks=args.tasks,
        model=args.model,
        training=training,
        attack=not args.no_attack,
        variants=args.variants,
    )
    for note in notes:
        print(f"note: {note}")
    executor = _executor(args)
    if args.attack_n is not None:
        if args.attack_n <= 0:
            raise UsageError(f"--attack-n must be positive, got {args.attack_n}")
        cells = [dataclasses.replace(c, attack={**c.attack, "n": args.attack_n}) if c.attack else c for c in cells]
    if args.dry_run:
        for c in cells:
            state = "done" if c.is_done() else "trained, not attacked" if c.is_trained() else "to run"
            print(f"{c.name:<45} {state}")
        return 0
    _quiet()
    write_bench_record(out, suite, cells, ["bench", *argv])
    start = time.perf_counter()
    result = run_grid(cells, stop_on_error=args.stop_on_error, log_file=out / "bench.log", executor=executor)
    wall = time.perf_counter() - start
    print(
        f"{len(result.trained)} trained, {len(result.attacked)} attacked, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed; wall time {wall:.0f} s"
    )
    _print_summary(out, {c.run_dir for c in cells})
    if not args.no_report:
        from ..report import build_report

        print(f"report: {build_report(out)}")
    for name, why in result.failed:
        print(f"failed: {name}: {why}", file=sys.stderr)
    return 1 if result.failed else 0


def _quiet() -> None:
    """Only the grid's bar on the terminal: no per-run Trainer bars, weight-init or datasets chatter."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def _print_summary(out: Path, run_dirs: set[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..report import RATIO_MARK, RATIO_NOTE, collect_runs, summary_rows

    records = [r for r in collect_runs(out) if r.path in run_dirs]
    header, rows = summary_rows(records)
    table = Table(title=f"advtune bench: {out}")
    for h in header:
        table.add_column(h, justify="left" if h in ("task", "method") else "right")
    for row in rows:
        table.add_row(*map(str, row))
    Console(file=sys.stdout, width=140).print(table)
    if any(str(row[-1]).endswith(RATIO_MARK) for row in rows):
        print(RATIO_NOTE)


def _overhead(suite, out: Path, args, threads: int | None = None) -> int:
    """The overhead suite: :func:`advtune.bench.overhead.measure_overhead` over every registered method."""
    import inspect

    from .. import runs
    from ..bench.overhead import measure_overhead
    from ..bench.runner import OVERHEAD_FILE, _csv, registered_methods
    from ..report import environment, overhead_table

    registered = registered_methods()
    wanted = _csv(args.methods) or registered
    methods = [m for m in wanted if m in registered]
    for m in set(wanted) - set(methods):
        print(f"note: method '{m}' is not registered; skipped")
    if "standard" not in methods:
        methods.insert(0, "standard")
    params = inspect.signature(measure_overhead).parameters
    kwargs: dict[str, Any] = {**suite.training, **_parse_set(args.set)}
    if args.model:
        kwargs["model"] = args.model
    if threads:
        kwargs["threads"] = threads
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise UsageError(f"the overhead suite does not take {', '.join(unknown)} (it takes: {', '.join(params)})")
    if args.dry_run:
        print(f"overhead of {', '.join(methods)} with {kwargs}")
        return 0
    _quiet()
    result = measure_overhead(methods, **kwargs)
    data = result if isinstance(result, dict) and "rows" in result else {"rows": result}
    data = {**data, "environment": environment(), "methods": methods, "kwargs": kwargs}
    runs.write_json_atomic(out / OVERHEAD_FILE, data)
    print(overhead_table(data) or data)
    print(f"written: {out / OVERHEAD_FILE}")
    return 0
