"""PNG figures for ``advtune report`` (matplotlib, Agg backend), drawn from saved JSON only.

* confusion matrices of every method side by side (TAT, Figure 1: x = predicted, y = gold),
* each method's confusion minus standard's on standard's most-confused label pairs (TAT, Figure 1),
* accuracy and accuracy under attack against a method hyper-parameter such as λ (PEAFT, Figure 2a),
* accuracy under attack against the number of training epochs (PEAFT, Figure 2b),
* dev metric after each epoch per method (from ``log_history.json``),
* overhead bars (step-time and memory ratios of the overhead suite),
* loss surfaces written by ``advtune surface`` (TAT, Figure 3).

A figure is drawn only when the data for it exists, so a results folder of a small grid gives the
figures it supports and no empty axes.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .records import RunRecord, aua, method_order, overhead_rows

Figure = tuple[str, Path]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _median(vals: Sequence[float]) -> float:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


# ------------------------------------------------------------------------------------------ confusion
def _classification_runs_by_task(records: Sequence[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    """``(task label, its runs)`` sorted by task, for the runs with label names and evaluated splits."""
    by_task: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.config.get("label_names") and r.splits:
            by_task[r.task_label].append(r)
    return sorted(by_task.items())


def confusion_matrices(records: Sequence[RunRecord], fig_dir: Path) -> list[Figure]:
    """One figure per task: each method's confusion matrix on the first split, summed over seeds."""
    plt = _plt()
    figures = []
    for task, recs in _classification_runs_by_task(records):
        labels = list(recs[0].config["label_names"])
        split = next(iter(recs[0].splits))
        mats, seeds = _mean_confusions(recs, split, len(labels))
        if not mats:
            continue
        methods = method_order(mats)
        fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods) + 0.6, 3.6), squeeze=False)
        vmax = max(float(m.max()) for m in mats.values()) or 1.0
        for ax, method in zip(axes[0], methods):
            im = _confusion_panel(ax, mats[method], method, seeds[method], labels, vmax)
        axes[0][0].set_ylabel("gold")
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="examples (mean over seeds)")
        fig.suptitle(f"Confusion matrices, {task} ({split})", fontsize=10)
        figures.append((f"Confusion matrices: {task} ({split})", _save(fig, fig_dir / f"confusion_{_slug(task)}.png")))
    return figures


def _mean_confusions(recs: Sequence[RunRecord], split: str, k: int) -> tuple[dict[str, Any], dict[str, int]]:
    """Per method, the confusion matrix (gold x predicted) averaged over its seeds, and the number of seeds."""
    import numpy as np

    mats: dict[str, Any] = {}
    seeds: dict[str, int] = defaultdict(int)
    for r in recs:
        rows = r.predictions(split)
        if not rows:
            continue
        seeds[r.method_label] += 1
        m = mats.setdefault(r.method_label, np.zeros((k, k), dtype=np.float64))
        for row in rows:
            g, p = int(row["gold"]), int(row["pred"])
            if 0 <= g < k and 0 <= p < k:
                m[g, p] += 1
    return {name: m / seeds[name] for name, m in mats.items()}, seeds  # mean over seeds: comparable panels


def _confusion_panel(ax, m, method: str, n_seeds: int, labels: Sequence[str], vmax: float):
    """One method's matrix, with its accuracy in the title and the counts written in when the labels fit."""
    k = len(labels)
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=vmax)
    acc = m.trace() / max(m.sum(), 1)
    seeds_note = f", {n_seeds} seeds" if n_seeds > 1 else ""
    ax.set_title(f"{method}\naccuracy {acc * 100:.1f}{seeds_note}", fontsize=9)
    ax.set_xlabel("predicted")
    if k > 8:
        ax.set_xticks([])
        ax.set_yticks([])
        return im
    names = [str(n)[:10] for n in labels]
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    for i in range(k):
        for j in range(k):
            color = "white" if m[i, j] > vmax / 2 else "black"
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7, color=color)
    return im


def confusion_differences(records: Sequence[RunRecord], fig_dir: Path, k: int = 5) -> list[Figure]:
    """TAT Figure 1 view, one figure per task: each method's confusion matrix minus ``standard``'s (means
    over seeds) on the labels of standard's ``k`` most-confused pairs; blue = fewer examples than standard,
    and those ``k`` cells are outlined, so a method that removes exactly those errors shows blue boxes."""
    from .records import BASELINE, mean_confusions, top_confused_pairs

    plt = _plt()
    figures = []
    for task, recs in _classification_runs_by_task(records):
        names = list(recs[0].config["label_names"])
        split = next(iter(recs[0].splits))
        mats = mean_confusions(recs, split, len(names))
        others = [m for m in method_order(mats) if m != BASELINE]
        pairs = top_confused_pairs(mats[BASELINE][0], k) if BASELINE in mats else []
        if not pairs or not others:
            continue
        labels = list(dict.fromkeys(i for pair in pairs for i in pair))
        diffs = {m: mats[m][0][labels][:, labels] - mats[BASELINE][0][labels][:, labels] for m in others}
        vmax = max(float(abs(d).max()) for d in diffs.values()) or 1.0
        fig, axes = plt.subplots(1, len(others), figsize=(3.6 * len(others) + 0.8, 3.8), squeeze=False)
        for n, (ax, m) in enumerate(zip(axes[0], others)):
            im = _difference_panel(ax, diffs[m], f"{m} − {BASELINE}", [names[i] for i in labels], vmax, n == 0)
            for g, p in pairs:
                ax.add_patch(plt.Rectangle((labels.index(p) - 0.5, labels.index(g) - 0.5), 1, 1, fill=False, lw=1.5))
        axes[0][0].set_ylabel("gold")
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="examples vs standard (mean over seeds)")
        fig.suptitle(
            f"Confusion difference on standard's top-{len(pairs)} confused pairs, {task} ({split})", fontsize=10
        )
        path = _save(fig, fig_dir / f"confusion_difference_{_slug(task)}.png")
        figures.append((f"Confusion difference vs standard: {task} ({split})", path))
    return figures


def _difference_panel(ax, d, title: str, names: Sequence[str], vmax: float, y_names: bool):
    """One method's difference matrix; the gold names only on the first panel, so panels do not overlap."""
    im = ax.imshow(d, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("predicted")
    short = [str(n)[:14] for n in names]
    ax.set_xticks(range(len(names)), short, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), short if y_names else [], fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{d[i, j]:+.1f}" if d[i, j] else "0", ha="center", va="center", fontsize=6)
    return im


# ------------------------------------------------------------------------------------------ sweeps
def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def sweep_points(records: Sequence[RunRecord]) -> dict[tuple[str, str], dict[str, list[tuple[float, float, float]]]]:
    """``(task, x name) -> method -> [(x, clean acc, AUA)]`` for sweeps of one hyper-parameter.

    Runs of the same task and method with attack results are compared. Every numeric method-config
    field and the number of epochs whose value differs among them is a candidate x axis; the runs of
    its sweep are those whose *other* varying values equal their most common value (the default run
    shared by the λ sweep and the epoch sweep belongs to both).
    """
    from collections import Counter

    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.attack:
            groups[(r.task_label, r.method)].append(r)
    out: dict[tuple[str, str], dict[str, list[tuple[float, float, float]]]] = defaultdict(dict)
    for (task, method), recs in groups.items():

        def value(r: RunRecord, key: str) -> Any:
            return r.epochs if key == "epochs" else r.method_config.get(key)

        keys = sorted({k for r in recs for k in r.method_config}) + ["epochs"]
        varying = [
            k for k in keys if len({repr(value(r, k)) for r in recs}) > 1 and all(_numeric(value(r, k)) for r in recs)
        ]
        modal = {k: Counter(repr(value(r, k)) for r in recs).most_common(1)[0][0] for k in varying}
        for xname in varying:
            per_x: dict[float, list[tuple[float, float]]] = defaultdict(list)
            for r in recs:
                if any(repr(value(r, k)) != modal[k] for k in varying if k != xname):
                    continue
                split, m = next(iter(r.attack.items()))
                a = aua(m)
                clean = m.get("acc", m.get("accuracy", r.score(split)))
                if a is not None:
                    per_x[float(value(r, xname))].append((float(clean) if clean is not None else math.nan, a))
            if len(per_x) > 1:
                out[(task, xname)][method] = [
                    (x, _median([c for c, _ in v]), _median([a for _, a in v])) for x, v in sorted(per_x.items())
                ]
    return out


def sweep_figures(records: Sequence[RunRecord], fig_dir: Path) -> list[Figure]:
    plt = _plt()
    figures = []
    for (task, xname), by_method in sorted(sweep_points(records).items()):
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for method in method_order(by_method):
            pts = by_method[method]
            xs = [p[0] for p in pts]
            line = ax.plot(xs, [p[2] * 100 for p in pts], marker="o", label=f"{method} AUA")[0]
            if xname != "epochs":
                ax.plot(
                    xs, [p[1] * 100 for p in pts], marker="s", ls="--", color=line.get_color(), label=f"{method} ACC"
                )
        ax.set_xlabel(xname)
        ax.set_ylabel("accuracy ×100")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        kind = "AUA vs epochs" if xname == "epochs" else f"ACC and AUA vs {xname}"
        ax.set_title(f"{kind}, {task}", fontsize=10)
        figures.append((f"{kind}: {task}", _save(fig, fig_dir / f"sweep_{_slug(task)}_{_slug(xname)}.png")))
    return figures


# ------------------------------------------------------------------------------------------ curves
def epoch_curves(records: Sequence[RunRecord], fig_dir: Path) -> list[Figure]:
    """Dev metric after each epoch (Trainer eval entries of ``log_history.json``), median over seeds."""
    plt = _plt()
    figures = []
    by_task: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    metric_of: dict[str, str] = {}
    for r in records:
        split = next(iter(r.splits), None)
        name = r.metric_name(split) if split else None
        if not name:
            continue
        key = f"eval_{name}"
        for entry in r.log_history:
            if key in entry and "epoch" in entry:
                by_task[r.task_label][r.method_label][round(float(entry["epoch"]), 3)].append(float(entry[key]))
                metric_of[r.task_label] = name
    for task, by_method in sorted(by_task.items()):
        if not any(len(v) > 1 for v in by_method.values()):
            continue  # a single eval point per method is not a curve
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for method in method_order(by_method):
            pts = sorted(by_method[method].items())
            ax.plot([e for e, _ in pts], [_median(v) * 100 for _, v in pts], marker="o", label=method)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"dev {metric_of[task]} ×100")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Dev {metric_of[task]} per epoch, {task}", fontsize=10)
        figures.append((f"Dev metric per epoch: {task}", _save(fig, fig_dir / f"epochs_{_slug(task)}.png")))
    return figures


# ------------------------------------------------------------------------------------------ overhead
def overhead_figures(overheads: Sequence[Any], fig_dir: Path) -> list[Figure]:

    plt = _plt()
    figures = []
    for i, data in enumerate(overheads):
        rows = overhead_rows(data)
        cols = [k for k in (rows[0] if rows else {}) if "ratio" in k and all(_numeric(r.get(k)) for r in rows)]
        if not rows or not cols:
            continue
        methods = [str(r.get("method")) for r in rows]
        fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(methods) * len(cols)), 3.6))
        width = 0.8 / len(cols)
        for j, col in enumerate(cols):
            ax.bar([x + j * width for x in range(len(methods))], [float(r[col]) for r in rows], width, label=col)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks([x + width * (len(cols) - 1) / 2 for x in range(len(methods))], methods, rotation=30, ha="right")
        ax.set_ylabel("ratio vs standard")
        ax.legend(fontsize=8)
        ax.set_title("Cost relative to standard fine-tuning", fontsize=10)
        figures.append(("Overhead", _save(fig, fig_dir / f"overhead_{i}.png")))
    return figures


# ------------------------------------------------------------------------------------------ surfaces
def surface_figures(records: Sequence[RunRecord], fig_dir: Path) -> list[Figure]:
    from . import runs

    by_task: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for r in records:
        for f in r.json_files("surface"):
            by_task[r.task_label].append((f"{r.method_label} (seed {r.seed})", runs.read_json(f)))
    figures = []
    for task, items in sorted(by_task.items()):
        path = fig_dir / f"surface_{_slug(task)}.png"
        figures.append(
            (f"Training-loss surface: {task}", plot_surfaces(items, path, title=f"Training loss surface, {task}"))
        )
    return figures


def plot_surfaces(items: Sequence[tuple[str, dict[str, Any]]], path: Path, title: str = "") -> Path:
    """3-D surfaces (TAT Figure 3 style), one panel per run, on a shared z range."""
    import numpy as np

    plt = _plt()
    zmin = min(float(np.min(d["loss"])) for _, d in items)
    zmax = max(float(np.max(d["loss"])) for _, d in items)
    fig = plt.figure(figsize=(4.2 * len(items), 3.8))
    for i, (name, d) in enumerate(items):
        ax = fig.add_subplot(1, len(items), i + 1, projection="3d")
        a, b = np.meshgrid(np.asarray(d["alphas"]), np.asarray(d["betas"]), indexing="ij")
        ax.plot_surface(a, b, np.asarray(d["loss"]), cmap="viridis", vmin=zmin, vmax=zmax, linewidth=0)
        ax.set_zlim(zmin, zmax)
        ax.set_xlabel("α")
        ax.set_ylabel("β")
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def all_figures(records: Sequence[RunRecord], overheads: Sequence[Any], fig_dir: str | Path) -> list[Figure]:
    fig_dir = Path(fig_dir)
    return [
        *confusion_matrices(records, fig_dir),
        *confusion_differences(records, fig_dir),
        *sweep_figures(records, fig_dir),
        *epoch_curves(records, fig_dir),
        *overhead_figures(overheads, fig_dir),
        *surface_figures(records, fig_dir),
    ]
