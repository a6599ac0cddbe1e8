"""The grid runner: (task x method x seed [x variant]) runs with one budget, resumable, one progress bar.

Resumability comes from the run-folder contract (:mod:`advtune.runs`): ``metrics.json`` is written
last and atomically, so a folder that has it is finished and is skipped, and a folder without it was
interrupted and is deleted and trained again from scratch (suites save no checkpoints; a CPU cell
takes minutes). The word-substitution attack is resumable the same way: a run whose
``attack/<task>.<split>/metrics.json`` exists is not attacked again.

Zero-shot transfer evaluations (``TaskSpec.transfer``) are resumable too: a run with
``eval/<task>.<split>/metrics.json`` for a transfer task is not evaluated on it again.

The train, transfer and attack functions are injectable (``train_fn``, ``eval_fn``, ``attack_fn``) so
tests can run a grid with a fake trainer and count what is recomputed after an interruption.

Layout of a results folder::

    <out>/bench.json                             suite, environment, cells, invocations
    <out>/<task label>/<method[-variant]>/seed<k>/   one run folder per cell (+ cell.json)
    <out>/bench.log                              what the runs printed (Trainer log lines)
    <out>/overhead.json                          the overhead suite's measurements
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import runs
from ..errors import UsageError, describe
from .suites import ALL, Suite, TaskSpec, Variant

if TYPE_CHECKING:
    from .executors import Executor

TrainFn = Callable[..., Path]
EvalFn = Callable[[Path, str, "int | None"], None]
AttackFn = Callable[[Path, str, dict[str, Any]], None]
CELL_FILE = "cell.json"
_DATA_KEYS = {"max_train_samples", "max_eval_samples", "train_fraction_per_label", "max_length", "num_train_epochs",
              "eval_splits"}  # fmt: skip
BENCH_FILE = "bench.json"
OVERHEAD_FILE = "overhead.json"


@dataclass
class Cell:
    """One grid cell: the arguments of one :func:`advtune.pipeline.train` call and its run folder."""

    suite: str
    task: TaskSpec
    method: str
    seed: int
    variant: Variant | None
    run_dir: Path
    model: str = "minilm"
    training: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, Any] = field(default_factory=dict)
    attack: dict[str, Any] | None = None
    overridden: dict[str, Any] = field(default_factory=dict)  # command-line changes to the suite's budget

    @property
    def method_label(self) -> str:
        return f"{self.method}-{self.variant.name}" if self.variant else self.method

    @property
    def name(self) -> str:
        return f"{self.task.label}/{self.method_label}/seed{self.seed}"

    def train_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the ``train_fn`` call (same budget for every method of a suite)."""
        return {
            "task": self.task.task,
            "method": self.method,
            "output_dir": str(self.run_dir),
            "model": self.model,
            "method_overrides": dict(self.method_overrides),
            **self.training,  # suite budget < task (data budget, model, adapter) < method < variant < command line
            "seed": self.seed,
        }

    def record(self) -> dict[str, Any]:
        """The cell's configuration as written to ``cell.json`` and ``bench.json``."""
        kwargs = self.train_kwargs()
        kwargs.pop("output_dir")
        return {
            "suite": self.suite,
            "name": self.name,
            "task_label": self.task.label,
            "data_note": self.task.note
            + "".join(f"; {k}={v} (overridden)" for k, v in self.overridden.items() if k in _DATA_KEYS),
            "overridden": self.overridden,
            "method_label": self.method_label,
            "variant": dataclasses.asdict(self.variant) if self.variant else None,
            "attack": self.attack,
            "transfer": list(self.task.transfer),
            "train_kwargs": kwargs,
        }

    # ---- state on disk
    def is_trained(self) -> bool:
        return runs.is_complete(self.run_dir)  # a damaged metrics.json: trained again

    def is_attacked(self) -> bool:
        """Attacked, or nothing to attack (no attack asked; a regression task has no label to flip)."""
        if self.attack is None or any((self.run_dir / "attack").glob(f"{self.task.task}.*/metrics.json")):
            return True
        config = self.run_dir / runs.RUN_CONFIG
        return self.is_trained() and config.is_file() and runs.read_json(config).get("label_names", []) is None

    def pending_transfer(self) -> list[str]:
        """Transfer tasks this run has not been evaluated on yet."""
        return [t for t in self.task.transfer if not any((self.run_dir / "eval").glob(f"{t}.*/metrics.json"))]

    def is_done(self) -> bool:
        return self.is_trained() and not self.pending_transfer() and self.is_attacked()


@dataclass
class GridResult:
    """What a :func:`run_grid` call did: cell names trained, attacked, skipped and failed."""

    trained: list[str] = field(default_factory=list)
    attacked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    wall_s: float = 0.0


# ------------------------------------------------------------------------------------------ grid
def registered_methods() -> list[str]:
    from ..methods import METHODS

    return list(METHODS)


def _csv(text: str | Sequence[str] | None) -> list[str] | None:
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    return [s.strip() for s in items if str(s).strip()] or None


def build_grid(
    suite: Suite,
    out: str | Path,
    methods: str | Sequence[str] | None = None,
    seeds: str | Sequence[int] | None = None,
    tasks: str | Sequence[str] | None = None,
    model: str | None = None,
    training: dict[str, Any] | None = None,
    registered: Sequence[str] | None = None,
    attack: bool = True,
    variants: str | Sequence[str] | None = None,
) -> tuple[list[Cell], list[str]]:
    """The suite's cells under ``out`` (filtered by ``methods``/``seeds``/``tasks``/``variants``) and notes.

    ``variants``: names of the suite's variants to include (``"none"``: only the plain methods).
    A method given as ``METHOD-VARIANT`` (``vat-mtdnn``) selects that variant's cells alone.

    Methods that are not registered are left out with a note, so a suite can name methods that have
    not landed yet. ``tasks`` matches a task name (``sst2``) or a task label (``sst2-2k``).
    """
    out = Path(out)
    registered = list(registered) if registered is not None else registered_methods()
    wanted = _csv(methods) or list(suite.methods)
    if tuple(wanted) == ALL:
        wanted = list(registered)
    chosen, only, notes = _choose_methods(suite, wanted, registered)
    seed_list = _seed_list(suite, seeds)
    specs = _task_specs(suite, _csv(tasks))
    variant_filter = _variant_filter(suite, _csv(variants))
    cells = []
    for spec in specs:
        for m in chosen:
            plain = (None,) if m in wanted else ()
            for variant in (*plain, *_method_variants(suite, m, wanted, only, variant_filter)):
                overrides = {**suite.method_overrides.get(m, {}), **(variant.overrides if variant else {})}
                for seed in seed_list:
                    label = f"{m}-{variant.name}" if variant else m
                    cells.append(
                        Cell(
                            suite=suite.name,
                            task=spec,
                            method=m,
                            seed=seed,
                            variant=variant,
                            run_dir=out / spec.label / label / f"seed{seed}",
                            model=model or spec.model or suite.model,
                            training=_cell_training(suite, spec, m, variant, training),
                            method_overrides=overrides,
                            attack=suite.attack if attack else None,
                            overridden=dict(training or {}),
                        )
                    )
    return cells, notes


def _choose_methods(
    suite: Suite, wanted: Sequence[str], registered: Sequence[str]
) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """The registered methods to run, the variants asked for alone (``vat-mtdnn``) and notes on the rest."""
    chosen: list[str] = []
    only: dict[str, list[str]] = {}  # "vat-mtdnn": the variant's cells alone, without the plain method
    notes: list[str] = []
    for m in wanted:
        base, _, variant_name = m.partition("-")
        if m in registered:
            chosen.append(m)
        elif base in registered and variant_name in {v.name for v in suite.variants.get(base, ())}:
            if base not in chosen:
                chosen.append(base)
            only.setdefault(base, []).append(variant_name)
        else:
            notes.append(f"method '{m}' is not registered; skipped (registered: {', '.join(registered)})")
    if not chosen:
        raise UsageError(f"no registered method to run in suite '{suite.name}' ({'; '.join(notes)})")
    return chosen, only, notes


def _seed_list(suite: Suite, seeds: str | Sequence[int] | None) -> list[int]:
    try:
        return [int(s) for s in (_csv(seeds) or suite.seeds)]  # type: ignore[arg-type]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {seeds!r}") from None


def _task_specs(suite: Suite, task_filter: list[str] | None) -> list[TaskSpec]:
    """The suite's tasks matching ``--tasks`` by label or by task name."""
    # an exact label wins over a task name: "banking77" is the full-data label, not also "banking77-half"
    labels = {t.label for t in suite.tasks}
    specs = [
        t
        for t in suite.tasks
        if not task_filter or t.label in task_filter or (t.task in task_filter and t.task not in labels)
    ]
    if task_filter and not specs:
        known = sorted({t.label for t in suite.tasks} | {t.task for t in suite.tasks})
        raise UsageError(
            f"--tasks {','.join(task_filter)} matches no task of suite '{suite.name}' ({', '.join(known)})"
        )
    return specs


def _variant_filter(suite: Suite, variant_filter: list[str] | None) -> list[str] | None:
    """``--variants`` checked against the suite's variants (``none`` is always known)."""
    known_variants = {v.name for vs in suite.variants.values() for v in vs}
    unknown = set(variant_filter or ()) - known_variants - {"none"}
    if unknown:
        raise UsageError(
            f"--variants {','.join(sorted(unknown))}: suite '{suite.name}' has "
            + (f"the variants {', '.join(sorted(known_variants))}" if known_variants else "no variants")
        )
    return variant_filter


def _method_variants(
    suite: Suite, m: str, wanted: Sequence[str], only: dict[str, list[str]], variant_filter: list[str] | None
) -> list[Variant]:
    """The variants of method ``m`` to run: those ``--variants`` keeps, or only those asked for by name."""
    chosen = [
        v
        for v in suite.variants.get(m, ())
        if (variant_filter is None or v.name in variant_filter) or v.name in only.get(m, ())
    ]
    if m in only and m not in wanted:
        chosen = [v for v in chosen if v.name in only[m]]
    return chosen


def _cell_training(
    suite: Suite, spec: TaskSpec, m: str, variant: Variant | None, training: dict[str, Any] | None
) -> dict[str, Any]:
    """Training arguments, later ones winning: suite budget, task's data budget (and adapter), method, the
    method on this task, variant, command line. The method comes after the task so that a method with its own
    parameter-efficient mechanism (PEAFT's prompts) can leave a task's ``peft`` adapter out."""
    return {
        **suite.training,
        **spec.args,
        **suite.method_training.get(m, {}),
        **spec.method_training.get(m, {}),
        **(variant.training if variant else {}),
        **(training or {}),
    }


# ------------------------------------------------------------------------------------------ running
def default_train_fn(**kwargs: Any) -> Path:
    from ..pipeline import train

    return train(**kwargs)


def default_eval_fn(run_dir: Path, task: str, max_samples: int | None) -> None:
    """Zero-shot evaluation on another task (``advtune eval --run R --task T``), seeded sample."""
    from ..pipeline import evaluate

    evaluate(run_dir, task=task, max_samples=max_samples, sample_seed=0 if max_samples else None)


def default_attack_fn(run_dir: Path, task: str, attack: dict[str, Any]) -> None:
    """The word-substitution attack (``advtune attack``) on the first ``n`` examples of the eval split."""
    from ..attacks.run import attack_run

    attack_run(run_dir, task=task, progress=False, **attack)


def attack_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("advtune.attacks.run") is not None


def run_grid(
    cells: Sequence[Cell],
    train_fn: TrainFn | None = None,
    attack_fn: AttackFn | None = None,
    eval_fn: EvalFn | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_on_error: bool = False,
    log_file: str | Path | None = None,
    executor: Executor | None = None,
) -> GridResult:
    """Run every unfinished cell; finished cells are skipped, interrupted ones redone from scratch.

    One progress bar counts cells (its ETA is the mean time of the cells computed in this call).
    With ``log_file``, what the train and attack functions print (the Trainer's log lines) is
    appended there instead of the terminal, so the bar and the final table stay readable.
    A failing cell is reported and the grid goes on (``stop_on_error`` re-raises instead), so one
    diverging run does not cost a night of results; ``KeyboardInterrupt`` always stops the grid.

    ``executor`` runs the unfinished cells (:mod:`advtune.bench.executors`): in this process one after
    another (the default), or as Ray tasks on a cluster. Either way each cell is one :func:`run_cell` call.
    """
    from tqdm.auto import tqdm

    from .executors import LocalExecutor

    if attack_fn is None:
        if any(c.attack for c in cells) and not attack_available():
            log("note: the attack command (advtune attack) is not available; runs are not attacked")
            cells = [dataclasses.replace(c, attack=None) for c in cells]
        attack_fn = default_attack_fn
    cell_fn = functools.partial(
        run_cell, train_fn=train_fn or default_train_fn, eval_fn=eval_fn or default_eval_fn, attack_fn=attack_fn,
        log_file=Path(log_file).absolute() if log_file else None,  # absolute: a Ray worker's folder differs
    )  # fmt: skip
    result = GridResult()
    start = time.perf_counter()
    todo = []
    for cell in cells:
        if cell.is_done():
            _write_cell_record(cell)
            result.skipped.append(cell.name)
        else:
            todo.append(cell)
    bar = tqdm(
        total=len(cells), initial=len(result.skipped), desc="grid", unit="run", disable=not progress,
        dynamic_ncols=True,
    )  # fmt: skip
    try:
        with contextlib.closing((executor or LocalExecutor()).map(todo, cell_fn)) as outcomes:
            for cell, outcome in outcomes:
                if isinstance(outcome, BaseException):
                    if stop_on_error:
                        raise outcome
                    result.failed.append((cell.name, f"{type(outcome).__name__}: {describe(outcome)}"))
                    trace = "".join(traceback.format_exception(outcome, limit=3))
                    log(f"FAILED {cell.name}: {type(outcome).__name__}: {describe(outcome)}\n{trace}")
                else:
                    result.trained += [cell.name] if outcome.trained else []
                    result.attacked += [cell.name] if outcome.attacked else []
                bar.set_postfix_str(cell.name)
                bar.update(1)
    finally:
        bar.close()
        result.wall_s = time.perf_counter() - start
    return result


def _clear_interrupted(run_dir: Path) -> None:
    """Delete an interrupted cell's partial run: its files must not be mixed into the new one.

    The cell folder lies inside a results folder that ``advtune bench`` checked (``runs.check_writable``):
    everything there is the grid's own.
    """
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is a file in the way of a grid cell; move it away")
    shutil.rmtree(run_dir)


@dataclass
class CellOutcome:
    """What :func:`run_cell` computed for one cell (it returns it to the executor, maybe from another machine)."""

    trained: bool = False
    attacked: bool = False


def run_cell(
    cell: Cell, train_fn: TrainFn, eval_fn: EvalFn, attack_fn: AttackFn, log_file: str | Path | None = None
) -> CellOutcome:
    """Bring one cell to done: train it unless trained, evaluate pending transfers, attack unless attacked.

    Idempotent on the run folder: a call that dies anywhere leaves a folder the next call finishes
    (an untrained folder is deleted first), which is what makes a retried or resumed cell safe.
    """
    outcome = CellOutcome()
    timings: dict[str, float] = {}
    if not cell.is_trained():
        _clear_interrupted(cell.run_dir)
        cell.run_dir.parent.mkdir(parents=True, exist_ok=True)
        with _stdout_to(log_file, f"== train {cell.name}"), _timed(timings, "train"):
            train_fn(**cell.train_kwargs())
        if not cell.is_trained():
            raise RuntimeError(f"train function returned but {cell.run_dir}/metrics.json is missing")
        outcome.trained = True
    _write_cell_record(cell, timings)
    pending = cell.pending_transfer()
    if pending:
        with _stdout_to(log_file, f"== transfer {cell.name}"), _timed(timings, "transfer"):
            for task in pending:
                eval_fn(cell.run_dir, task, cell.task.transfer_samples)
        _write_cell_record(cell, timings)
    if cell.attack and not cell.is_attacked():
        with _stdout_to(log_file, f"== attack {cell.name}"), _timed(timings, "attack"):
            attack_fn(cell.run_dir, cell.task.task, cell.attack)
        outcome.attacked = True
        _write_cell_record(cell, timings)
    return outcome


@contextlib.contextmanager
def _stdout_to(log_file: str | Path | None, header: str) -> Iterator[None]:
    if log_file is None:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    # stderr too: the evaluation bars and warnings of a cell belong in the log, not under the grid's bar
    # (the grid's own bar keeps the stderr it was created with)
    with (
        open(log_file, "a", encoding="utf-8", buffering=1) as fh,
        contextlib.redirect_stdout(fh),
        contextlib.redirect_stderr(fh),
    ):
        print(f"{header} ({time.strftime('%H:%M:%S')})", flush=True)
        yield


@contextlib.contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    """Wall and CPU seconds of a phase (CPU = this process, all threads): CPU time stays meaningful on a
    shared machine, where wall time depends on the other jobs."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        timings[f"{phase}_wall_s"] = round(time.perf_counter() - wall, 2)
        timings[f"{phase}_cpu_s"] = round(time.process_time() - cpu, 2)


def _write_cell_record(cell: Cell, timings: dict[str, float] | None = None) -> None:
    """``cell.json``: the cell's configuration (+ wall/CPU seconds of the phases run in this call)."""
    path = cell.run_dir / CELL_FILE
    if not cell.run_dir.is_dir() or (path.exists() and not timings):
        return
    old = runs.read_json(path) if path.exists() else {}
    runs.write_json_atomic(path, {**cell.record(), "timings": {**old.get("timings", {}), **(timings or {})}})


def write_bench_record(
    out: str | Path, suite: Suite, cells: Sequence[Cell], argv: Sequence[str] | None = None
) -> Path:
    """``bench.json``: the suite, this machine's hardware and every cell's config; invocations appended."""
    from ..report import environment

    path = Path(out) / BENCH_FILE
    old = runs.read_json(path) if path.is_file() else {}
    cells_by_name = {c["name"]: c for c in old.get("cells", [])}
    cells_by_name.update({c.name: c.record() for c in cells})
    record = {
        "suite": _suite_dict(suite),
        "environment": environment(),
        "cells": list(cells_by_name.values()),
        "invocations": [
            *old.get("invocations", []),
            {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": list(argv or [])},
        ],
    }
    runs.write_json_atomic(path, record)
    return path


def _suite_dict(suite: Suite) -> dict[str, Any]:
    d = dataclasses.asdict(suite)
    d["tasks"] = [dataclasses.asdict(t) for t in suite.tasks]
    return d
