"""Paired significance tests between two runs evaluated on the same examples (CAT Tables 3-5).

* Accuracy: McNemar's test on the discordant pairs (A right / B wrong vs A wrong / B right). With fewer
  than 25 discordant pairs the exact two-sided binomial test (``scipy.stats.binomtest``) is used, otherwise
  the chi-square statistic with Edwards' continuity correction ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of
  freedom (the correction is clamped at 0, so ``b == c`` gives p = 1).
* F1, MCC, Pearson, Spearman (metrics that are not sums over examples): Fisher's paired approximate
  randomization test. Each shuffle swaps the two systems' predictions of each example with probability 1/2;
  ``p = (#{|Δ_shuffled| >= |Δ_observed|} + 1) / (n + 1)`` (Noreen 1989), seeded, so it is reproducible.

The named metrics (``accuracy``, ``f1``, ``mcc``, ``pearson``, ``spearman``) are computed for a whole
block of shuffles at once with NumPy, in agreement with :func:`advtune.evaluation.metrics.compute_metrics`
(tested); any other ``metric_fn`` callable is called once per shuffle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

EXACT_BELOW = 25
"""McNemar: use the exact binomial test below this many discordant pairs."""

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def discordant_pairs(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[int, int]:
    """``(A right & B wrong, A wrong & B right)``."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise UsageError(f"McNemar needs two equally long 1-d vectors, got shapes {a.shape} and {b.shape}")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[float, float]:
    """McNemar's test for paired correctness vectors: ``(statistic, p)``.

    Exact (statistic = the smaller discordant count, two-sided binomial p) below :data:`EXACT_BELOW`
    discordant pairs, chi-square with continuity correction otherwise. No discordant pair: ``(0.0, 1.0)``.
    """
    from scipy.stats import binomtest, chi2

    b, c = discordant_pairs(correct_a, correct_b)
    n = b + c
    if n == 0:
        return 0.0, 1.0
    if n < EXACT_BELOW:
        k = min(b, c)
        return float(k), float(min(1.0, binomtest(k, n, 0.5, alternative="two-sided").pvalue))
    stat = max(abs(b - c) - 1, 0) ** 2 / n
    return float(stat), float(chi2.sf(stat, 1))


# ------------------------------------------------------------------ metrics over blocks of shuffles
def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    num = (xc * yc).sum(axis=1)
    den = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=-1))
    out = np.zeros(x.shape[0])
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return np.clip(out, -1.0, 1.0)


def _block_metric(name: str, preds: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """``name`` of each row of ``preds`` ``(S, N)`` against ``gold`` ``(N,)``, as compute_metrics defines it."""
    if name == "accuracy":
        return (preds == gold).mean(axis=1)
    if name == "f1":  # positive class 1, zero_division = 0
        tp = ((preds == 1) & (gold == 1)).sum(axis=1)
        fp = ((preds == 1) & (gold != 1)).sum(axis=1)
        fn = ((preds != 1) & (gold == 1)).sum(axis=1)
        den = 2 * tp + fp + fn
        return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
    if name == "mcc":  # multi-class MCC (Gorodkin), as sklearn.metrics.matthews_corrcoef
        classes = np.union1d(np.unique(gold), np.unique(preds))
        s = float(gold.shape[0])
        t = np.array([(gold == k).sum() for k in classes], dtype=np.float64)
        p = np.stack([(preds == k).sum(axis=1) for k in classes], axis=1).astype(np.float64)
        c = (preds == gold).sum(axis=1).astype(np.float64)
        cov_ytyp = c * s - p @ t
        den = np.sqrt((s * s - (p * p).sum(axis=1)) * (s * s - (t * t).sum()))
        return np.where(den > 0, cov_ytyp / np.where(den > 0, den, 1.0), 0.0)
    if name == "pearson":
        return _rowwise_pearson(preds.astype(np.float64), gold.astype(np.float64))
    if name == "spearman":
        from scipy.stats import rankdata

        return _rowwise_pearson(rankdata(preds, axis=1), rankdata(gold))
    raise KeyError(name)


BLOCK_METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")


def paired_randomization(
    preds_a: Sequence,
    preds_b: Sequence,
    labels: Sequence,
    metric_fn: MetricFn | str,
    n: int = 10000,
    seed: int = 0,
    block: int = 500,
) -> float:
    """Fisher's paired approximate randomization test of ``metric(A) - metric(B)``; returns the p-value.

    Args:
        preds_a, preds_b (`array-like`): the two systems' predictions of the same examples, same order.
        labels (`array-like`): the gold labels.
        metric_fn (`callable` or `str`): ``metric_fn(preds, labels) -> float``, or one of
            ``accuracy``, ``f1``, ``mcc``, ``pearson``, ``spearman`` (vectorised over shuffles).
        n (`int`, *optional*, defaults to `10000`): number of shuffles.
        seed (`int`, *optional*, defaults to `0`): seed of the swap draws.
        block (`int`, *optional*, defaults to `500`): shuffles evaluated at once by the named metrics.
    """
    a, b, y = np.asarray(preds_a), np.asarray(preds_b), np.asarray(labels)
    if not (a.shape == b.shape == y.shape) or a.ndim != 1:
        raise UsageError(
            f"randomization test needs three equally long 1-d vectors, got {a.shape}, {b.shape}, {y.shape}"
        )
    if n < 1:
        raise UsageError(f"the number of shuffles must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    if isinstance(metric_fn, str):
        if metric_fn not in BLOCK_METRICS:
            raise UsageError(
                f"unknown metric '{metric_fn}' (choose from {', '.join(BLOCK_METRICS)} or pass a callable)"
            )
        name = metric_fn

        def many(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
            return _block_metric(name, pa, y) - _block_metric(name, pb, y)
    else:
        fn = metric_fn

        def many(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
            return np.array([fn(ra, y) - fn(rb, y) for ra, rb in zip(pa, pb)])

    observed = abs(float(many(a[None], b[None])[0]))
    tol = 1e-12 * max(1.0, observed)  # float noise must not turn a tie into a miss
    hits, done = 0, 0
    from tqdm.auto import tqdm

    with tqdm(total=n, desc="randomization", unit="shuffle", disable=n < 2000 or block >= n) as bar:
        while done < n:
            m = min(block, n - done)
            swap = rng.random((m, a.shape[0])) < 0.5
            pa, pb = np.where(swap, b, a), np.where(swap, a, b)
            hits += int(np.sum(np.abs(many(pa, pb)) >= observed - tol))
            done += m
            bar.update(m)
    return (hits + 1) / (n + 1)


# ------------------------------------------------------------------ across seeds
EXACT_SEEDS_UP_TO = 16
"""Cross-seed test: enumerate every sign pattern up to this many seeds (2^16 patterns), sample above."""


def seed_randomization(values_a: Sequence[float], values_b: Sequence[float], n: int = 10000, seed: int = 0) -> float:
    """Paired randomization test across seeds: is the mean per-seed difference ``b - a`` different from 0?

    Under the null hypothesis each seed's difference is as likely to have either sign, so the p-value is the
    share of sign patterns whose mean absolute difference is at least the observed one (exact enumeration
    up to :data:`EXACT_SEEDS_UP_TO` seeds). Per-seed McNemar tests ask whether one run beats another on the
    same examples; this asks whether the gain survives the choice of seed. Note the floor: with k seeds the
    smallest two-sided p is ``2 / 2**k`` (0.25 for 3 seeds), so fewer than 6 seeds can never reach p < 0.05.
    """
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise UsageError(f"the cross-seed test needs two equally long, non-empty lists, got {a.shape} and {b.shape}")
    d = b - a
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if d.size <= EXACT_SEEDS_UP_TO:
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        return float(np.mean(np.abs(signs @ d) / d.size >= observed - tol))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, d.size))
    return float((np.sum(np.abs(signs @ d) / d.size >= observed - tol) + 1) / (n + 1))


# ------------------------------------------------------------------ two run folders
def _eval_splits(run: Path) -> dict[str, Path]:
    if not run.is_dir():
        raise UsageError(f"run folder {run} does not exist")
    folders = {p.parent.name: p for p in sorted((run / "eval").glob("*/predictions.jsonl"))}
    if not folders:
        raise UsageError(f"run {run} has no evaluated split (no eval/<task>.<split>/predictions.jsonl)")
    return folders


def _pick(folders: dict[str, Path], wanted: str) -> str | None:
    if wanted in folders:
        return wanted
    hits = [k for k in folders if k.split(".", 1)[-1] == wanted]
    return hits[0] if len(hits) == 1 else None


def _metric_kind(run: Path, split: str) -> str:
    """The metric kind of a split: from its metrics.json keys, else the run's task metric, else accuracy."""
    from ..runs import read_json

    metrics_file = run / "eval" / split / "metrics.json"
    keys = set(read_json(metrics_file)) if metrics_file.is_file() else set()
    for kind, key in (("f1_accuracy", "f1"), ("mcc", "mcc"), ("pearson_spearman", "pearson")):
        if key in keys:
            return kind
    if keys & {"accuracy"}:
        return "accuracy"
    config = run / "run_config.json"
    if config.is_file():
        return str(read_json(config).get("task", {}).get("metric") or "accuracy")
    return "accuracy"


def _aligned(path_a: Path, path_b: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ..runs import read_jsonl

    rows = []
    for path in (path_a, path_b):
        by_idx: dict[Any, dict] = {}
        for r in read_jsonl(path):
            if r["idx"] in by_idx:
                raise UsageError(f"{path}: example idx {r['idx']} appears twice")
            by_idx[r["idx"]] = r
        rows.append(by_idx)
    if set(rows[0]) != set(rows[1]):
        only = len(set(rows[0]) ^ set(rows[1]))
        raise UsageError(f"{split}: the two runs were evaluated on different examples ({only} idx not shared)")
    order = sorted(rows[0], key=lambda k: (str(type(k)), k))
    gold_a = np.array([rows[0][k]["gold"] for k in order])
    gold_b = np.array([rows[1][k]["gold"] for k in order])
    if gold_a.shape != gold_b.shape or not np.array_equal(gold_a, gold_b):
        raise UsageError(f"{split}: the two runs have different gold labels for the same examples")
    pred_a = np.array([rows[0][k]["pred"] for k in order])
    pred_b = np.array([rows[1][k]["pred"] for k in order])
    return pred_a, pred_b, gold_a


def compare_runs(
    run_a: str | Path, run_b: str | Path, task_split: str | None = None, shuffles: int = 10000, seed: int = 0
) -> list[dict[str, Any]]:
    """Each metric of both runs on each shared evaluated split, with a paired p-value.

    Args:
        run_a, run_b (`str` or `Path`): run folders (their ``eval/<task>.<split>/predictions.jsonl``).
        task_split (`str`, *optional*): ``task.split`` (``banking77.test-difficult``) or just the split
            name; default: every split both runs were evaluated on.
        shuffles, seed: of the randomization test.

    Returns:
        Rows ``{"split", "metric", "a", "b", "diff" (= b - a), "p_value", "test", "n"}``.
    """
    from .metrics import compute_metrics

    a, b = Path(run_a), Path(run_b)
    folders_a, folders_b = _eval_splits(a), _eval_splits(b)
    if task_split:
        picked = [_pick(folders_a, task_split), _pick(folders_b, task_split)]
        for run, got, folders in ((a, picked[0], folders_a), (b, picked[1], folders_b)):
            if got is None:
                raise UsageError(f"run {run} has no evaluation of '{task_split}' (it has: {', '.join(folders)})")
        if picked[0] != picked[1]:
            raise UsageError(f"'{task_split}' names different evaluations: {picked[0]} vs {picked[1]}")
        splits = [picked[0]]
    else:
        splits = sorted(set(folders_a) & set(folders_b))
        if not splits:
            raise UsageError(f"the runs share no evaluated split ({', '.join(folders_a)} vs {', '.join(folders_b)})")
    table = []
    for split in splits:
        pred_a, pred_b, gold = _aligned(folders_a[split], folders_b[split], split)
        kind = _metric_kind(a, split)
        values_a, values_b = compute_metrics(kind, pred_a, gold), compute_metrics(kind, pred_b, gold)
        for metric in values_a:
            if metric == "accuracy":
                stat, p = mcnemar(pred_a == gold, pred_b == gold)
                k = sum(discordant_pairs(pred_a == gold, pred_b == gold))
                test = f"McNemar {'exact' if k < EXACT_BELOW else 'chi2'} ({k} discordant)"
            else:
                name = metric if metric in BLOCK_METRICS else None
                fn = name or (lambda p, y, m=metric, k=kind: compute_metrics(k, p, y)[m])
                p = paired_randomization(pred_a, pred_b, gold, fn, n=shuffles, seed=seed)
                test = f"randomization ({shuffles} shuffles)"
            table.append(
                {
                    "split": split,
                    "metric": metric,
                    "a": values_a[metric],
                    "b": values_b[metric],
                    "diff": values_b[metric] - values_a[metric],
                    "p_value": p,
                    "test": test,
                    "n": int(gold.shape[0]),
                }
            )
    return table


__all__ = ["EXACT_BELOW", "compare_runs", "discordant_pairs", "mcnemar", "paired_randomization", "seed_randomization"]
