"""Users' own labelled files: csv, tsv or jsonl, with named text and label columns.

``load_file_task`` returns a :class:`~advtune.tasks.base.Task` (named ``file`` unless told otherwise)
and the data with the standard columns. Every problem a user can fix is one-line
:class:`~advtune.errors.UsageError`: a missing or unreadable file, an unknown extension, a missing
column (the message lists the columns there are), an empty text, a label outside the given label set,
a file without rows.

Labels: with ``label_names`` (e.g. the label set of a trained run), each value is matched by name
first and then, if it is an integer, as a label id; anything else is rejected. Without them the label
set is inferred: the sorted distinct values (numbers sorted numerically), or regression when every
label is a number and at least one is not a whole number (a file of 0-5 similarity scores in steps
of 0.2, say). Pass ``regression=True`` to force regression for whole-number scores
(``--task-type regression``), ``regression=False`` to insist on classes (fractional numbers are then
refused). Always refused, naming the first rows: ``nan`` / ``inf`` labels, and a column that mixes
numbers with names while the label set is inferred (a typo such as ``1`` among ``pos``/``neg`` rows
would otherwise become a class of its own).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset

from ..errors import UsageError
from .base import Task, make_dataset

EXTENSIONS = (".csv", ".tsv", ".jsonl")


def _read_table(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise UsageError(f"unsupported file type '{path.suffix or path.name}' for {path}: use .csv, .tsv or .jsonl")
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path)
        frame = pd.read_csv(
            path,
            sep="\t" if suffix == ".tsv" else ",",
            quoting=csv.QUOTE_MINIMAL,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
        )
    except UsageError:
        raise
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path} has no rows") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot read {path}: {first}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.to_dict("records")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UsageError(f"{path} line {number}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise UsageError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def _columns(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    return list(seen)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _infer_labels(values: list[Any]) -> tuple[str, ...] | None:
    """Sorted distinct labels (numerically when all are numbers); ``None`` (regression) for fractional numbers."""
    numbers = [_as_number(v) for v in values]
    if all(n is not None for n in numbers):
        if not all(float(n).is_integer() for n in numbers):
            return None
        return tuple(str(int(n)) for n in sorted(set(numbers)))
    return tuple(sorted({str(v).strip() for v in values}))


def _rows(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:5])
    return f"row{'s' if len(numbers) > 1 else ''} {shown}{', ...' if len(numbers) > 5 else ''}"


def _check_labels(values: list[Any], path: Path, column: str, infer: bool, regression: bool | None) -> None:
    """Refuse labels no task can use; row numbers count data rows from 1, as in the other messages."""
    numbers = [None if isinstance(v, bool) else _parse_float(v) for v in values]
    bad = [i for i, x in enumerate(numbers, start=1) if x is not None and not math.isfinite(x)]
    if bad:
        raise UsageError(f"{path}: label in column '{column}' is nan or inf in {_rows(bad)}")
    if not infer or regression:
        return
    named = [i for i, x in enumerate(numbers, start=1) if x is None]
    numeric = [i for i, x in enumerate(numbers, start=1) if x is not None]
    if named and numeric:
        odd = min(named, numeric, key=len)
        kind = "names" if odd is named else "numbers"
        raise UsageError(
            f"{path}: label column '{column}' mixes numbers and names; the {kind} are in {_rows(odd)} "
            f"(e.g. {values[odd[0] - 1]!r})"
        )
    fractional = [i for i, x in enumerate(numbers, start=1) if x is not None and not float(x).is_integer()]
    if regression is False and fractional:
        raise UsageError(
            f"{path}: labels are not whole numbers in {_rows(fractional)} (e.g. {values[fractional[0] - 1]!r}); "
            "classes need names or whole numbers (--task-type regression for scores)"
        )


def _parse_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _label_ids(values: list[Any], names: tuple[str, ...], path: Path) -> list[int]:
    ids, unknown = [], []
    for value in values:
        text = str(value).strip()
        if text in names:
            ids.append(names.index(text))
            continue
        number = _as_number(value)
        if number is not None and number.is_integer() and str(int(number)) in names:  # "1.0" for name "1"
            ids.append(names.index(str(int(number))))
        elif number is not None and number.is_integer() and 0 <= number < len(names) and not _numeric(names):
            ids.append(int(number))  # a label id for a named label set (e.g. 1 for "positive")
        else:
            unknown.append(text)
    if unknown:
        shown = ", ".join(repr(u) for u in sorted(set(unknown))[:5])
        raise UsageError(
            f"{path}: {len(unknown)} label(s) outside the label set, e.g. {shown}; label set: "
            f"{', '.join(names[:20])}{', ...' if len(names) > 20 else ''}"
        )
    return ids


def _numeric(names: Sequence[str]) -> bool:
    return all(_as_number(n) is not None for n in names)


def _collect_rows(records: list[dict[str, Any]], fields: list[str], label_field: str, path: Path) -> dict[str, list]:
    """Texts and raw labels; an empty text or a missing label is refused with its row number."""
    rows: dict[str, list] = {"text_a": [], "text_b": [], "label": []}
    for number, record in enumerate(records, start=1):
        for key, col in zip(("text_a", "text_b"), fields):
            value = record.get(col)
            if _is_missing(value):
                raise UsageError(f"{path} row {number}: empty text in column '{col}'")
            rows[key].append(str(value))
        value = record.get(label_field)
        if _is_missing(value):
            raise UsageError(f"{path} row {number}: missing label in column '{label_field}'")
        rows["label"].append(value)
    return rows


def load_file_task(
    path: str | Path,
    text_fields: Sequence[str],
    label_field: str,
    label_names: Sequence[str] | None = None,
    name: str | None = None,
    regression: bool | None = None,
) -> tuple[Task, Dataset]:
    """Read a labelled csv / tsv / jsonl file into a task and a standard-column dataset.

    Args:
        path (`str` or `Path`): the file; the extension (``.csv``, ``.tsv``, ``.jsonl``) picks the reader.
        text_fields (`Sequence[str]`): one text column, or two for sentence pairs.
        label_field (`str`): the label column.
        label_names (`Sequence[str]`, *optional*): a fixed label set (e.g. a trained run's); values outside it
            are rejected. Without it the label set is inferred from the file.
        name (`str`, *optional*, defaults to `"file"`): the task's name.
        regression (`bool`, *optional*): force (``True``) or forbid (``False``) a regression task; by default
            decided by the labels (see the module docstring). Ignored when ``label_names`` is given.
    """
    path = Path(path)
    fields = [f.strip() for f in (text_fields or []) if f and f.strip()]
    if len(fields) not in (1, 2):
        raise UsageError(f"--text-fields needs one or two column names (a or a,b), got {list(text_fields or [])}")
    if not label_field or not str(label_field).strip():
        raise UsageError("--label-field is required")
    label_field = str(label_field).strip()
    if not path.is_file():
        raise UsageError(f"data file not found: {path}")
    records = _read_table(path)
    if not records:
        raise UsageError(f"{path} has no rows")
    available = _columns(records)
    for col in (*fields, label_field):
        if col not in available:
            raise UsageError(f"{path}: no column '{col}'; columns are {', '.join(available)}")
    rows = _collect_rows(records, fields, label_field, path)
    _check_labels(rows["label"], path, label_field, infer=label_names is None, regression=regression)
    if label_names is not None:
        names: tuple[str, ...] | None = tuple(str(n) for n in label_names)
        if not names:
            raise UsageError("the label set is empty")
    elif regression:
        names = None
    else:
        names = _infer_labels(rows["label"])
        if names is None and regression is False:
            names = tuple(sorted({str(v).strip() for v in rows["label"]}))
    if names is None:
        bad = [v for v in rows["label"] if _as_number(v) is None]
        if bad:
            raise UsageError(f"{path}: regression labels must be numbers, got {bad[0]!r}")
        labels: list = [float(v) for v in rows["label"]]
    else:
        labels = _label_ids(rows["label"], names, path)
    task = Task(
        name=name or "file",
        label_names=names,
        metric="accuracy" if names is not None else "pearson_spearman",
        pair=len(fields) == 2,
        text_fields=tuple(fields),
        splits=("file",),
        train_split="file",
        eval_splits=("file",),
    )
    if not task.pair:
        del rows["text_b"]
    rows["label"] = labels
    return task, make_dataset(task, rows, convert_labels=False)
