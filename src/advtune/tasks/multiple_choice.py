"""Multiple-choice tasks: each example is a question with k candidate answers, one of them right.

The model is ``AutoModelForMultipleChoice``: the k (question, answer) pairs of an example are encoded
as k sequences, a batch is ``(B, k, L)``, the model flattens it to ``(B * k, L)``, scores every pair
with one logit and the loss is cross-entropy over the k logits (the "ranking loss" of FreeLB A.1).

Where the perturbation lives: a method looks up the word embeddings of ``input_ids`` ``(B, k, L)``,
so δ has shape ``(B, k, L, H)`` with the mask ``(B, k, L)``; the per-example norms of
``advtune.perturbation`` run over dimension 0, i.e. over the **concatenation of all k pairs** of a
question, as FreeLB appendix A.1 prescribes for ARC and CommonsenseQA. Inside the model the embedding
hook sees ``(B * k, L, H)`` and adds δ reshaped to that (row-major, pair j of example b is row
``b * k + j``, the same order the model's own ``view(-1, L)`` uses).

Layouts read (local files or the hub, normalised to columns ``idx, question, context, choices, label``):

* ARC (``allenai/ai2_arc``, configs ARC-Easy / ARC-Challenge) and CommonsenseQA (``tau/commonsense_qa``):
  hub rows ``{question, choices: {text, label}, answerKey}`` or the original jsonl
  ``{question: {stem, choices: [{text, label}]}, answerKey}``;
* RACE (``ehovy/race``): ``{article, question, options, answer}`` (the article is the context);
* user files (jsonl): ``{"question": str, "choices": [str, ...], "answer": int | letter | choice text}``
  with an optional ``"context"``.

Examples with fewer than the task's k choices are padded with empty "filler" choices (ARC has a few
3- and 5-choice questions); fillers are never the answer, and at evaluation their logits are masked
out so they can never be predicted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from .base import TaskPath, logits_of

KIND = "multiple_choice"
FILLER = ""
MASKED_LOGIT = -1e4


# ------------------------------------------------------------------------------------------ records
def _resolve_answer(answer: Any, labels: list[str], choices: list[str], where: str) -> int:
    if isinstance(answer, bool):
        raise UsageError(f"{where}: answer {answer!r} is not an index, a label or a choice text")
    if isinstance(answer, (int, np.integer)):
        if not 0 <= int(answer) < len(choices):
            raise UsageError(f"{where}: answer index {answer} is out of range for {len(choices)} choices")
        return int(answer)
    text = str(answer).strip()
    if text in labels:
        return labels.index(text)
    if text in choices:
        return choices.index(text)
    if text.isdigit() and 0 <= int(text) < len(choices) and not labels:
        return int(text)
    raise UsageError(f"{where}: answer {answer!r} matches no choice label {labels} nor choice text")


def normalize_record(rec: dict[str, Any], where: str = "record") -> dict[str, Any]:
    """One raw row of any supported layout -> ``{question, context, choices, label}``."""
    q = rec.get("question")
    context = str(rec.get("context") or rec.get("article") or rec.get("fact1") or "")
    labels: list[str] = []
    if isinstance(q, dict):  # original ARC / CommonsenseQA jsonl
        question = str(q.get("stem", ""))
        raw = q.get("choices") or []
        choices = [str(c.get("text", "")) for c in raw]
        labels = [str(c.get("label", "")) for c in raw]
    else:
        question = "" if q is None else str(q)
        raw = rec.get("choices", rec.get("options", rec.get("endings")))
        if isinstance(raw, dict):  # hub ARC / CommonsenseQA: {"text": [...], "label": [...]}
            choices = [str(t) for t in raw.get("text", [])]
            labels = [str(x) for x in raw.get("label", [])]
        elif isinstance(raw, (list, tuple)):
            choices = [str(c["text"]) if isinstance(c, dict) else str(c) for c in raw]
            if raw and isinstance(raw[0], dict):
                labels = [str(c.get("label", "")) for c in raw]
            elif rec.get("options") is not None:  # RACE answers are letters
                labels = [chr(ord("A") + i) for i in range(len(choices))]
        else:
            raise UsageError(f"{where}: no choices (expected 'choices' as a list or {{text, label}}, or 'options')")
    if len(choices) < 2:
        raise UsageError(f"{where}: needs at least 2 choices, got {len(choices)}")
    answer = rec.get("answer", rec.get("answerKey", rec.get("label")))
    label = -1 if answer is None or answer == "" else _resolve_answer(answer, labels, choices, where)
    return {"question": question, "context": context, "choices": choices, "label": label}


def _rows_to_dataset(rows: list[dict[str, Any]], num_choices: int | None = None, where: str = "data"):
    from datasets import Dataset

    norm = [normalize_record(r, f"{where} row {i + 1}") for i, r in enumerate(rows)]
    if not norm:
        raise UsageError(f"{where} holds no examples")
    k = num_choices or max(len(r["choices"]) for r in norm)
    for i, r in enumerate(norm):
        if len(r["choices"]) > k:
            raise UsageError(f"{where} row {i + 1}: {len(r['choices'])} choices, more than the task's {k}")
        r["num_real_choices"] = len(r["choices"])
        r["choices"] = r["choices"] + [FILLER] * (k - len(r["choices"]))
    cols = {key: [r[key] for r in norm] for key in ("question", "context", "choices", "label", "num_real_choices")}
    return Dataset.from_dict({"idx": list(range(len(norm))), **cols})


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"data file {path} does not exist")
    rows = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path} line {n} is not valid JSON: {exc.msg}") from exc
    return rows


# ------------------------------------------------------------------------------------------ tasks
@dataclass
class MultipleChoiceTask(TaskPath):
    """A multiple-choice task: the reading interface of ``Task``, its own encoding, collation, model and prediction."""

    name: str
    num_choices: int
    hub: tuple[str, str | None] | None = None  # (dataset id, config)
    folder: str | None = None  # under the data dir
    local_files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> candidate file names
    hub_splits: dict[str, str] = field(default_factory=dict)
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    metric: str = "accuracy"
    kind: str = KIND
    label_names: tuple[str, ...] | None = None
    pair: bool = True
    is_regression: bool = False

    @property
    def num_labels(self) -> int:
        return self.num_choices

    multiple_choice = True
    reads_own_data_file = True

    def encode(self, dataset, tokenizer: Any, max_length: int = 128, desc: str | None = None):
        return encode(dataset, tokenizer, max_length, desc=desc)

    def collator(self, tokenizer: Any, evaluation: bool = False) -> MultipleChoiceCollator:
        """``evaluation``: keep ``num_real_choices`` so prediction can mask the filler choices."""
        return MultipleChoiceCollator(tokenizer, keep_num_real=evaluation)

    def load_model(self, model_name: str | None):
        return load_model(model_name)

    def load_inference_model(self, run_dir: Any, config: dict[str, Any], method_cls: Any) -> tuple[Any, Any]:
        return load_inference_model(run_dir)

    def predict(
        self, model, tokenizer, dataset, max_length: int = 128, batch_size: int = 64, desc: str = "Evaluating"
    ):
        """``(N, k)`` logits, filler choices masked to a large negative value."""
        loader = self.eval_loader(dataset, tokenizer, max_length, batch_size, labels=False)
        return logits_of(model, loader, desc, post=_mask_fillers)

    def needs_two_classes(self) -> bool:
        return False

    def run_record(self) -> dict[str, Any]:
        return {"kind": KIND, "num_choices": self.num_choices}

    def canonical_split(self, split: str) -> str:
        return {"dev": "validation", "val": "validation", "valid": "validation"}.get(split, split)

    def load(self, split: str, data_dir: str | os.PathLike | None = None, data_file: str | None = None):
        """Normalised dataset (``idx, question, context, choices, label, num_real_choices``) of ``split``."""
        split = self.canonical_split(split)
        if data_file:
            return _rows_to_dataset(read_jsonl(data_file), self.num_choices, str(data_file))
        if data_dir and self.folder:
            base = Path(data_dir) / self.folder
            for fname in self.local_files.get(split, (f"{split}.jsonl",)):
                if (base / fname).is_file():
                    return _rows_to_dataset(read_jsonl(base / fname), self.num_choices, str(base / fname))
        if self.hub is None:
            raise UsageError(f"task {self.name}: no local file for split '{split}' and no hub dataset")
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
            where = f"{data_dir}/{self.folder}" if data_dir and self.folder else "--data-dir"
            raise UsageError(
                f"task {self.name}: split '{split}' not found under {where} and the hub is offline "
                f"(HF_HUB_OFFLINE=1); put {self.folder}/{split}.jsonl there or allow hub access"
            )
        from datasets import load_dataset

        try:
            ds = load_dataset(self.hub[0], self.hub[1], split=self.hub_splits.get(split, split))
        except Exception as exc:  # noqa: BLE001 - datasets raises many types; one clear line for the user
            raise UsageError(f"task {self.name}: cannot load {self.hub[0]} split {split}: {exc}") from exc
        return _rows_to_dataset(list(ds), self.num_choices, f"{self.hub[0]}:{split}")


def _arc(name: str, config: str, prefix: str) -> MultipleChoiceTask:
    files = {
        "train": ("train.jsonl", f"{prefix}-Train.jsonl"),
        "validation": ("validation.jsonl", "dev.jsonl", f"{prefix}-Dev.jsonl"),
        "test": ("test.jsonl", f"{prefix}-Test.jsonl"),
    }
    return MultipleChoiceTask(name, 5, ("allenai/ai2_arc", config), name, files, eval_splits=("validation", "test"))


MC_TASKS: dict[str, MultipleChoiceTask] = {
    "arc_easy": _arc("arc_easy", "ARC-Easy", "ARC-Easy"),
    "arc_challenge": _arc("arc_challenge", "ARC-Challenge", "ARC-Challenge"),
    "commonsense_qa": MultipleChoiceTask(
        "commonsense_qa",
        5,
        ("tau/commonsense_qa", None),
        "commonsense_qa",
        {
            "train": ("train.jsonl", "train_rand_split.jsonl"),
            "validation": ("validation.jsonl", "dev.jsonl", "dev_rand_split.jsonl"),
        },
    ),
    "race": MultipleChoiceTask(
        "race",
        4,
        ("ehovy/race", "all"),
        "race",
        {"train": ("train.jsonl",), "validation": ("validation.jsonl", "dev.jsonl"), "test": ("test.jsonl",)},
        eval_splits=("validation", "test"),
    ),
    # user files: --task multiple_choice --train-file a.jsonl [--eval-file b.jsonl]
    "multiple_choice": MultipleChoiceTask("multiple_choice", 0, None, None),
}


def file_task(train_file: str | Path, eval_file: str | Path | None = None, num_choices: int | None = None):
    """Task + datasets for user jsonl files; k = the most choices seen in the training file."""
    train = _rows_to_dataset(read_jsonl(train_file), num_choices, str(train_file))
    k = len(train[0]["choices"])
    task = MultipleChoiceTask("multiple_choice", k, None, None)
    evals = {"validation": _rows_to_dataset(read_jsonl(eval_file), k, str(eval_file))} if eval_file else {}
    return task, train, evals


def is_multiple_choice(task: Any) -> bool:
    return getattr(task, "kind", None) == KIND


# ------------------------------------------------------------------------------------------ encoding
def encode(dataset, tokenizer: Any, max_length: int = 128, desc: str | None = None):
    """Tokenise every (question, choice) pair; features are lists of k sequences per example.

    First segment: the context (RACE article, retrieved documents) when there is one, else the
    question; second: ``question + " " + choice`` with a context, else the choice alone. Truncation
    cuts the longest segment first, so a long article is cut before the answer.
    """
    k = len(dataset[0]["choices"])

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        firsts, seconds = [], []
        for q, c, choices in zip(batch["question"], batch["context"], batch["choices"]):
            for choice in choices:
                firsts.append(c if c else q)
                seconds.append(f"{q} {choice}".strip() if c else choice)
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
        out = {key: [vals[i : i + k] for i in range(0, len(vals), k)] for key, vals in enc.items()}
        out["labels"] = batch["label"]
        return out

    keep = [c for c in dataset.column_names if c in ("idx", "num_real_choices")]
    drop = [c for c in dataset.column_names if c not in keep]
    return dataset.map(
        tokenize, batched=True, remove_columns=drop, desc=desc or "Tokenizing", load_from_cache_file=False
    )


class MultipleChoiceCollator:
    """Pads the B*k sequences of a batch together and returns ``(B, k, L)`` tensors (+ ``labels``)."""

    def __init__(self, tokenizer: Any, keep_num_real: bool = False) -> None:
        self.tokenizer = tokenizer
        self.keep_num_real = keep_num_real

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features[0]]
        b, k = len(features), len(features[0]["input_ids"])
        flat = [{n: f[n][j] for n in names} for f in features for j in range(k)]
        batch = self.tokenizer.pad(flat, padding=True, return_tensors="pt")
        batch = {n: v.view(b, k, -1) for n, v in batch.items() if n in names}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        if self.keep_num_real and "num_real_choices" in features[0]:
            batch["num_real_choices"] = torch.tensor([int(f["num_real_choices"]) for f in features])
        return batch


def collator(tokenizer: Any) -> MultipleChoiceCollator:
    return MultipleChoiceCollator(tokenizer)


# ------------------------------------------------------------------------------------------ model + eval
def load_model(name_or_path: str | None = None, **kwargs: Any):
    """``AutoModelForMultipleChoice`` (one logit per (question, choice) pair)."""
    from transformers import AutoModelForMultipleChoice

    from ..modeling import _first_line, resolve_model_path

    path = resolve_model_path(name_or_path)
    kwargs.setdefault("ignore_mismatched_sizes", True)  # a classifier checkpoint's head is replaced by a new one
    try:
        return AutoModelForMultipleChoice.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load a multiple-choice model from '{name_or_path}': {_first_line(exc)} "
            "(decoder-only families have no multiple-choice head in transformers)"
        ) from exc


def predict(model, tokenizer, dataset, max_length: int = 128, batch_size: int = 64, desc: str = "Evaluating"):
    """``(N, k)`` logits, filler choices masked to a large negative value (any multiple-choice task)."""
    return MultipleChoiceTask("multiple_choice", 0).predict(model, tokenizer, dataset, max_length, batch_size, desc)


def _mask_fillers(logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
    """Filler choices (beyond an example's ``num_real_choices``) can never be predicted."""
    real = extra.get("num_real_choices")
    if real is None:
        return logits
    filler = torch.arange(logits.shape[1])[None, :] >= real[:, None]
    return logits.masked_fill(filler, MASKED_LOGIT)


__all__ = [
    "KIND",
    "MC_TASKS",
    "MultipleChoiceCollator",
    "MultipleChoiceTask",
    "collator",
    "encode",
    "file_task",
    "is_multiple_choice",
    "load_model",
    "normalize_record",
    "predict",
]


# ------------------------------------------------------------------------------------------ pipeline glue
def data_dir_or_env(data_dir: str | None) -> str | None:
    return data_dir or os.environ.get("ADVTUNE_DATA_DIR") or None


def load_splits(task_args: Any) -> tuple[MultipleChoiceTask, Any, dict[str, Any]]:
    """``(task, train, {split: eval})`` for ``TaskArguments`` naming a multiple-choice task."""
    if task_args.task == "multiple_choice":
        if not task_args.train_file:
            raise UsageError("--task multiple_choice needs --train-file (jsonl: question, choices, answer)")
        task, train, evals = file_task(task_args.train_file, task_args.eval_file)
    else:
        task = MC_TASKS[task_args.task]
        ddir = data_dir_or_env(task_args.data_dir)
        train = task.load(task.train_split, ddir)
        splits = [s.strip() for s in (task_args.eval_splits or "").split(",") if s.strip()] or list(task.eval_splits)
        evals = {s: task.load(s, ddir) for s in splits}
    if task_args.max_eval_samples:
        evals = {s: d.select(range(min(len(d), task_args.max_eval_samples))) for s, d in evals.items()}
    return task, train, evals


def run_task(task_config: dict[str, Any]) -> MultipleChoiceTask:
    """The task of a finished run from its ``run_config.json`` ``task`` entry."""
    name = task_config["name"]
    if name in MC_TASKS and name != "multiple_choice":
        return MC_TASKS[name]
    return MultipleChoiceTask("multiple_choice", int(task_config.get("num_choices") or 0), None, None)


def load_inference_model(run_dir: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    return AutoModelForMultipleChoice.from_pretrained(run_dir), AutoTokenizer.from_pretrained(run_dir)
