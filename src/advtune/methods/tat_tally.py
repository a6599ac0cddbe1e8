"""TAT's running error tally e(y, y_t) and the target sampler built on it (kept apart from the method file).

``counts`` collects the current epoch's confusion counts (gold × predicted); ``table`` holds the
sampling weights of the last refresh (uniform before the first). Targets are drawn per example from the
gold label's row with the diagonal zeroed, so the gold label is never a target; a row with no errors
(and no smoothing) falls back to uniform over the other labels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError


def sample_targets(table: torch.Tensor, gold: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One target per example, ``P(y_t = j | y) ∝ table[y, j]`` for ``j ≠ y`` (CPU, long)."""
    num = table.shape[0]
    weights = table.double()[gold].clamp_min(0)
    weights[torch.arange(len(gold)), gold] = 0
    empty = weights.sum(-1) <= 0  # a class with no errors yet and no smoothing: uniform over the others
    if empty.any():
        weights[empty] = 1.0
        weights[empty, gold[empty]] = 0
    if num < 2:
        raise UsageError("TAT needs at least two classes to pick a target label")
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def load_confusion(path: str | Path) -> np.ndarray:
    """A square, non-negative confusion matrix from JSON (``[[...]]`` or ``{"matrix": [[...]]}``) or CSV/TSV.

    CSV files may have a header row and a first column of label names; rows are gold labels.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"confusion matrix file {path} does not exist")
    text = p.read_text(encoding="utf-8-sig")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
            rows = data.get("matrix") if isinstance(data, dict) else data
        else:
            delim = "\t" if p.suffix.lower() == ".tsv" else ","
            rows = [r for r in csv.reader(text.splitlines(), delimiter=delim) if r]
            if rows and not all(_is_number(c) for c in rows[0][1:]):
                rows = rows[1:]  # header
            rows = [r[1:] if r and not _is_number(r[0]) else r for r in rows]
        matrix = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, AttributeError) as exc:
        raise UsageError(f"confusion matrix file {path} is not a numeric matrix: {exc}") from exc
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise UsageError(f"confusion matrix in {path} must be square with >= 2 labels, got shape {matrix.shape}")
    if (matrix < 0).any() or not np.isfinite(matrix).all():
        raise UsageError(f"confusion matrix in {path} must hold finite non-negative counts")
    return matrix


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ErrorTally:
    """Confusion counts of the current epoch and the sampling table of the last refresh."""

    def __init__(
        self,
        num_classes: int,
        smoothing: float = 1.0,
        fixed: np.ndarray | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        if fixed is not None and fixed.shape != (num_classes, num_classes):
            need = f"{num_classes}x{num_classes}"
            raise UsageError(f"fixed confusion matrix has shape {fixed.shape}; the task needs {need}")
        self.num_classes, self.smoothing, self.fixed = num_classes, smoothing, fixed is not None
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        self.table = torch.ones(num_classes, num_classes, dtype=torch.float64)  # uniform start
        if fixed is not None:
            self.table = torch.as_tensor(fixed, dtype=torch.float64).clone()
            self._smooth(self.table)
        self.table.fill_diagonal_(0)
        self.value_range = list(value_range) if value_range else None
        self.range_fixed = value_range is not None

    def _smooth(self, m: torch.Tensor) -> None:
        m += self.smoothing
        m.fill_diagonal_(0)

    # ------------------------------------------------------------------ classification
    def observe(self, gold: torch.Tensor, pred: torch.Tensor) -> None:
        idx = gold.long() * self.num_classes + pred.long()
        self.counts += torch.bincount(idx, minlength=self.num_classes**2).reshape(self.counts.shape).double()

    def sample(self, gold: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return sample_targets(self.table, gold.long(), generator)

    def refresh(self) -> None:
        """Epoch end: this epoch's counts (smoothed) become the sampling table; counting restarts."""
        if not self.fixed:
            self.table = self.counts.clone()
            self._smooth(self.table)
        self.counts.zero_()

    # ------------------------------------------------------------------ regression (value bins)
    def bins(self, values: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        width = (hi - lo) / self.num_classes
        return ((values.double() - lo) / width).floor().clamp(0, self.num_classes - 1).long()

    def observe_values(self, gold: torch.Tensor, pred: torch.Tensor) -> None:
        if not self.range_fixed:  # the range of the labels seen so far
            lo, hi = float(gold.min()), float(gold.max())
            old = self.value_range or [lo, hi]
            self.value_range = [min(old[0], lo), max(old[1], hi)]
            if self.value_range[1] <= self.value_range[0]:
                self.value_range[1] = self.value_range[0] + 1.0
        self.observe(self.bins(gold), self.bins(pred))

    def sample_values(self, gold: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Target values: a bin ≠ the gold bin sampled from the tally, then a uniform value inside it."""
        lo, hi = self.value_range
        width = (hi - lo) / self.num_classes
        target_bins = self.sample(self.bins(gold), generator)
        u = torch.rand(len(gold), dtype=torch.float64, generator=generator)
        return (lo + (target_bins.double() + u) * width).float()

    # ------------------------------------------------------------------ logging + state
    def summary(self, label_names: list[str] | None = None, top: int = 3) -> dict[str, float]:
        """This epoch's training error rate and its ``top`` most frequent confusions (shares of all examples)."""
        total = float(self.counts.sum())
        if total == 0:
            return {}
        off = self.counts.clone()
        off.fill_diagonal_(0)
        logs = {"adv/tally_error_rate": float(off.sum()) / total}
        names = label_names if label_names and len(label_names) == self.num_classes else None
        if names is None and self.value_range is not None:
            lo, hi = self.value_range
            w = (hi - lo) / self.num_classes
            names = [f"{lo + i * w:g}-{lo + (i + 1) * w:g}" for i in range(self.num_classes)]
        names = names or [str(i) for i in range(self.num_classes)]
        flat = off.flatten()
        for k in flat.argsort(descending=True)[:top].tolist():
            if flat[k] > 0:
                g, p = divmod(k, self.num_classes)
                logs[f"adv/confusion/{names[g]}->{names[p]}"] = float(flat[k]) / total
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {
            "table": self.table.tolist(),
            "counts": self.counts.tolist(),
            "fixed": self.fixed,
            "value_range": self.value_range,
            "range_fixed": self.range_fixed,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], smoothing: float) -> ErrorTally:
        counts = torch.as_tensor(state["counts"], dtype=torch.float64)
        tally = cls(counts.shape[0], smoothing)
        tally.counts = counts.clone()
        tally.table = torch.as_tensor(state["table"], dtype=torch.float64).clone()
        tally.fixed = bool(state.get("fixed", False))
        tally.value_range = list(state["value_range"]) if state.get("value_range") else None
        tally.range_fixed = bool(state.get("range_fixed", False))
        return tally
