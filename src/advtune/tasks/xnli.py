"""XNLI: cross-lingual NLI (Conneau et al. 2018), the zero-shot transfer setting of TAT section 3.4.

A model is fine-tuned on one language's NLI data (English in TAT: MNLI, or XNLI's English training
set) and evaluated on the XNLI test sets of all 15 languages; TAT Table 3 reports the accuracy per
language and the average. Tasks:

* ``xnli``: every language (evaluation: per-language accuracy + average, see
  :mod:`advtune.evaluation.crosslingual`);
* ``xnli_<lang>`` (``xnli_en``, ``xnli_fr``, ...): one language, e.g. to train on English only.

Labels: ``entailment, neutral, contradiction`` (the MNLI order, so an MNLI run is evaluated on XNLI
with no label mapping). Rows keep a ``language`` column.

Local files, under ``<data dir>/xnli/`` (first existing wins), one layout for all languages:

* ``{split}.jsonl``: ``{"language", "premise", "hypothesis", "label"}`` (``sentence1`` / ``sentence2`` /
  ``gold_label`` / ``lang`` are accepted too; labels as names or ids);
* ``{split}.tsv`` with a header holding the same names, e.g. the original ``xnli.dev.tsv`` /
  ``xnli.test.tsv`` of XNLI-1.0 (columns ``language``, ``gold_label``, ``sentence1``, ``sentence2``, ...).

Hub fallback: ``facebook/xnli``, one configuration per language (the train split there is MNLI
machine-translated into each language).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .base import LocalHubLoader, Rows, Task

XNLI_LABELS = ("entailment", "neutral", "contradiction")
XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")
"""The 15 languages in the column order of TAT Table 3."""

_KEYS = {
    "language": ("language", "lang"),
    "text_a": ("premise", "sentence1"),
    "text_b": ("hypothesis", "sentence2"),
    "label": ("label", "gold_label"),
}


def _pick(record: dict, field: str, where: str):
    for key in _KEYS[field]:
        if key in record:
            return record[key]
    raise UsageError(f"{where}: no '{_KEYS[field][0]}' field (accepted: {', '.join(_KEYS[field])})")


def read_xnli(path: Path, split: str) -> Rows:
    """A jsonl or tsv file in the layout above -> raw rows with a ``language`` column."""
    if path.suffix == ".jsonl":
        records = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise UsageError(f"{path} line {n} is not valid JSON: {exc.msg}") from None
    else:
        from .glue import read_tsv

        records = read_tsv(path).to_dict("records")
    rows: Rows = {"text_a": [], "text_b": [], "label": [], "language": []}
    for n, rec in enumerate(records, 1):
        where = f"{path} row {n}"
        rows["language"].append(str(_pick(rec, "language", where)))
        rows["text_a"].append(str(_pick(rec, "text_a", where)))
        rows["text_b"].append(str(_pick(rec, "text_b", where)))
        rows["label"].append(_pick(rec, "label", where))
    return rows


@dataclass(frozen=True)
class XnliHub:
    """``facebook/xnli``: one hub configuration per language, concatenated with a ``language`` column."""

    languages: tuple[str, ...]

    def load(self, task: Task, split: str) -> Rows:
        import datasets

        rows: Rows = {"text_a": [], "text_b": [], "label": [], "language": []}
        for lang in self.languages:
            try:
                ds = datasets.load_dataset("facebook/xnli", lang, split=split)
            except Exception as err:  # noqa: BLE001 - one clear line whatever the hub raised
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise UsageError(
                    f"could not load facebook/xnli/{lang} split '{split}' from the hub: {first}"
                ) from None
            rows["text_a"] += list(ds["premise"])
            rows["text_b"] += list(ds["hypothesis"])
            rows["label"] += [int(v) for v in ds["label"]]
            rows["language"] += [lang] * len(ds)
        return rows


def _only(languages: tuple[str, ...]):
    def post(task: Task, rows: Rows, split: str) -> Rows:
        keep = [i for i, lang in enumerate(rows["language"]) if lang in languages]
        if not keep:
            raise UsageError(f"task '{task.name}' split '{split}': no examples in language(s) {', '.join(languages)}")
        return {k: [v[i] for i in keep] for k, v in rows.items()}

    return post


_FILES = {
    "train": ("train.jsonl", "train.tsv"),
    "validation": ("validation.jsonl", "dev.jsonl", "validation.tsv", "dev.tsv", "xnli.dev.tsv"),
    "test": ("test.jsonl", "test.tsv", "xnli.test.tsv"),
}


def xnli_task(languages: tuple[str, ...] = XNLI_LANGUAGES, name: str = "xnli") -> Task:
    """An XNLI task over ``languages`` (all 15 by default)."""
    unknown = [lang for lang in languages if lang not in XNLI_LANGUAGES]
    if unknown:
        raise UsageError(f"unknown XNLI language(s) {', '.join(unknown)}; choose from {', '.join(XNLI_LANGUAGES)}")
    return Task(
        name=name,
        label_names=XNLI_LABELS,
        metric="accuracy",
        pair=True,
        text_fields=("premise", "hypothesis"),
        eval_splits=("test",),
        loader=LocalHubLoader(
            folder="xnli",
            files=_FILES,
            read=read_xnli,
            hub=XnliHub(languages),  # type: ignore[arg-type]  # duck-typed HubSpec (load(task, split) -> Rows)
            post=None if languages == XNLI_LANGUAGES else _only(languages),
        ),
        description=f"XNLI cross-lingual NLI ({', '.join(languages) if len(languages) < 15 else '15 languages'})",
    )


XNLI = xnli_task()
XNLI_TASKS: dict[str, Task] = {
    "xnli": XNLI,
    **{f"xnli_{lang}": xnli_task((lang,), f"xnli_{lang}") for lang in XNLI_LANGUAGES},
}

__all__ = ["XNLI", "XNLI_LABELS", "XNLI_LANGUAGES", "XNLI_TASKS", "read_xnli", "xnli_task"]
