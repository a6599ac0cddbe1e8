"""NLI transfer sets: SNLI (3-way), SciTail (2-way) and HANS (2-way); loaders only.

Label orders, as in each source:

- SNLI: ``entailment, neutral, contradiction`` (the same as MNLI). Pairs without a gold label (``-``
  in the files, ``-1`` on the hub: annotators did not agree) are dropped, as usual for SNLI.
- SciTail: ``entailment, neutral`` (the files say ``entails``; renamed to match MNLI's name).
- HANS: ``entailment, non-entailment``; the ``heuristic`` and ``subcase`` columns are kept for the
  per-heuristic breakdown. HANS has two halves: ``train`` and the evaluation set (split ``validation``).

Local layout (the sources' own files, or the GLUE-style names):

- ``snli/{train,dev,test}.tsv`` or ``snli/snli_1.0_{train,dev,test}.txt`` (tab-separated with a header
  containing ``sentence1``, ``sentence2``, ``gold_label``; GLUE's SNLI folder has the same columns);
- ``scitail/{train,dev,test}.tsv`` or ``scitail/scitail_1.0_{train,dev,test}.tsv`` (SciTail's
  ``tsv_format``: premise, hypothesis, label; no header);
- ``hans/{train,dev}.tsv`` or ``hans/heuristics_{train,evaluation}_set.txt`` (header with ``gold_label``,
  ``sentence1``, ``sentence2``, ``heuristic``, ``subcase``).

Hub fallbacks: ``stanfordnlp/snli``, ``allenai/scitail`` (``tsv_format``), ``jhu-cogsci/hans``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .base import HubSpec, LocalHubLoader, Rows, Task
from .glue import column, glue_reader, read_tsv

NLI3 = ("entailment", "neutral", "contradiction")


def drop_unlabelled(task: Task, rows: Rows, split: str) -> Rows:
    """Drop SNLI pairs without a gold label (``-`` / ``-1``)."""
    keep = [i for i, y in enumerate(rows["label"]) if str(y).strip() not in ("-", "-1", "")]
    return {k: ([v[i] for i in keep] if v is not None else None) for k, v in rows.items()}


def read_scitail(path: Path, split: str) -> Rows:
    """SciTail ``tsv_format``: premise, hypothesis, label (``entails`` / ``neutral``), no header."""
    frame = read_tsv(path, header=False)
    if frame.shape[1] != 3:
        raise UsageError(
            f"{path}: expected 3 tab-separated columns (premise, hypothesis, label), got {frame.shape[1]}"
        )
    if list(frame.iloc[0]) == ["premise", "hypothesis", "label"]:
        frame = frame.iloc[1:]
    labels = ["entailment" if y == "entails" else y for y in frame[2]]
    return {"text_a": list(frame[0]), "text_b": list(frame[1]), "label": labels}


def read_hans(path: Path, split: str) -> Rows:
    frame = read_tsv(path)
    return {
        "text_a": column(frame, ("sentence1",), path),
        "text_b": column(frame, ("sentence2",), path),
        "label": column(frame, ("gold_label", "label"), path),
        "heuristic": column(frame, ("heuristic",), path),
        "subcase": column(frame, ("subcase",), path),
    }


_S12 = ("sentence1", "sentence2")

SNLI = Task(
    name="snli",
    label_names=NLI3,
    metric="accuracy",
    pair=True,
    text_fields=_S12,
    eval_splits=("test",),
    loader=LocalHubLoader(
        folder="snli",
        files={
            s: (f"{f}.tsv", f"snli_1.0_{f}.txt")
            for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))
        },
        read=glue_reader((("sentence1",), ("sentence2",)), ("gold_label",)),
        hub=HubSpec("stanfordnlp/snli", columns=("premise", "hypothesis")),
        post=drop_unlabelled,
    ),
    description="SNLI 3-way entailment on image captions (transfer set for MNLI models)",
)
SCITAIL = Task(
    name="scitail",
    label_names=("entailment", "neutral"),
    metric="accuracy",
    pair=True,
    text_fields=("premise", "hypothesis"),
    eval_splits=("test",),
    loader=LocalHubLoader(
        folder="scitail",
        files={
            s: (f"{f}.tsv", f"scitail_1.0_{f}.tsv")
            for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))
        },
        read=read_scitail,
        hub=HubSpec(
            "allenai/scitail", "tsv_format", columns=("premise", "hypothesis"), rename={"entails": "entailment"}
        ),
    ),
    description="SciTail 2-way science entailment (transfer set for NLI models)",
)
HANS = Task(
    name="hans",
    label_names=("entailment", "non-entailment"),
    metric="accuracy",
    pair=True,
    text_fields=_S12,
    eval_splits=("validation",),
    splits=("train", "validation"),
    loader=LocalHubLoader(
        folder="hans",
        files={
            "train": ("train.tsv", "heuristics_train_set.txt"),
            "validation": ("dev.tsv", "heuristics_evaluation_set.txt"),
        },
        read=read_hans,
        hub=HubSpec("jhu-cogsci/hans", columns=("premise", "hypothesis"), keep=("heuristic", "subcase")),
    ),
    description="HANS: NLI examples that defeat the lexical-overlap, subsequence and constituent heuristics",
)

NLI_TASKS = (SNLI, SCITAIL, HANS)
