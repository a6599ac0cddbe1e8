"""Zero-shot transfer: read a run's class probabilities in the label space of another task.

TAT (arXiv 2104.05847, section 3.3) evaluates MNLI-trained models on SNLI, SciTail, HANS and MedNLI
without further training; SST-2 models are likewise evaluated on the Amazon review domains (books,
dvd, electronics, kitchen). :func:`label_mapping` builds the map from the run's label names and the
evaluation task's, or refuses with a :class:`~advtune.errors.UsageError` when they cannot be matched:

* the same label set (in any order, after normalising spelling: case, ``-``/``_``/spaces, and the
  aliases in :data:`ALIASES`, e.g. ``entails`` = ``entailment``, ``not_entailment`` = ``non-entailment``):
  the probabilities are permuted into the task's label order;
* the documented 3-way → 2-way NLI collapse (:data:`COLLAPSES`): a run over (entailment, neutral,
  contradiction) scores a 2-way task over (entailment, non-entailment) -- HANS, RTE, QNLI -- or over
  (entailment, neutral) -- SciTail, where "neutral" means "not entailed" -- with
  ``P(entailment) = P(entailment)`` and ``P(non-entailment) = P(neutral) + P(contradiction)``;
* regression runs transfer to regression tasks unchanged.

Every map is a 0/1 matrix ``M`` (run labels × task labels) applied as ``probs @ M``, so each row still
sums to one and the prediction is the argmax over the task's labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError

#: Spelling variants mapped to one canonical label name (after lower-casing and ``-``/space -> ``_``).
ALIASES: dict[str, str] = {
    "entails": "entailment",
    "entailed": "entailment",
    "entail": "entailment",
    "not_entailment": "non_entailment",
    "nonentailment": "non_entailment",
    "not_entailed": "non_entailment",
    "non_entailed": "non_entailment",
    "contradictory": "contradiction",
    "neg": "negative",
    "pos": "positive",
}

_NLI3 = frozenset({"entailment", "neutral", "contradiction"})

#: Documented many-to-one maps: (run label set, task label set) -> task label -> run labels summed.
COLLAPSES: dict[tuple[frozenset[str], frozenset[str]], dict[str, tuple[str, ...]]] = {
    (_NLI3, frozenset({"entailment", "non_entailment"})): {
        "entailment": ("entailment",),
        "non_entailment": ("neutral", "contradiction"),
    },
    (_NLI3, frozenset({"entailment", "neutral"})): {  # SciTail: neutral = not entailed
        "entailment": ("entailment",),
        "neutral": ("neutral", "contradiction"),
    },
}


def canonical_label(name: Any) -> str:
    """Normalised label name: lower case, ``-``/spaces -> ``_``, then :data:`ALIASES`."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    return ALIASES.get(key, key)


class LabelMap:
    """``probs over run labels -> probs over task labels`` as a matrix product (see the module docstring)."""

    def __init__(self, matrix: np.ndarray | None, description: str) -> None:
        self.matrix, self.description = matrix, description

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        if self.matrix is None:
            return probs
        if probs.ndim != 2 or probs.shape[1] != self.matrix.shape[0]:
            raise UsageError(f"expected probabilities over {self.matrix.shape[0]} labels, got shape {probs.shape}")
        return probs @ self.matrix

    def __repr__(self) -> str:
        return f"LabelMap({self.description})"


def _names(task: Any) -> Sequence[str] | None:
    if task is None or isinstance(task, (list, tuple)):
        return task
    if isinstance(task, str):
        from ..tasks import get_task

        task = get_task(task)
    return getattr(task, "label_names", None)


def label_mapping(run_label_names: Sequence[str] | None, task: Any) -> LabelMap:
    """The map from a run's label space to ``task``'s (a Task, a task name or a sequence of label names).

    Raises:
        UsageError: when the label spaces cannot be matched (different label sets with no documented
            collapse, a classifier evaluated on a regression task or the reverse, duplicate names).
    """
    target = _names(task)
    task_name = getattr(task, "name", task if isinstance(task, str) else "the task")
    if run_label_names is None or target is None:
        if run_label_names is None and target is None:
            return LabelMap(None, "regression -> regression (identity)")
        kind = "a regression run" if run_label_names is None else "a classification run"
        raise UsageError(f"cannot evaluate {kind} on '{task_name}': one is regression, the other classification")
    run = [canonical_label(n) for n in run_label_names]
    tgt = [canonical_label(n) for n in target]
    if len(set(run)) != len(run) or len(set(tgt)) != len(tgt):
        raise UsageError(
            f"duplicate label names after normalisation: run {list(run_label_names)}, task {list(target)}"
        )
    matrix = np.zeros((len(run), len(tgt)))
    if set(run) == set(tgt):
        for j, name in enumerate(tgt):
            matrix[run.index(name), j] = 1.0
        how = "identity" if run == tgt else "same labels, reordered"
        return LabelMap(matrix, f"{list(run_label_names)} -> {list(target)} ({how})")
    collapse = COLLAPSES.get((frozenset(run), frozenset(tgt)))
    if collapse is None:
        raise UsageError(
            f"cannot map the run's labels {list(run_label_names)} onto '{task_name}' labels {list(target)}: "
            "no shared label set and no documented mapping (see docs/transfer.md)"
        )
    for j, name in enumerate(tgt):
        for source in collapse[name]:
            matrix[run.index(source), j] = 1.0
    parts = ", ".join(f"{t} = {' + '.join(collapse[t])}" for t in tgt)
    return LabelMap(matrix, f"{list(run_label_names)} -> {list(target)} ({parts})")


__all__ = ["ALIASES", "COLLAPSES", "LabelMap", "canonical_label", "label_mapping"]
