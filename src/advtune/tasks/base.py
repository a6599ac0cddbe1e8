"""The :class:`Task` record and the shared "local files first, then the HF hub" loading logic.

Every task loads into the same standard columns so the rest of the package never sees a dataset's
own column names:

- ``idx`` (`int`): the example's position in its split (or the source's own index when it has one);
- ``text_a`` (`str`): the (first) text;
- ``text_b`` (`str`): the second text, pair tasks only;
- ``label``: the class id in ``Task.label_names`` order (`int`), or the score (`float`) for regression.
  Splits whose gold labels are not published (GLUE test sets) carry ``-1``, as on the hub.

A task's ``loader`` is any callable ``loader(task, split, data_dir, data_file) -> datasets.Dataset``.
Most tasks use :class:`LocalHubLoader`: it reads the split's file under ``data_dir`` (layout of the
shared data folder, see ``docs/data.md``) and otherwise goes to the hub through
:func:`datasets.load_dataset`, failing fast with a one-line :class:`~advtune.errors.UsageError` when
the hub is switched off (``HF_HUB_OFFLINE=1``) and nothing is local.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value

from ..errors import UsageError

#: Other spellings accepted for split names (the GLUE files call the validation split "dev").
SPLIT_ALIASES = {
    "dev": "validation",
    "val": "validation",
    "valid": "validation",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
}

#: ``(task, split, data_dir, data_file) -> Dataset`` with the standard columns.
Loader = Callable[["Task", str, "Path | None", "Path | None"], Dataset]

#: Raw rows produced by a file reader: ``text_a``, ``text_b`` (pair tasks), ``label`` (raw values), ``idx``
#: and any extra columns worth keeping (e.g. HANS's ``heuristic``).
Rows = dict[str, list]


class TaskPath:
    """How a task's examples become model inputs and its model's outputs become predictions.

    Why on the task: single-text, pair and regression tasks share this default path (sequence
    classification), and :class:`~advtune.tasks.multiple_choice.MultipleChoiceTask` overrides it, so the
    pipeline, the attacks and the loss surface run every kind of task through the same calls instead of
    branching on the kind. Subclasses are dataclasses; this base holds no fields.
    """

    #: whether the model takes (question, choice) pairs grouped per example (adapters cannot wrap those yet)
    multiple_choice = False
    #: whether an evaluation ``--data-file`` is read by the task's own loader (else as a generic labelled file)
    reads_own_data_file = False

    def encode(self, dataset: Dataset, tokenizer: Any, max_length: int = 128, desc: str | None = None) -> Dataset:
        """Tokenised model columns (``input_ids``, ..., ``labels``) plus ``idx``."""
        from ..data import encode

        return encode(dataset, tokenizer, max_length, desc=desc)

    def collator(self, tokenizer: Any, evaluation: bool = False) -> Callable:
        """Pads a list of encoded examples into a batch (``evaluation``: keep what prediction needs)."""
        from ..data import collator

        return collator(tokenizer)

    def eval_loader(self, dataset: Dataset, tokenizer: Any, max_length: int, batch_size: int, labels: bool = True):
        """The one evaluation data loader (prediction, embedding-space attacks, loss surface): in order, no idx."""
        from torch.utils.data import DataLoader

        encoded = self.encode(dataset, tokenizer, max_length, desc="Tokenizing")
        drop = ("idx",) if labels else ("idx", "labels")
        cols = [c for c in encoded.column_names if c not in drop]
        return DataLoader(
            encoded.select_columns(cols), batch_size=batch_size, collate_fn=self.collator(tokenizer, evaluation=True)
        )

    def load_model(self, model_name: str | None):
        """The model to fine-tune, with this task's head."""
        from ..modeling import load_model

        labels = list(self.label_names) if self.label_names else None
        return load_model(model_name, num_labels=self.num_labels, regression=self.is_regression, label_names=labels)

    def load_inference_model(self, run_dir: Path, config: dict[str, Any], method_cls: Any) -> tuple[Any, Any]:
        """A finished run's model and tokenizer (the method knows how its inference model was saved)."""
        return method_cls.load_inference_model(run_dir, config)

    def predict(
        self, model, tokenizer, dataset, max_length: int = 128, batch_size: int = 64, desc: str = "Evaluating"
    ):
        """Logits of every example of ``dataset``, in order (plain loop: any model, PEFT ones included)."""
        loader = self.eval_loader(dataset, tokenizer, max_length, batch_size, labels=False)
        return logits_of(model, loader, desc)

    def needs_two_classes(self) -> bool:
        """Whether training data with a single label value is an error (classifiers: yes)."""
        return not self.is_regression

    def run_record(self) -> dict[str, Any]:
        """Extra ``run_config.json`` task fields needed to rebuild the task of a finished run."""
        return {}


def logits_of(model, loader, desc: str, post: Callable | None = None):
    """Float logits of every batch of ``loader`` as one array; ``post(logits, extra)`` sees non-model columns."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    model.eval()
    chunks = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False):
            extra = {k: batch.pop(k) for k in ("num_real_choices",) if k in batch}
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            chunks.append(post(logits, extra) if post is not None else logits)
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 1), dtype=np.float32)


@dataclass(frozen=True)
class Task(TaskPath):
    """A named classification or regression task.

    Args:
        name (`str`): registry key, e.g. ``"sst2"``.
        label_names (`tuple[str, ...]`, *optional*): class names in label-id order; ``None`` for regression.
        metric (`str`): metric kind for :func:`advtune.evaluation.metrics.compute_metrics`.
        pair (`bool`): whether examples are sentence pairs (``text_b`` present).
        text_fields (`tuple[str, ...]`): display names of the source's text column(s), for messages and docs.
        train_split (`str`, *optional*, defaults to `"train"`): split used for training.
        eval_splits (`tuple[str, ...]`, *optional*, defaults to `("validation",)`): splits evaluated after training.
        splits (`tuple[str, ...]`, *optional*): every split :meth:`load` accepts.
        loader (`Callable`, *optional*): ``loader(task, split, data_dir, data_file) -> Dataset``; ``None`` for
            tasks built from a user file (their data comes from :func:`advtune.tasks.files.load_file_task`).
        description (`str`, *optional*): one line for ``--help`` texts and docs.
    """

    name: str
    label_names: tuple[str, ...] | None
    metric: str
    pair: bool
    text_fields: tuple[str, ...]
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    splits: tuple[str, ...] = ("train", "validation", "test")
    loader: Loader | None = field(default=None, compare=False, repr=False)
    description: str = ""

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Output size of the classification head (1 for regression)."""
        return 1 if self.label_names is None else len(self.label_names)

    def canonical_split(self, split: str) -> str:
        """``split`` with aliases resolved (``dev`` -> ``validation``); UsageError for unknown splits."""
        name = SPLIT_ALIASES.get(split, split)
        if name not in self.splits:
            raise UsageError(f"unknown split '{split}' for task '{self.name}'; valid splits: {', '.join(self.splits)}")
        return name

    def load(self, split: str, data_dir: str | Path | None = None, data_file: str | Path | None = None) -> Dataset:
        """Load one split with the standard columns.

        Args:
            split (`str`): one of ``self.splits`` (``dev`` / ``val`` are accepted for ``validation``).
            data_dir (`str` or `Path`, *optional*): folder laid out like the shared data folder.
            data_file (`str` or `Path`, *optional*): read this file (in the task's own local format)
                instead of the split's file under ``data_dir``.
        """
        name = self.canonical_split(split)
        if self.loader is None:
            raise UsageError(f"task '{self.name}' has no loader: its data comes from a file (--data-file)")
        return self.loader(self, name, Path(data_dir) if data_dir else None, Path(data_file) if data_file else None)

    # ------------------------------------------------------------------ label conversion
    def label_id(self, value: Any) -> int | float:
        """Convert one raw label (name, id, or score) to the standard ``label`` value.

        Unknown gold class labels (``-1``, ``""``, ``None``, ``"-"``) become ``-1``; regression scores are
        converted to ``float`` (the hub's unpublished STS-B test scores stay ``-1.0``).
        """
        if self.label_names is None:
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise UsageError(f"task '{self.name}': score {value!r} is not a number") from None
            if not math.isfinite(out):  # a nan score would poison the MSE loss and every correlation
                raise UsageError(f"task '{self.name}': score {value!r} is not a finite number")
            return out
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return -1
        text = str(value).strip()
        if text in self.label_names:
            return self.label_names.index(text)
        if text in ("", "-", "-1"):
            return -1
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and number.is_integer() and 0 <= number < len(self.label_names):
            return int(number)
        raise UsageError(
            f"task '{self.name}': label {value!r} is not in the label set ({', '.join(self.label_names[:10])}"
            f"{', ...' if len(self.label_names) > 10 else ''})"
        )


def make_dataset(task: Task, rows: Rows, convert_labels: bool = True) -> Dataset:
    """Build the standard-column :class:`~datasets.Dataset` from raw rows (labels converted with the task)."""
    n = len(rows["text_a"])
    labels = [task.label_id(v) for v in rows["label"]] if convert_labels else list(rows["label"])
    data: dict[str, list] = {
        "idx": [int(i) for i in rows.get("idx") or range(n)],
        "text_a": [str(t) for t in rows["text_a"]],
    }
    feats = {"idx": Value("int64"), "text_a": Value("string")}
    if task.pair:
        data["text_b"] = [str(t) for t in rows["text_b"]]
        feats["text_b"] = Value("string")
    data["label"] = labels
    feats["label"] = Value("float32") if task.is_regression else Value("int64")
    for key, values in rows.items():
        if key not in ("idx", "text_a", "text_b", "label"):
            data[key] = [str(v) for v in values]
            feats[key] = Value("string")
    return Dataset.from_dict(data, features=Features(feats))


# ---------------------------------------------------------------------- hub access
def hub_offline() -> bool:
    """Whether the hub is switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``), read at call time."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub ships with datasets
        return False


@dataclass(frozen=True)
class HubSpec:
    """Where a task lives on the HF hub and how its columns map to the standard ones.

    Args:
        path (`str`): dataset id for :func:`datasets.load_dataset`.
        name (`str`, *optional*): configuration name.
        columns (`tuple[str, ...]`): source column(s) for ``text_a`` (and ``text_b``).
        label (`str`, *optional*, defaults to `"label"`): source label column.
        splits (`Mapping[str, str]`, *optional*): our split name -> hub split name (default: the same).
        rename (`Mapping[str, str]`, *optional*): hub label name -> our label name (e.g. SciTail "entails").
        keep (`tuple[str, ...]`, *optional*): extra source columns to keep as they are.
    """

    path: str
    name: str | None = None
    columns: tuple[str, ...] = ("sentence",)
    label: str = "label"
    splits: Mapping[str, str] = field(default_factory=dict)
    rename: Mapping[str, str] = field(default_factory=dict)
    keep: tuple[str, ...] = ()

    def load(self, task: Task, split: str) -> Rows:
        import datasets

        hub_split = self.splits.get(split, split)
        try:
            ds = datasets.load_dataset(self.path, self.name, split=hub_split)
        except Exception as err:  # network, missing config, script datasets: all the user can fix is the setup
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise UsageError(
                f"could not load task '{task.name}' ({self.path}{'/' + self.name if self.name else ''}, split "
                f"'{hub_split}') from the hub: {type(err).__name__}: {first}"
            ) from None
        raw = ds[self.label]
        feature = ds.features.get(self.label)
        if hasattr(feature, "int2str"):  # ClassLabel: map through the names, -1 stays unknown
            raw = [feature.int2str(int(v)) if int(v) >= 0 else -1 for v in raw]
        rows: Rows = {
            "idx": list(ds["idx"]) if "idx" in ds.column_names else list(range(len(ds))),
            "text_a": list(ds[self.columns[0]]),
            "label": [self.rename.get(v, v) if isinstance(v, str) else v for v in raw],
        }
        if task.pair:
            rows["text_b"] = list(ds[self.columns[1]])
        for col in self.keep:
            rows[col] = list(ds[col])
        return rows


# ---------------------------------------------------------------------- local first, then the hub
Reader = Callable[[Path, str], Rows]


@dataclass(frozen=True)
class LocalHubLoader:
    """Read ``data_dir/<folder>/<file>`` for the split when it exists, else load the split from the hub.

    Args:
        folder (`str`): sub-folder of ``data_dir``.
        files (`Mapping[str, Sequence[str]]`): split -> candidate file names (first existing one wins).
        read (`Callable[[Path, str], Rows]`): reads one local file (path, split) into raw rows.
        hub (`HubSpec`, *optional*): hub source; ``None`` for data that only exists as local files.
        post (`Callable[[Task, Rows, str], Rows]`, *optional*): filter applied to local and hub rows alike.
    """

    folder: str
    files: Mapping[str, Sequence[str]]
    read: Reader
    hub: HubSpec | None = None
    post: Callable[[Task, Rows, str], Rows] | None = None

    def local_file(self, split: str, data_dir: Path | None) -> Path | None:
        if data_dir is None:
            return None
        for name in self.files.get(split, ()):
            path = data_dir / self.folder / name
            if path.is_file():
                return path
        return None

    def __call__(self, task: Task, split: str, data_dir: Path | None, data_file: Path | None) -> Dataset:
        path = data_file or self.local_file(split, data_dir)
        if data_file is not None and not data_file.is_file():
            raise UsageError(f"data file not found: {data_file}")
        if path is not None:
            rows = read_guarded(self.read, path, split)
        else:
            rows = self._from_hub(task, split, data_dir)
        if self.post is not None:
            rows = self.post(task, rows, split)
        try:
            return make_dataset(task, rows)
        except UsageError as err:
            where = path if path is not None else "the hub"
            raise UsageError(f"{err} (in {where})") from None

    def _from_hub(self, task: Task, split: str, data_dir: Path | None) -> Rows:
        expected = self.files.get(split, (f"{split}.tsv",))[0]
        if data_dir is None:
            place = f"no data folder given (expected <DIR>/{self.folder}/{expected})"
        else:
            place = f"under {data_dir} (expected {data_dir / self.folder / expected})"
        if self.hub is None:
            raise UsageError(
                f"no local data for task '{task.name}' split '{split}': {place}; set --data-dir or ADVTUNE_DATA_DIR "
                "(this data set is not on the hub)"
            )
        if hub_offline():
            raise UsageError(
                f"no local data for task '{task.name}' split '{split}': {place}; set --data-dir or ADVTUNE_DATA_DIR, "
                "or go online for the hub (HF_HUB_OFFLINE is set)"
            )
        return self.hub.load(task, split)


def read_guarded(read: Reader, path: Path, split: str) -> Rows:
    """Run a reader, turning parse and I/O errors into one-line UsageErrors naming the file."""
    try:
        return read(path, split)
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot read {path}: {first}") from None
