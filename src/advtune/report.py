"""``advtune report``: markdown tables and PNG plots computed from run folders, nothing hand-written.

Everything in the report is read from files the runs wrote (see :mod:`advtune.runs`; parsed by
:mod:`advtune.records`, which also skips a damaged run with a warning):
``run_config.json`` (task, model, method, seed, data budget), ``metrics.json`` and
``eval/<task>.<split>/predictions.jsonl`` (clean metrics, confusion matrices, paired tests),
``attack/<task>.<split>/metrics.json`` (accuracy under attack), ``train_stats.json`` (step time),
``log_history.json`` (dev metric per epoch), ``robustness/*.json`` (ΔL_max), ``surface/*.json``
(loss surfaces) and the overhead suite's ``overhead.json``. The hardware is the one recorded in
``bench.json`` when the runs came from ``advtune bench``, else the machine the report runs on (said so).

Table conventions: metrics are ×100; a cell is the median over seeds, ``± s`` the sample standard
deviation over seeds and ``(n)`` the number of seeds when there is more than one; ``*`` marks a
method whose paired test against ``standard`` on the same examples and seed gives p < 0.05 in the
majority of seeds.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import runs
from .errors import UsageError
from .records import BASELINE, RunRecord, aua, collect_runs, method_order, overhead_rows, primary_metric


# ------------------------------------------------------------------------------------------ environment
def environment() -> dict[str, Any]:
    """Hardware and software of this machine, as stated in reports and ``bench.json``."""
    import torch

    env: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------------------ statistics
def summarize(values: Sequence[float]) -> tuple[float, float | None, int]:
    """Median, sample standard deviation (None for one value) and count."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, None, 0
    return statistics.median(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def fmt_cell(values: Sequence[float], scale: float = 100.0, mark: str = "") -> str:
    med, sd, n = summarize(values)
    if n == 0:
        return "–"
    text = f"{med * scale:.2f}{mark}"
    if sd is not None:
        text += f" ± {sd * scale:.2f} ({n})"
    return text


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def significance(a: RunRecord, b: RunRecord, split: str) -> float | None:
    """p-value of the paired test between two runs on one split, for the split's headline metric.

    :func:`advtune.evaluation.significance.compare_runs` (McNemar for accuracy, paired randomization
    otherwise); ``None`` when the runs do not share the examples or the module is unavailable.
    """
    try:
        from .evaluation.significance import compare_runs
    except ImportError:  # pragma: no cover
        return None
    try:
        rows = compare_runs(a.path, b.path, task_split=f"{a.task}.{split}", shuffles=2000)
    except (UsageError, ValueError, OSError, KeyError):
        return None
    metric = a.metric_name(split)
    for row in rows:
        if row.get("metric") == metric and row.get("p_value") is not None:
            return float(row["p_value"])
    return None


# ------------------------------------------------------------------------------------------ tables
def splits_of(records: Sequence[RunRecord]) -> list[str]:
    """Evaluation splits in first-seen order (the first one is the headline split)."""
    seen: dict[str, None] = {}
    for r in records:
        for s in r.splits:
            seen.setdefault(s, None)
    return list(seen)


def main_table(records: Sequence[RunRecord], split_index: int = 0, with_tests: bool = True) -> str | None:
    """Methods x tasks on one split: median ± sd over seeds, average over tasks, Δ average vs standard."""
    by_cell: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    tasks: dict[str, str] = {}
    for r in records:
        split = _split_at(r, split_index)
        if split is None or r.score(split) is None:
            continue
        by_cell[(r.task_label, r.method_label)].append(r)
        tasks.setdefault(r.task_label, f"{r.task_label} ({split}, {r.metric_name(split)})")
    values = {k: [r.score(_split_at(r, split_index)) for r in recs] for k, recs in by_cell.items()}
    marks = {
        (t, m): _mark(recs, by_cell.get((t, BASELINE), []), split_index)
        for (t, m), recs in by_cell.items()
        if with_tests and m != BASELINE
    }
    return _grid_table(values, tasks, marks)


def transfer_table(records: Sequence[RunRecord]) -> str | None:
    """Zero-shot transfer (``eval/<other task>.<split>``): methods x target tasks, per source task.

    The evaluations of a run on tasks other than its own (SST-2 -> the review domains, MNLI -> SNLI):
    median ± sd over seeds, the average over the targets and its Δ vs standard.
    """
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    columns: dict[str, str] = {}
    for r in records:
        for f in sorted((r.path / "eval").glob("*/metrics.json")):
            m = runs.read_json(f)
            target = m.get("task") or f.parent.name.split(".", 1)[0]
            if target == r.task:
                continue
            key = primary_metric(r.metric_kind, m)
            if key is None:
                continue
            col = f"{r.task_label}→{f.parent.name}"
            columns.setdefault(col, f"{r.task_label} → {f.parent.name} ({key}, n={m.get('n', '?')})")
            values[(col, r.method_label)].append(float(m[key]))
    return _grid_table(values, dict(sorted(columns.items()))) if values else None


def _grid_table(
    values: dict[tuple[str, str], list[float]],
    columns: dict[str, str],
    marks: dict[tuple[str, str], str] | None = None,
) -> str | None:
    """Methods (rows) x columns of per-seed values: median ± sd, the average of the medians over the
    columns the baseline has, and that average's Δ vs the baseline."""
    if not values:
        return None
    marks = marks or {}
    methods = method_order(m for _, m in values)
    medians: dict[str, dict[str, float]] = defaultdict(dict)
    rows = []
    for m in methods:
        row = [m]
        for c in columns:
            vals = values.get((c, m), [])
            row.append(fmt_cell(vals, mark=marks.get((c, m), "")))
            if vals:
                medians[m][c] = summarize(vals)[0]
        rows.append(row)
    # the average runs over the columns the baseline was run on (sweep-only tasks would leave every row blank)
    avg_cols = [c for c in columns if c in medians.get(BASELINE, {})] or list(columns)
    base_avg = statistics.mean(medians[BASELINE][c] for c in avg_cols) if BASELINE in medians else math.nan
    for row, m in zip(rows, methods):
        full = all(c in medians[m] for c in avg_cols)
        avg = statistics.mean(medians[m][c] for c in avg_cols) if full else math.nan
        row.append(f"{avg * 100:.2f}" if full else "–")
        ok = full and m != BASELINE and not math.isnan(base_avg)
        row.append(f"{(avg - base_avg) * 100:+.2f}" if ok else "–")
    return _md_table(["method", *columns.values(), "average", f"Δ vs {BASELINE}"], rows)


def _split_at(r: RunRecord, i: int) -> str | None:
    keys = list(r.splits)
    return keys[i] if i < len(keys) else None


def _mark(recs: Sequence[RunRecord], base: Sequence[RunRecord], split_index: int) -> str:
    by_seed = {b.seed: b for b in base}
    pvals = []
    for r in recs:
        b = by_seed.get(r.seed)
        split = _split_at(r, split_index)
        if b is None or split is None:
            continue
        p = significance(r, b, split)
        if p is not None:
            pvals.append(p)
    return "*" if pvals and sum(p < 0.05 for p in pvals) > len(pvals) / 2 else ""


ATTACK_COLUMNS = {  # key in attack/<task>.<split>/metrics.json -> (header, is a rate shown ×100)
    "n": ("examples", False),
    "acc": ("clean acc ×100", True),
    "aua": ("AUA ×100", True),
    "avg": ("AVG ×100", True),
    "attack_success_rate": ("success ×100", True),
    "mean_words_changed_fraction": ("words changed ×100", True),
    "mean_queries": ("queries", False),
}


def attack_table(records: Sequence[RunRecord]) -> str | None:
    """Clean accuracy, accuracy under attack (AUA), their mean (AVG) and the attack's cost, median over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        for split, m in r.attack.items():
            groups[(r.task_label, split, r.method_label)].append(m)
    if not groups:
        return None
    keys = [k for k in ATTACK_COLUMNS if any(isinstance(m.get(k), (int, float)) for ms in groups.values() for m in ms)]
    rows = []
    for task, split, method in sorted(groups, key=lambda k: (k[0], k[1], k[2] != BASELINE, k[2])):
        ms = groups[(task, split, method)]
        cells = []
        for k in keys:
            vals = [float(m[k]) for m in ms if isinstance(m.get(k), (int, float))]
            if not vals:
                cells.append("–")
            elif ATTACK_COLUMNS[k][1]:
                cells.append(fmt_cell(vals))
            else:
                cells.append(f"{summarize(vals)[0]:.4g}")
        rows.append([task, split, method, len(ms), *cells])
    return _md_table(["task", "split", "method", "seeds", *[ATTACK_COLUMNS[k][0] for k in keys]], rows)


def step_time_table(records: Sequence[RunRecord]) -> str | None:
    """Median training step time (wall and CPU) per method, its ratio to standard on the same task and seed
    (see :func:`step_ratio`), and the wall/CPU seconds the bench recorded."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.step_s():
            groups[(r.task_label, r.method_label)].append(r)
    if not groups:
        return None
    rows = []
    for task in sorted({t for t, _ in groups}):
        base = {r.seed: r for r in groups.get((task, BASELINE), [])}
        for m in method_order(m for t, m in groups if t == task):
            recs = groups[(task, m)]
            cpu = summarize([r.step_s(cpu=True) or math.nan for r in recs])
            timing = {k: summarize([r.cell.get("timings", {}).get(k, math.nan) for r in recs])
                      for k in ("train_cpu_s", "attack_wall_s", "attack_cpu_s")}  # fmt: skip
            rows.append([
                task, m, f"{summarize([r.step_s() for r in recs])[0]:.3f}", f"{cpu[0]:.3f}" if cpu[2] else "–",
                ratio_cell(recs, base),
                f"{summarize([r.train_stats.get('train_runtime') or math.nan for r in recs])[0]:.0f}",
                *(f"{v[0]:.0f}" if v[2] else "–" for v in timing.values()),
            ])  # fmt: skip
    header = ["task", "method", "step time (s, median)", "step CPU s (median)", f"ratio vs {BASELINE}",
              "train wall s", "train+eval CPU s", "attack wall s", "attack CPU s"]  # fmt: skip
    return _md_table(header, rows)


RATIO_MARK = "†"
LOAD_TOLERANCE = 0.25
"""Two runs' mean 1-minute load averages may differ by this many runnable tasks per usable core before
their step-time ratio is marked (on 2 cores: 0.5, about one core's worth of other work for half the run)."""
RATIO_NOTE = (
    f"Step-time ratios vs `{BASELINE}`: per-step process CPU time where both runs recorded it (wall time "
    "otherwise), median over seeds of the ratio to the same seed's run. "
    f"`{RATIO_MARK}`: not a measure of the method's cost, because in at least one seed the two runs used "
    f"different thread counts or ran under loads differing by more than {LOAD_TOLERANCE} per core "
    '(1-minute load average, mean of start and end; see the "All runs" table); '
    "measure such methods side by side with `advtune bench --suite overhead`."
)


def step_ratio(run: RunRecord, base: RunRecord) -> tuple[float | None, bool]:
    """``run``'s cost per training step relative to ``base``, and whether that ratio can be trusted.

    CPU time where both runs recorded it: wall time follows the other jobs on a shared machine (the
    demo once printed CAT 0.68 and FreeLB 6.05 for idle ratios of 2.42 and 2.90), CPU time much less.
    Even CPU time moves with the load (threads spin while they wait for a busy core), so the ratio is
    untrusted when the thread counts differ or the recorded loads differ by more than
    :data:`LOAD_TOLERANCE` per core. Runs without a machine record (older runs) are not judged.
    """
    cpu = bool(run.step_s(cpu=True) and base.step_s(cpu=True))
    a, b = run.step_s(cpu=cpu), base.step_s(cpu=cpu)
    if a is None or b is None:
        return None, True
    if run.threads and base.threads and run.threads != base.threads:
        return a / b, False
    la, lb = run.train_load, base.train_load
    cores = run.machine.get("usable_cpus") or base.machine.get("usable_cpus") or os.cpu_count() or 1
    trusted = la is None or lb is None or abs(la - lb) <= LOAD_TOLERANCE * cores
    return a / b, trusted


def ratio_cell(recs: Sequence[RunRecord], base: dict[int, RunRecord]) -> str:
    """Median over seeds of :func:`step_ratio`, marked with :data:`RATIO_MARK` when any seed's is untrusted."""
    pairs = [step_ratio(r, base[r.seed]) for r in recs if r.seed in base]
    ratios = [x for x, _ in pairs if x is not None]
    if not ratios:
        return "–"
    mark = "" if all(ok for x, ok in pairs if x is not None) else RATIO_MARK
    return f"{statistics.median(ratios):.2f}{mark}"


def summary_rows(records: Sequence[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """The bench's one table: per task and method, clean metric, AUA and step-time ratio (medians over seeds)."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(r.task_label, r.method_label)].append(r)
    rows = []
    for task in sorted({t for t, _ in groups}):
        base = {r.seed: r for r in groups.get((task, BASELINE), [])}
        for m in method_order(m for t, m in groups if t == task):
            recs = groups[(task, m)]
            split = next(iter(recs[0].splits), None)
            clean = [r.score(split) for r in recs if split and r.score(split) is not None]
            auas = [a for r in recs for a in [aua(next(iter(r.attack.values()), {}))] if a is not None]
            name = recs[0].metric_name(split) if split else "–"
            rows.append([
                task, m, len(recs), f"{name} ({split})", fmt_cell(clean) if clean else "–",
                fmt_cell(auas) if auas else "–", ratio_cell(recs, base),
            ])  # fmt: skip
    header = ["task", "method", "seeds", "metric", "clean ×100", "AUA ×100", f"step-time ratio vs {BASELINE}"]
    return header, rows


def summary_table(records: Sequence[RunRecord]) -> str | None:
    header, rows = summary_rows(records)
    return _md_table(header, rows) if rows else None


def runs_table(records: Sequence[RunRecord]) -> str:
    """Every run and split with its raw headline metric (×100): the numbers behind the summaries, and the
    machine each run trained on (threads, 1-minute load average at start → end, CPU seconds per wall second)."""
    rows = []
    for r in sorted(records, key=lambda r: (r.task_label, r.method_label, r.seed)):
        for split in r.splits:
            a = aua(r.attack.get(split, {}))
            rows.append(
                [
                    r.task_label,
                    split,
                    r.method_label,
                    r.seed,
                    r.metric_name(split),
                    _pct(r.score(split)),
                    _pct(a),
                    f"{r.train_stats.get('step_time_median_s') or math.nan:.3f}",
                    *_machine_cells(r.machine),
                    _rel(r.path),
                ]
            )
    header = ["task", "split", "method", "seed", "metric", "value ×100", "AUA ×100", "step s", "threads",
              "load 1m start → end", "CPU/wall", "run"]  # fmt: skip
    return _md_table(header, rows)


def _machine_cells(machine: dict[str, Any]) -> list[str]:
    """Threads, load (start → end, 1-minute averages) and CPU/wall of a recorded phase; "–" where not recorded."""
    loads = [m[0] if m else None for m in (machine.get("load_start"), machine.get("load_end"))]
    load = "–" if None in loads else f"{loads[0]:.2f} → {loads[1]:.2f}"
    ratio = machine.get("cpu_per_wall")
    return [str(machine.get("threads", "–")), load, "–" if ratio is None else f"{ratio:.2f}"]


def _pct(value: float | None) -> str:
    """×100 with two decimals; a real 0 (MCC of a constant predictor) stays 0.00, a missing value is "–"."""
    return "–" if value is None else f"{value * 100:.2f}"


def _rel(path: Path) -> str:
    return "/".join(path.parts[-3:])


def data_table(records: Sequence[RunRecord]) -> str:
    """What each task label was trained on: subset, seeds, model, epochs; stated, not assumed."""
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[r.task_label].append(r)
    rows = []
    for label, recs in sorted(groups.items()):
        r0 = recs[0]
        rows.append(
            [
                label,
                r0.task,
                r0.data_note,
                sorted({r.config.get("num_train_examples") for r in recs}, key=str)[0],
                ", ".join(sorted({str(r.epochs) for r in recs})),
                ", ".join(map(str, sorted({r.seed for r in recs}))),
                ", ".join(sorted({r.model for r in recs})),
                ", ".join(splits_of(recs)),
            ]
        )
    return _md_table(["task label", "task", "data", "train examples", "epochs", "seeds", "model", "eval splits"], rows)


def robustness_table(records: Sequence[RunRecord]) -> str | None:
    """ΔL_max (FreeLB eq. 5) results written by ``advtune robustness`` (one row per run and file)."""
    rows = []
    for r in records:
        for f in r.json_files("robustness"):
            d = runs.read_json(f)
            rows.append(
                [
                    r.task_label,
                    d.get("split", "?"),
                    r.method_label,
                    r.seed,
                    f"{d.get('median_delta_loss', math.nan):.3e}",
                    f"{d.get('median_clean_loss', math.nan):.3e}",
                    d.get("n_examples", "?"),
                    d.get("c", "?"),
                    d.get("steps", "?"),
                ]
            )
    if not rows:
        return None
    return _md_table(
        ["task", "split", "method", "seed", "median ΔL_max", "median clean loss", "examples", "c", "PGD steps"], rows
    )


def overhead_table(data: dict[str, Any]) -> str | None:
    rows_in = overhead_rows(data)
    if not rows_in:
        return None
    keys: list[str] = []
    for row in rows_in:
        keys += [k for k in row if k != "method" and k not in keys]
    rows = [[row.get("method", "?"), *[_fmt_any(row.get(k)) for k in keys]] for row in rows_in]
    return _md_table(["method", *keys], rows)


def _fmt_any(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "–" if v is None else str(v)


# ------------------------------------------------------------------------------------------ report
def find_environment(root: Path) -> tuple[dict[str, Any], str]:
    for f in sorted(root.rglob("bench.json")):
        env = runs.read_json(f).get("environment")
        if env:
            return env, f"recorded by advtune bench in {f.relative_to(root)}"
    for f in sorted(root.rglob("overhead.json")):
        env = runs.read_json(f).get("environment") if isinstance(runs.read_json(f), dict) else None
        if env:
            return env, f"recorded in {f.relative_to(root)}"
    return environment(), "of the machine that wrote this report (the runs recorded none)"


def build_report(root: str | Path, out: str | Path | None = None, plots: bool = True) -> Path:
    """Write ``REPORT.md`` (and ``figures/*.png`` next to it) for a results folder; returns its path."""
    root = Path(root)
    records = collect_runs(root)
    overhead_files = sorted(root.rglob("overhead.json"))
    if not records and not overhead_files:
        raise UsageError(f"no finished run folder (with {runs.METRICS}) and no overhead.json under {root}")
    out = Path(out) if out else root / "REPORT.md"
    lines = _setup_section(root, records)
    if records:
        lines += _result_sections(records)
        lines += evidence_sections(records, [runs.read_json(f) for f in overhead_files])
    lines += _overhead_sections(root, overhead_files)
    if plots:
        lines += _figure_section(records, overhead_files, out)
    if records:
        lines += ["## All runs", "", runs_table(records), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def _setup_section(root: Path, records: Sequence[RunRecord]) -> list[str]:
    """Title, provenance, hardware, what was run and the table conventions."""
    env, env_src = find_environment(root)
    lines = [f"# Results: {root.name}", ""]
    lines += [
        "Generated by `advtune report` from the run folders under this results folder; every number below is",
        "read from a file the runs wrote.",
        "",
    ]
    lines += ["## Setup", "", f"Hardware and software ({env_src}):", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    if records:
        lines += [
            "",
            f"Models: {', '.join(sorted({r.model for r in records}))}. "
            f"Seeds: {', '.join(map(str, sorted({r.seed for r in records})))}. "
            f"Runs: {len(records)}.",
            "",
            data_table(records),
        ]
    lines += [
        "",
        "Conventions: metrics ×100; median over seeds ± sample standard deviation (number of seeds); "
        f"`*`: paired test vs `{BASELINE}` on the same examples and seed, p < 0.05 in most seeds.",
        "",
    ]
    return lines


def _result_sections(records: Sequence[RunRecord]) -> list[str]:
    """The summary, one clean-results table per split position, then each table the runs have data for."""
    lines = ["## Summary", "", summary_table(records) or "", "", RATIO_NOTE, ""]
    for i, split in enumerate(_split_names(records)):
        table = main_table(records, i)
        if table:
            lines += [f"## Clean results (evaluation split {i + 1}: {split})", "", table, ""]
    for title, table in (
        ("Zero-shot transfer to other tasks (same label space)", transfer_table(records)),
        ("Accuracy under the word-substitution attack", attack_table(records)),
        ("Training cost", step_time_table(records)),
        ("Embedding-space robustness: median ΔL_max (FreeLB eq. 5)", robustness_table(records)),
    ):
        if table:
            lines += [f"## {title}", "", table, ""]
            lines += [RATIO_NOTE, ""] if title == "Training cost" else []
    return lines


def _overhead_sections(root: Path, overhead_files: Sequence[Path]) -> list[str]:
    lines: list[str] = []
    for f in overhead_files:
        data = runs.read_json(f)
        table = overhead_table(data)
        if table:
            lines += [f"## Overhead ({f.relative_to(root)})", "", table, ""]
            if isinstance(data, dict) and data.get("kwargs"):
                lines += [f"Settings: {', '.join(f'{k}={v}' for k, v in data['kwargs'].items())}.", ""]
    return lines


def _figure_section(records: Sequence[RunRecord], overhead_files: Sequence[Path], out: Path) -> list[str]:
    """Draws the figures into ``figures/`` next to the report and links them (paths relative to the report)."""
    from . import plots as P

    figures = P.all_figures(records, [runs.read_json(f) for f in overhead_files], out.parent / "figures")
    if not figures:
        return []
    lines = ["## Figures", ""]
    for title, path in figures:
        lines += [f"### {title}", "", f"![{title}]({os.path.relpath(path, out.parent)})", ""]
    return lines


def _split_names(records: Sequence[RunRecord]) -> list[str]:
    """Name of each split position (``dev``, ``test-difficult``, ...) for table titles."""
    names: list[str] = []
    for r in records:
        for i, s in enumerate(r.splits):
            if i >= len(names):
                names.append(s)
            elif s not in names[i].split("/"):
                names[i] += f"/{s}"
    return names


# ------------------------------------------------------------------------------------------ evidence (issue 17)
FLIP_MIN = 0.01
"""δ "changes predictions" when its median ``diag/flip_rate`` is at least this share of examples."""
DLOGIT_MIN = 1e-3
"""δ "moves the outputs" when its median ``diag/abs_dlogit`` is at least this (logits or regression output)."""
LEARN_MARGIN = 0.02
"""A classification backbone learns when its accuracy beats the best constant predictor by this margin..."""
LEARN_P = 0.05
"""...and McNemar against that constant predictor (regression: Pearson's test) gives p below this, in most seeds."""
TOP_PAIRS = 5
"""TAT Figure 1 analysis: the number of most-confused (gold, predicted) pairs of the standard model."""


def mechanism_verdict(diag: dict[str, list[float]]) -> str:
    """Whether δ changed the model's outputs, from a run's logged ``diag/*`` (medians over the log)."""
    flips, dlogit = diag.get("diag/flip_rate"), diag.get("diag/abs_dlogit")
    if flips and statistics.median(flips) >= FLIP_MIN:
        return "yes: flips labels"
    if dlogit and statistics.median(dlogit) >= DLOGIT_MIN:
        return "moves outputs, no label flips" if flips else "moves outputs"
    return "no" if dlogit or flips else "–"


def mechanism_table(records: Sequence[RunRecord]) -> str | None:
    """Per run with mechanism diagnostics: medians of the logged ``diag/*`` values and the verdict."""
    keys = ("diag/sym_kl", "diag/abs_dlogit", "diag/flip_rate", "diag/target_gain")
    rows = []
    for r in sorted(records, key=lambda r: (r.task_label, r.method_label, r.seed)):
        diag = r.diagnostics
        if not diag:
            continue
        cells = [f"{statistics.median(diag[k]):.3g}" if diag.get(k) else "–" for k in keys]
        n = max(len(v) for v in diag.values())
        rows.append([r.task_label, r.method_label, r.seed, n, *cells, mechanism_verdict(diag)])
    if not rows:
        return None
    header = ["task", "method", "seed", "diag logs", "median sym KL", "median |Δlogit|", "median flip rate",
              "median target gain", "δ changed outputs?"]  # fmt: skip
    return _md_table(header, rows)


def learns(base: Sequence[RunRecord]) -> tuple[bool, str]:
    """Whether ``standard`` learns a task (its runs ``base``), with the reason in words.

    Classification: accuracy on the first split beats the best constant predictor (the most frequent gold
    label of that split) by :data:`LEARN_MARGIN` and McNemar against it gives p < :data:`LEARN_P`, in more
    than half of the seeds. Regression: Pearson r >= 0.1 with p < :data:`LEARN_P` in most seeds.
    """
    from scipy.stats import pearsonr

    from .evaluation.significance import mcnemar

    wins, details = 0, []
    for r in base:
        rows = r.predictions(next(iter(r.splits), ""))
        if not rows:
            continue
        gold, pred = [row["gold"] for row in rows], [row["pred"] for row in rows]
        if r.config.get("label_names") is None:  # regression
            stat, p = (float(v) for v in pearsonr(pred, gold)) if len(set(pred)) > 1 else (0.0, 1.0)
            ok, what = stat >= 0.1 and p < LEARN_P, f"r {stat:.2f}"
        else:
            top = max(set(gold), key=gold.count)
            acc, const = sum(g == q for g, q in zip(gold, pred)) / len(gold), gold.count(top) / len(gold)
            p = mcnemar([g == q for g, q in zip(gold, pred)], [g == top for g in gold])[1]
            what = f"acc {acc * 100:.1f} vs constant {const * 100:.1f}"
            ok = acc >= const + LEARN_MARGIN and p < LEARN_P
        wins += bool(ok)
        details.append(f"seed {r.seed}: {what}, p {p:.2g}")
    return wins > len(details) / 2, "; ".join(details) or "no predictions"


def confused_pairs_tables(records: Sequence[RunRecord], k: int = TOP_PAIRS) -> list[tuple[str, str]]:
    """TAT Figure 1 analysis, per classification task: the ``k`` (gold → predicted) pairs ``standard``
    confuses most and how many of exactly those errors each other method removes (means over seeds;
    positive = fewer errors than standard)."""
    from .records import mean_confusions, top_confused_pairs

    by_task: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.config.get("label_names") and r.splits:
            by_task[r.task_label].append(r)
    out = []
    for task, recs in sorted(by_task.items()):
        names = list(recs[0].config["label_names"])
        split = next(iter(recs[0].splits))
        mats = mean_confusions(recs, split, len(names))
        if BASELINE not in mats:
            continue
        base = mats[BASELINE][0]
        pairs = top_confused_pairs(base, k)
        others = [m for m in method_order(mats) if m != BASELINE]
        if not pairs or not others:
            continue
        rows = [[f"{names[g]} → {names[p]}", f"{base[g, p]:.1f}", *(f"{base[g, p] - mats[m][0][g, p]:+.1f}"
                 for m in others)] for g, p in pairs]  # fmt: skip
        total = [sum(float(mats[m][0][g, p]) for g, p in pairs) for m in (BASELINE, *others)]
        rows.append([f"top-{len(pairs)} total", f"{total[0]:.1f}", *(f"{total[0] - t:+.1f}" for t in total[1:])])
        header = ["gold → predicted", f"{BASELINE} errors ({mats[BASELINE][1]} seeds)",
                  *(f"removed by {m} ({mats[m][1]})" for m in others)]  # fmt: skip
        out.append((f"{task} ({split})", _md_table(header, rows)))
    return out


def _by_seed(recs: Sequence[RunRecord], value: Any) -> dict[int, float]:
    out = {}
    for r in recs:
        v = value(r)
        if v is not None and not math.isnan(v):
            out[r.seed] = float(v)
    return out


def _transfer_accuracy(r: RunRecord) -> float | None:
    """Mean accuracy of a run's zero-shot evaluations on other tasks (SST-2 → the review domains)."""
    accs = [runs.read_json(f).get("accuracy") for f in sorted((r.path / "eval").glob("*/metrics.json"))
            if f.parent.name.split(".", 1)[0] != r.task]  # fmt: skip
    accs = [float(a) for a in accs if isinstance(a, (int, float))]
    return statistics.mean(accs) if accs else None


def _delta_lmax(r: RunRecord) -> float | None:
    for f in r.json_files("robustness"):
        v = runs.read_json(f).get("median_delta_loss")
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _delta_cell(base: dict[int, float], meth: dict[int, float], scale: float = 100.0, mark: str = "") -> str:
    """Median over shared seeds of (method − standard), the mark, the number of seeds and the cross-seed p."""
    from .evaluation.significance import seed_randomization

    seeds = sorted(set(base) & set(meth))
    if not seeds:
        return "–"
    a, b = [base[s] for s in seeds], [meth[s] for s in seeds]
    d = statistics.median(y - x for x, y in zip(a, b)) * scale
    p = f"; p {seed_randomization(a, b):.2g}" if len(seeds) > 1 else ""
    return f"{d:+.2f}{mark} ({len(seeds)}{p})" if scale != 1.0 else f"{d:+.3g}{mark} ({len(seeds)}{p})"


def _step_ratio_cell(recs: Sequence[RunRecord], base: Sequence[RunRecord]) -> str:
    """The summary's step-time ratio (:func:`ratio_cell`: CPU time, † when the loads differed), with its seeds."""
    by_seed = {r.seed: r for r in base}
    cell = ratio_cell(recs, by_seed)
    return "–" if cell == "–" else f"×{cell} ({sum(r.seed in by_seed for r in recs)})"


EVIDENCE_COLUMNS = ("Δ clean ×100", "Δ AUA ×100", "Δ ΔL_max", "Δ out-of-domain acc ×100", "step-time ratio",
                    "memory ratio")  # fmt: skip


def _evidence_row(recs: Sequence[RunRecord], base: Sequence[RunRecord], memory: dict[str, float]) -> list[str]:
    """One method's changes against ``standard`` on one task (see :func:`evidence_table`)."""
    split = next(iter(base[0].splits), "")

    def pair(value: Any) -> tuple[dict[int, float], dict[int, float]]:
        return _by_seed(base, value), _by_seed(recs, value)

    def attack(r: RunRecord) -> float | None:
        return aua(r.attack.get(split) or next(iter(r.attack.values()), {}))

    mem = memory.get(recs[0].method)
    return [
        _delta_cell(*pair(lambda r: r.score(split)), mark=_mark(recs, base, 0)),
        _delta_cell(*pair(attack)),
        _delta_cell(*pair(_delta_lmax), scale=1.0),
        _delta_cell(*pair(_transfer_accuracy)),
        _step_ratio_cell(recs, base),
        f"×{mem:.2f}" if mem else "–",
    ]


def evidence_table(records: Sequence[RunRecord], overheads: Sequence[Any] = ()) -> tuple[str | None, list[str]]:
    """The one table to choose a method from: per task where ``standard`` learns (:func:`learns`) and per
    method, the change against ``standard`` of every measurement, paired by seed; and the notes on the
    tasks left out. Memory ratios come from the overhead suite (``overhead.json``, ``mem_ratio``)."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(r.task_label, r.method_label)].append(r)
    memory = {row["method"]: float(row["mem_ratio"]) for data in overheads for row in overhead_rows(data)
              if isinstance(row.get("mem_ratio"), (int, float)) and "method" in row}  # fmt: skip
    rows, notes = [], []
    for task in sorted({t for t, _ in groups}):
        base = groups.get((task, BASELINE), [])
        if not base:
            notes.append(f"{task}: left out, no `{BASELINE}` run to compare with")
            continue
        ok, why = learns(base)
        if not ok:
            notes.append(f"{task}: left out, `{BASELINE}` does not learn it ({why})")
            continue
        metric = base[0].metric_name(next(iter(base[0].splits), "")) or "?"
        for m in method_order(m for t, m in groups if t == task):
            if m != BASELINE:
                rows.append([f"{task} ({metric})", m, *_evidence_row(groups[(task, m)], base, memory)])
    return (_md_table(["task", "method", *EVIDENCE_COLUMNS], rows) if rows else None), notes


def evidence_sections(records: Sequence[RunRecord], overheads: Sequence[Any] = ()) -> list[str]:
    """Report sections of issue 17: the evidence table, the mechanism table and TAT's Figure 1 analysis."""
    lines: list[str] = []
    table, notes = evidence_table(records, overheads)
    if table or notes:
        lines += ["## Evidence: change against `standard`", "", table or "No task where the backbone learns.", ""]
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        lines += [
            "Each cell: median over seeds of (method − standard) on the same seed, then `*` (clean only: the "
            "paired test on the same examples gives p < 0.05 in most seeds), the number of seeds and `p`, the "
            "paired randomization test across seeds (its floor is 2/2^seeds: 0.25 with 3 seeds, so it needs 6 "
            "seeds to reach 0.05). ΔL_max: lower is more robust. Ratios: method / standard; the step-time ratio "
            f"is the summary's (per-step CPU time, `{RATIO_MARK}` when the runs' loads differed), the memory ratio "
            "the overhead suite's. `–`: not measured.",
            f"A task is kept when `{BASELINE}` learns it: accuracy at least {LEARN_MARGIN * 100:g} points above "
            f"the best constant predictor and McNemar p < {LEARN_P} against it (regression: Pearson r >= 0.1, "
            f"p < {LEARN_P}), in most seeds. Budget: the data table in Setup and the training-cost table.",
            "",
        ]
    mech = mechanism_table(records)
    if mech:
        lines += ["## Mechanism: did δ change the model's outputs?", "", mech, ""]
        lines += [
            f"Medians over each run's logged `diag/*` values. Verdict: labels flip when the median flip rate is "
            f">= {FLIP_MIN:g}; outputs move when the median |Δlogit| is >= {DLOGIT_MIN:g}; else no. Early in "
            "training the logits are nearly tied and tiny δ flip labels: read the flip rate with |Δlogit|.",
            "",
        ]
    vs = versus_table(records)
    if vs:
        lines += ["## TAT against VAT at the same settings", "", vs, ""]
    pairs = confused_pairs_tables(records)
    if pairs:
        lines += [f"## Most-confused label pairs of `{BASELINE}` (TAT Figure 1)", ""]
        for title, table in pairs:
            lines += [f"### {title}", "", table, ""]
    return lines


def versus_table(records: Sequence[RunRecord], a: str = "vat", b: str = "tat") -> str | None:
    """``b`` against ``a`` at the same settings (``tat`` vs ``vat``, ``tat-cpu`` vs ``vat-cpu``): the median
    per-seed difference of the headline metric, each seed's paired test (McNemar for accuracy) and the
    cross-seed randomization p. TAT is VAT plus a target: this isolates what the target adds."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(r.task_label, r.method_label)].append(r)
    rows = []
    for task, label in sorted(groups):
        if label != b and not label.startswith(f"{b}-"):
            continue
        other = groups.get((task, a + label[len(b) :]), [])
        if not other:
            continue
        by_seed = {r.seed: r for r in other}
        split = next(iter(other[0].splits), "")
        pvals = [(r.seed, significance(by_seed[r.seed], r, split)) for r in groups[(task, label)] if r.seed in by_seed]
        tests = ", ".join(f"seed {s}: {'–' if p is None else f'{p:.2g}'}" for s, p in sorted(pvals))
        cell = _delta_cell(*(_by_seed(g, lambda r, s=split: r.score(s)) for g in (other, groups[(task, label)])))
        rows.append([task, f"{label} vs {a + label[len(b) :]}", cell, tests])
    header = ["task", "runs", "Δ headline metric ×100 (seeds; cross-seed p)", "paired test p per seed"]
    return _md_table(header, rows) if rows else None
