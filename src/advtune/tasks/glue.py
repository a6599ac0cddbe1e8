"""GLUE tasks: local GLUE-format TSV files first, then ``nyu-mll/glue`` on the hub.

Local layout (the GLUE distribution's, one folder per task under the data folder): ``<task>/train.tsv``,
``<task>/dev.tsv``, ``<task>/test.tsv``; MNLI has ``dev_matched.tsv`` / ``dev_mismatched.tsv`` and
``test_matched.tsv`` / ``test_mismatched.tsv``. The files are read with ``quoting=QUOTE_NONE`` as GLUE's
own reader does (its texts contain unbalanced quote characters) and with every value kept as text, so a
sentence such as "NA" stays a sentence. Columns are found by name; CoLA train/dev have no header
(source, label, original mark, sentence); MRPC train/dev start with a UTF-8 BOM; test files without
gold labels load with ``label = -1``, as on the hub.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from ..errors import UsageError
from .base import HubSpec, LocalHubLoader, Rows, Task


def read_tsv(path: Path, header: bool = True, quoting: int = csv.QUOTE_NONE) -> pd.DataFrame:
    """A TSV file as strings (BOM stripped, CRLF line ends and trailing spaces in headers tolerated)."""
    frame = pd.read_csv(
        path,
        sep="\t",
        quoting=quoting,
        header=0 if header else None,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        encoding="utf-8-sig",
    )
    if header:
        frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def column(frame: pd.DataFrame, names: tuple[str, ...], path: Path, required: bool = True) -> list | None:
    """The first of ``names`` present in ``frame`` (``None`` if absent and not required)."""
    for name in names:
        if name in frame.columns:
            return [str(v).strip() for v in frame[name]]
    if required:
        raise UsageError(f"{path}: no column {' / '.join(names)}; columns are {', '.join(map(str, frame.columns))}")
    return None


def glue_reader(text_cols: tuple[tuple[str, ...], ...], label_cols: tuple[str, ...]):
    """Reader for header-ful GLUE TSVs: text columns and label column found by name."""

    def read(path: Path, split: str) -> Rows:
        frame = read_tsv(path)
        rows: Rows = {"text_a": column(frame, text_cols[0], path)}
        if len(text_cols) > 1:
            rows["text_b"] = column(frame, text_cols[1], path)
        labels = column(frame, label_cols, path, required=False)
        rows["label"] = labels if labels is not None else [-1] * len(frame)
        idx = column(frame, ("index", "idx"), path, required=False)
        rows["idx"] = [int(i) for i in idx] if idx is not None and all(i.isdigit() for i in idx) else None
        return rows

    return read


def read_cola(path: Path, split: str) -> Rows:
    """CoLA: train/dev have no header (source, label, mark, sentence); the GLUE test file has one."""
    frame = read_tsv(path, header=False)
    if frame.shape[1] == 2 and frame.iloc[0, 0] == "index":  # test.tsv: index, sentence
        frame = frame.iloc[1:]
        return {"idx": [int(i) for i in frame[0]], "text_a": list(frame[1]), "label": [-1] * len(frame)}
    if frame.shape[1] != 4:
        raise UsageError(
            f"{path}: expected 4 tab-separated columns (source, label, mark, sentence), got {frame.shape[1]}"
        )
    return {"text_a": list(frame[3]), "label": list(frame[1])}


def _glue(
    name: str,
    labels: tuple[str, ...] | None,
    metric: str,
    text_cols: tuple[tuple[str, ...], ...],
    label_cols: tuple[str, ...],
    hub_columns: tuple[str, ...],
    description: str,
    reader=None,
    files: dict | None = None,
    eval_splits: tuple[str, ...] = ("validation",),
) -> Task:
    files = files or {"train": ("train.tsv",), "validation": ("dev.tsv",), "test": ("test.tsv",)}
    loader = LocalHubLoader(
        folder=name,
        files=files,
        read=reader or glue_reader(text_cols, label_cols),
        hub=HubSpec("nyu-mll/glue", name, columns=hub_columns),
    )
    return Task(
        name=name,
        label_names=labels,
        metric=metric,
        pair=len(hub_columns) == 2,
        text_fields=tuple(c[0] for c in text_cols),
        eval_splits=eval_splits,
        splits=tuple(files),
        loader=loader,
        description=description,
    )


_S12 = (("sentence1",), ("sentence2",))
_LABEL = ("label",)

COLA = _glue(
    "cola",
    ("unacceptable", "acceptable"),
    "mcc",
    (("sentence",),),
    _LABEL,
    ("sentence",),
    "CoLA linguistic acceptability (Matthews correlation)",
    reader=read_cola,
)
SST2 = _glue(
    "sst2",
    ("negative", "positive"),
    "accuracy",
    (("sentence",),),
    _LABEL,
    ("sentence",),
    "SST-2 binary sentiment of movie-review phrases",
)
MRPC = _glue(
    "mrpc",
    ("not_equivalent", "equivalent"),
    "f1_accuracy",
    (("#1 String",), ("#2 String",)),
    ("Quality",),
    ("sentence1", "sentence2"),
    "MRPC paraphrase detection (F1 and accuracy)",
)
STSB = _glue(
    "stsb",
    None,
    "pearson_spearman",
    _S12,
    ("score",),
    ("sentence1", "sentence2"),
    "STS-B semantic similarity, regression on a 0-5 score (Pearson and Spearman)",
)
QQP = _glue(
    "qqp",
    ("not_duplicate", "duplicate"),
    "f1_accuracy",
    (("question1",), ("question2",)),
    ("is_duplicate",),
    ("question1", "question2"),
    "QQP duplicate questions (F1 and accuracy)",
)
MNLI = _glue(
    "mnli",
    ("entailment", "neutral", "contradiction"),
    "accuracy",
    _S12,
    ("gold_label", "label"),
    ("premise", "hypothesis"),
    "MultiNLI 3-way entailment (dev matched and mismatched)",
    files={
        "train": ("train.tsv",),
        "validation_matched": ("dev_matched.tsv",),
        "validation_mismatched": ("dev_mismatched.tsv",),
        "test_matched": ("test_matched.tsv",),
        "test_mismatched": ("test_mismatched.tsv",),
    },
    eval_splits=("validation_matched", "validation_mismatched"),
)
QNLI = _glue(
    "qnli",
    ("entailment", "not_entailment"),
    "accuracy",
    (("question",), ("sentence",)),
    _LABEL,
    ("question", "sentence"),
    "QNLI question-answer entailment",
)
RTE = _glue(
    "rte",
    ("entailment", "not_entailment"),
    "accuracy",
    _S12,
    _LABEL,
    ("sentence1", "sentence2"),
    "RTE textual entailment",
)
WNLI = _glue(
    "wnli",
    ("not_entailment", "entailment"),
    "accuracy",
    _S12,
    _LABEL,
    ("sentence1", "sentence2"),
    "WNLI Winograd entailment",
)

GLUE_TASKS = (COLA, SST2, MRPC, STSB, QQP, MNLI, QNLI, RTE, WNLI)
