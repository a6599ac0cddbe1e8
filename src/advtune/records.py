"""Run records: what a finished run folder says, read once for every reader.

``report``, ``plots``, ``bench`` and the commands read the same files of a run folder (see
:mod:`advtune.runs` for how they are written): ``run_config.json``, ``metrics.json``, ``cell.json``
(the bench cell that produced it), predictions, attack metrics, ``train_stats.json`` and
``log_history.json``. Their parsing lives here, beneath all the readers, so no reader imports another
one to get at a run's numbers and no import cycle can grow between them.

A damaged run (a file it needs that cannot be read or parsed) is skipped by :func:`collect_runs` with
one warning line naming the run and the file, so one broken folder in a grid of a hundred does not
stop the report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from . import runs
from .errors import UsageError
from .threads import mean_load

BASELINE = "standard"
"""The method every other one is compared with (first in tables, ``Δ vs standard``)."""

_NOT_METRICS = {"n", "task", "split", "loss", "runtime", "samples_per_second", "steps_per_second"}
_ALIASES = {
    "matthews": ("matthews", "mcc"),
    "mcc": ("mcc", "matthews"),
    "pearson_spearman": ("pearson_spearman", "combined", "pearson"),
    "pearson": ("pearson",),
    "spearman": ("spearman",),
    "f1": ("f1",),
    "f1_accuracy": ("f1_accuracy", "combined", "f1"),
    "accuracy": ("accuracy", "acc"),
}


def method_order(methods: Iterable[str]) -> list[str]:
    """The display order of methods: the baseline first, then the others alphabetically."""
    ms = sorted(set(methods))
    return ([BASELINE] if BASELINE in ms else []) + [m for m in ms if m != BASELINE]


def primary_metric(kind: str | None, keys: Iterable[str]) -> str | None:
    """The task's headline metric among a metrics file's keys (``matthews`` for CoLA, ...)."""
    keys = [k for k in keys if k not in _NOT_METRICS]
    try:
        from .evaluation.metrics import PRIMARY_METRIC
    except ImportError:  # pragma: no cover
        PRIMARY_METRIC = {}
    if PRIMARY_METRIC.get(kind or "") in keys:
        return PRIMARY_METRIC[kind or ""]
    if kind in keys:
        return kind
    for cand in (*_ALIASES.get(kind or "", ()), kind or ""):
        for k in keys:
            if cand and cand in k:
                return k
    for k in ("accuracy", "acc"):
        if k in keys:
            return k
    return sorted(keys)[0] if keys else None


@dataclass
class RunRecord:
    """A finished run folder, read lazily."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    cell: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.metrics.get("task") or self.config["task"].get("name") or self.config["task"].get("task")

    @property
    def task_label(self) -> str:
        return self.cell.get("task_label") or self.task

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def method_label(self) -> str:
        return self.cell.get("method_label") or self.method

    @property
    def method_config(self) -> dict[str, Any]:
        return self.config["method"].get("config") or {}

    @property
    def seed(self) -> int:
        return int(self.config.get("training", {}).get("seed", 0))

    @property
    def epochs(self) -> float | None:
        return self.config.get("training", {}).get("num_train_epochs")

    @property
    def model(self) -> str:
        return str(self.config.get("model", {}).get("model", "?"))

    @property
    def metric_kind(self) -> str | None:
        return self.config.get("task", {}).get("metric")

    @property
    def splits(self) -> dict[str, dict[str, float]]:
        return self.metrics.get("splits", {})

    def score(self, split: str) -> float | None:
        m = self.splits.get(split) or {}
        key = primary_metric(self.metric_kind, m)
        return float(m[key]) if key else None

    def metric_name(self, split: str) -> str | None:
        return primary_metric(self.metric_kind, self.splits.get(split) or {})

    @property
    def data_note(self) -> str:
        if self.cell.get("data_note"):
            return self.cell["data_note"]
        t = self.config.get("task", {})
        parts = [f"{self.config.get('num_train_examples', '?')} train examples"]
        if t.get("train_fraction_per_label"):
            parts.append(f"{t['train_fraction_per_label']:g} of each label")
        parts.append(f"max length {t.get('max_length', '?')}")
        return ", ".join(parts)

    @cached_property
    def attack(self) -> dict[str, dict[str, Any]]:
        """``split -> attack metrics`` from ``attack/<task>.<split>/metrics.json``."""
        out = {}
        for f in sorted((self.path / "attack").glob("*/metrics.json")):
            out[f.parent.name.split(".", 1)[-1]] = runs.read_json(f)
        return out

    @cached_property
    def train_stats(self) -> dict[str, Any]:
        f = self.path / "train_stats.json"
        return runs.read_json(f) if f.is_file() else {}

    @property
    def machine(self) -> dict[str, Any]:
        """Threads and load of the training (``train_stats.json``'s ``machine``; empty for older runs)."""
        m = self.train_stats.get("machine")
        return m if isinstance(m, dict) else {}

    @property
    def threads(self) -> int | None:
        return self.machine.get("threads")

    @property
    def train_load(self) -> float | None:
        """Mean 1-minute load average over the training (start and end), None when not recorded."""
        return mean_load(self.machine)

    def step_s(self, cpu: bool = False) -> float | None:
        """Median seconds per training step: process CPU time (``cpu``) or wall time; None if not recorded."""
        value = self.train_stats.get("step_cpu_time_median_s" if cpu else "step_time_median_s")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    @cached_property
    def log_history(self) -> list[dict[str, Any]]:
        f = self.path / "log_history.json"
        return runs.read_json(f) if f.is_file() else []

    @cached_property
    def diagnostics(self) -> dict[str, list[float]]:
        """``diag/<name> -> logged values`` from ``log_history.json``: the mechanism diagnostics of VAT, SMART,
        TAT and R3F (each logged value is the mean over the diagnosed steps of one logging window)."""
        out: dict[str, list[float]] = {}
        for entry in self.log_history:
            for key, value in entry.items() if isinstance(entry, dict) else ():
                if key.startswith("diag/") and isinstance(value, (int, float)) and value == value:  # NaN: no value
                    out.setdefault(key, []).append(float(value))
        return out

    def predictions(self, split: str) -> list[dict[str, Any]]:
        f = runs.eval_dir(self.path, self.task, split) / "predictions.jsonl"
        return runs.read_jsonl(f) if f.is_file() else []

    def json_files(self, folder: str) -> list[Path]:
        return sorted((self.path / folder).glob("*.json"))


def aua(attack_metrics: dict[str, Any]) -> float | None:
    """Accuracy under attack from an attack metrics file."""
    for key in ("aua", "accuracy_under_attack", "robust_accuracy"):
        if key in attack_metrics:
            return float(attack_metrics[key])
    return None


def overhead_rows(data: Any) -> list[dict[str, Any]]:
    """Normalise an ``overhead.json`` (a list of rows, ``{"rows": [...]}`` or ``{method: {...}}``)."""
    if isinstance(data, dict) and "rows" in data:
        data = data["rows"]
    if isinstance(data, dict):
        data = [{"method": k, **v} for k, v in data.items() if isinstance(v, dict)]
    return [dict(r) for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def mean_confusions(records: Iterable[RunRecord], split: str, k: int) -> dict[str, tuple[Any, int]]:
    """Per method label, the confusion matrix (rows gold, columns predicted) of ``split`` averaged over
    its seeds and the number of seeds, from ``predictions.jsonl`` (runs without predictions are left out)."""
    import numpy as np

    sums: dict[str, Any] = {}
    seeds: dict[str, int] = {}
    for r in records:
        rows = r.predictions(split)
        if not rows:
            continue
        m = sums.setdefault(r.method_label, np.zeros((k, k), dtype=np.float64))
        seeds[r.method_label] = seeds.get(r.method_label, 0) + 1
        for row in rows:
            g, p = int(row["gold"]), int(row["pred"])
            if 0 <= g < k and 0 <= p < k:
                m[g, p] += 1
    return {name: (m / seeds[name], seeds[name]) for name, m in sums.items()}


def top_confused_pairs(matrix: Any, k: int) -> list[tuple[int, int]]:
    """The ``k`` off-diagonal cells (gold, predicted) with the most errors, most first (ties: lower index
    first); cells with no error are never returned. TAT's Figure 1 reads which of these a method removes."""
    n = len(matrix)
    cells = [(float(matrix[g][p]), g, p) for g in range(n) for p in range(n) if g != p and matrix[g][p] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(g, p) for _, g, p in cells[:k]]


# ------------------------------------------------------------------------------------------ collecting
class DamagedRun(Exception):
    """A file of a finished run folder cannot be read or does not hold what the readers expect."""


def collect_runs(root: str | Path) -> list[RunRecord]:
    """Every finished run folder under ``root`` (unfinished ones are ignored, as the contract says).

    A damaged run is left out with one warning line on stderr naming it, so the other runs still report.
    """
    root = Path(root)
    if not root.exists():
        raise UsageError(f"results folder {root} does not exist")
    out = []
    for cfg in sorted(root.rglob(runs.RUN_CONFIG)):
        run = cfg.parent
        if not runs.is_finished(run):
            continue
        try:
            out.append(load_record(run))
        except DamagedRun as exc:
            print(f"advtune: warning: skipping damaged run {run}: {exc}", file=sys.stderr)
    return out


def load_record(run: Path) -> RunRecord:
    """Read a finished run and check every file the readers will open; :class:`DamagedRun` if one is broken."""
    cell = run / "cell.json"
    record = RunRecord(
        run,
        _read_dict(run, run / runs.RUN_CONFIG),
        _read_dict(run, run / runs.METRICS),
        _read_dict(run, cell) if cell.is_file() else {},
    )
    try:
        _ = (record.method, record.task)  # the keys every table groups by
    except (KeyError, TypeError, AttributeError):
        raise DamagedRun(f"{runs.RUN_CONFIG} names no method or no task") from None
    if not isinstance(record.splits, dict) or not all(isinstance(m, dict) for m in record.splits.values()):
        raise DamagedRun(f"{runs.METRICS}: 'splits' is not a mapping of split to metrics")
    for pattern in ("attack/*/metrics.json", "eval/*/metrics.json", "robustness/*.json", "surface/*.json"):
        for f in sorted(run.glob(pattern)):
            _read_dict(run, f)
    if (run / "train_stats.json").is_file():
        _read_dict(run, run / "train_stats.json")
    history = run / "log_history.json"
    if history.is_file() and not isinstance(_read(run, history), list):
        raise DamagedRun("log_history.json: expected a JSON list")
    for f in sorted(run.glob("eval/*/predictions.jsonl")):
        _check_jsonl(run, f)
    return record


def _read(run: Path, path: Path) -> Any:
    try:
        return runs.read_json(path)
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise DamagedRun(f"{path.relative_to(run)}: {_first_line(exc)}") from None


def _read_dict(run: Path, path: Path) -> dict[str, Any]:
    data = _read(run, path)
    if not isinstance(data, dict):
        raise DamagedRun(f"{path.relative_to(run)}: expected a JSON object, found {type(data).__name__}")
    return data


def _check_jsonl(run: Path, path: Path) -> None:
    """Parse every line without keeping the rows (predictions files can be large)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip() and not _is_json_object(line):
                    raise DamagedRun(f"{path.relative_to(run)}: line {n} is not a JSON object")
    except (OSError, ValueError) as exc:  # ValueError: bad UTF-8
        raise DamagedRun(f"{path.relative_to(run)}: {_first_line(exc)}") from None


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
