"""The "difficult" test subsets of the intent benchmarks (CAT, Pan et al. 2022, after Qi et al. 2021).

CAT (section "Intent Classification Results") describes them as: "constructed by comparing the TF-IDF
vector of each test example to that of the training examples for a given intent. The test examples that
are most dissimilar to the corresponding training examples are selected". Qi et al.'s released subsets
are not available here, so we rebuild them from that description:

* one TF-IDF model (scikit-learn defaults: lower-cased word unigrams, smoothed idf, L2-normalised rows)
  is fitted on the **training** texts, so the vocabulary and idf weights are those a model sees in training;
* a test example's similarity is the cosine between its vector and the vectors of the training examples
  **of its own (gold) intent**, reduced by ``max`` (default: the nearest training paraphrase; an example
  is difficult when not even one training example of its intent is lexically close), ``mean`` (average
  over the intent's examples) or ``centroid`` (cosine with the intent's mean vector, the form CAT used
  for its sentence-encoder variant). The papers do not say which reduction; ``max`` is our choice;
* the ``size`` least similar test examples form the subset (Table 2: CLINC 750, BANKING 770, HWU 620;
  the intent tasks pass these sizes, ``advtune.tasks.intent.DIFFICULT_SIZES``);
  ties are broken by ``idx`` and similarities are rounded to 1e-9 first, so the subset is deterministic.

An intent with no training example gives its test examples similarity 0 (most difficult).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import numpy as np
from datasets import Dataset

from ..errors import UsageError

Reduce = Literal["max", "mean", "centroid"]
REDUCTIONS = ("max", "mean", "centroid")


def intent_similarity(
    train_texts: Sequence[str],
    train_labels: Sequence,
    test_texts: Sequence[str],
    test_labels: Sequence,
    reduce: Reduce = "max",
) -> np.ndarray:
    """TF-IDF cosine similarity of each test text to the training texts of its own label, shape ``(n_test,)``."""
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown reduce={reduce!r} (choose from {', '.join(REDUCTIONS)})")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    vectorizer = TfidfVectorizer()
    try:
        train_x = vectorizer.fit_transform(list(train_texts))
    except ValueError as exc:  # empty vocabulary
        raise UsageError(f"cannot build TF-IDF vectors from the training texts: {exc}") from None
    test_x = vectorizer.transform(list(test_texts))
    rows_by_label: dict[object, list[int]] = defaultdict(list)
    for i, y in enumerate(train_labels):
        rows_by_label[y].append(i)
    tests_by_label: dict[object, list[int]] = defaultdict(list)
    for i, y in enumerate(test_labels):
        tests_by_label[y].append(i)
    sims = np.zeros(len(test_texts), dtype=np.float64)
    for y, test_rows in tests_by_label.items():
        train_rows = rows_by_label.get(y)
        if not train_rows:
            continue
        ref = train_x[train_rows]
        if reduce == "centroid":
            ref = normalize(np.asarray(ref.mean(axis=0)))
            scores = np.asarray(test_x[test_rows] @ ref.T).ravel()
        else:
            matrix = (test_x[test_rows] @ ref.T).toarray()
            scores = matrix.max(axis=1) if reduce == "max" else matrix.mean(axis=1)
        sims[test_rows] = scores
    return sims


def difficult_subset(
    train_ds: Dataset,
    test_ds: Dataset,
    size: int,
    text_column: str = "text_a",
    label_column: str = "label",
    reduce: Reduce = "max",
) -> Dataset:
    """The ``size`` test examples least similar (TF-IDF) to the training examples of their intent.

    Args:
        train_ds (`datasets.Dataset`): the training split (columns ``text_column``, ``label_column``).
        test_ds (`datasets.Dataset`): the test split; an ``idx`` column breaks ties (row order otherwise).
        size (`int`): number of examples to keep (CAT Table 2: CLINC 750, BANKING 770, HWU 620).
        text_column (`str`, *optional*, defaults to `"text_a"`): the utterance column.
        label_column (`str`, *optional*, defaults to `"label"`): the intent column.
        reduce (`str`, *optional*, defaults to `"max"`): ``max``, ``mean`` or ``centroid`` (module docstring).

    Returns:
        `datasets.Dataset`: the chosen rows of ``test_ds``, in their original order, same columns.
    """
    for name, ds in (("training", train_ds), ("test", test_ds)):
        missing = [c for c in (text_column, label_column) if c not in ds.column_names]
        if missing:
            raise UsageError(f"the {name} set has no column {missing[0]!r} (columns: {', '.join(ds.column_names)})")
    if not 0 < size <= len(test_ds):
        raise UsageError(f"difficult subset size {size} must be between 1 and the test set size {len(test_ds)}")
    sims = intent_similarity(
        train_ds[text_column], train_ds[label_column], test_ds[text_column], test_ds[label_column], reduce
    )
    ids = test_ds["idx"] if "idx" in test_ds.column_names else list(range(len(test_ds)))
    order = sorted(range(len(test_ds)), key=lambda i: (round(float(sims[i]), 9), ids[i], i))
    return test_ds.select(sorted(order[:size]))


__all__ = ["REDUCTIONS", "difficult_subset", "intent_similarity"]
