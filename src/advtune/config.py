"""Argument dataclasses shared by the CLI and the Python API, and ``--config file.yaml`` handling.

All dataclasses are flat so ``HfArgumentParser`` turns every field into a flag; flags given on the
command line override the YAML file. Training defaults follow the papers (AdamW, weight decay 0.01,
linear schedule, 10% warmup, max length 128, dynamic padding).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments

from .errors import UsageError
from .modeling import DEFAULT_MODEL
from .threads import parse_threads


def _f(default: Any, help: str) -> Any:  # noqa: A002
    return field(default=default, metadata={"help": help})


TASK_TYPES = ("auto", "classification", "regression")


@dataclass
class TaskArguments:
    task: str = _f("sst2", "Task name (sst2, rte, mrpc, cola, stsb, banking77, ...) or 'file' with --train-file.")
    data_dir: str | None = _f(
        None, "Folder laid out like the shared data folder (default: $ADVTUNE_DATA_DIR; else the hub)."
    )
    train_file: str | None = _f(None, "Own labelled training file (csv / tsv / jsonl); sets the task to 'file'.")
    eval_file: str | None = _f(None, "Own labelled evaluation file for --train-file runs.")
    text_fields: str | None = _f(None, "Comma-separated text column(s) of --train-file / --data-file: a or a,b.")
    label_field: str | None = _f(None, "Label column of --train-file / --data-file.")
    max_train_samples: int | None = _f(None, "Train on a seeded random subset of this many examples.")
    max_eval_samples: int | None = _f(None, "Evaluate on the first N examples of each evaluation split.")
    train_fraction_per_label: float | None = _f(None, "Train on this fraction of each label (seeded), e.g. 0.5.")
    max_length: int = _f(128, "Maximum sequence length in tokens (longer inputs are truncated).")
    eval_splits: str | None = _f(None, "Comma-separated evaluation splits (default: the task's own).")
    task_type: str = _f(
        "auto",
        "--train-file labels: auto (whole numbers or names = classes, fractional numbers = regression), "
        "classification or regression.",
    )

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise UsageError(f"invalid --task-type '{self.task_type}' (choose from: {', '.join(TASK_TYPES)})")
        if self.eval_file and not self.train_file:
            raise UsageError("--eval-file needs --train-file")
        if self.max_length <= 0:
            raise UsageError(f"invalid max_length={self.max_length}: must be positive")
        if self.max_eval_samples is not None and self.max_eval_samples <= 0:
            raise UsageError(f"invalid max_eval_samples={self.max_eval_samples}: must be positive")
        if self.max_train_samples is not None and self.max_train_samples <= 0:
            raise UsageError(f"invalid max_train_samples={self.max_train_samples}: must be positive")
        fraction = self.train_fraction_per_label
        if fraction is not None and not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise UsageError(f"invalid train_fraction_per_label={self.train_fraction_per_label}: must be in (0, 1]")
        if self.train_file and self.task != "multiple_choice":  # multiple-choice files: tasks/multiple_choice.py
            self.task = "file"
            if not self.label_field or not self.text_fields:
                raise UsageError("--train-file needs --text-fields and --label-field")


@dataclass
class ModelArguments:
    model: str = _f(
        DEFAULT_MODEL,
        "Local folder, .gguf file or hub id; 'minilm' = the packaged MiniLM-L6-H384, 'smollm2-135m' = SmolLM2-135M.",
    )


@dataclass
class RunArguments:
    method: str = _f(
        "standard", "Training method (standard, fgm, pgd, freeat, freelb, yopo, vat, smart, tat, cat, ...)."
    )
    config: str | None = _f(None, "YAML file with any of these options; command-line flags override it.")
    overwrite: bool = _f(False, "Replace an existing run folder.")
    resume: bool = _f(False, "Continue an interrupted run from its last checkpoint.")


@dataclass
class AdvTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the papers' defaults; every stock option stays usable."""

    output_dir: str | None = _f(None, "Run folder (config, weights, predictions, metrics.json).")
    learning_rate: float = _f(5e-5, "Peak AdamW learning rate (5e-5 suits small encoders such as MiniLM).")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    warmup_steps: float = _f(0.1, "Warmup: a ratio of the total steps when < 1, else a number of steps.")
    per_device_train_batch_size: int = _f(32, "Training batch size per device.")
    per_device_eval_batch_size: int = _f(64, "Evaluation batch size per device.")
    num_train_epochs: float = _f(3.0, "Number of training epochs.")
    logging_steps: float = _f(50, "Log every N steps.")
    save_strategy: str = _f("epoch", "Checkpoint strategy (no / steps / epoch); checkpoints make --resume possible.")
    save_total_limit: int | None = _f(1, "Keep at most this many checkpoints.")
    dataloader_pin_memory: bool = _f(False, "Pin memory in data loaders (useful on GPU only).")
    # The adversarial methods run several forward passes per backward (CAT, VAT/SMART/TAT, PGD) or use
    # modules outside the wrapped forward (CAT's projection head); DDP's unused-parameter search then
    # marks parameters ready twice. Every parameter of a classifier is used in each step, so it is off.
    ddp_find_unused_parameters: bool | None = _f(
        False, "DDP: search for unused parameters (off: every method uses every parameter in each step)."
    )
    # str, not int: a bad value then reaches threads.parse_threads and gives one error line, not argparse's usage
    threads: str | None = _f(
        None, "CPU threads for torch (default: $OMP_NUM_THREADS capped at the cores, else one per core)."
    )

    def __post_init__(self) -> None:
        if not self.output_dir:  # TrainingArguments would silently fall back to ./trainer_output
            raise UsageError("--output-dir is required (the run folder to write)")
        for name in ("learning_rate", "num_train_epochs", "warmup_steps", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UsageError(f"invalid {name}={value}: must be a finite number")
        self.threads = parse_threads(self.threads)  # type: ignore[assignment]
        if self.learning_rate <= 0:
            raise UsageError(f"invalid learning_rate={self.learning_rate}: must be positive")
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 2**32:
                raise UsageError(f"invalid {name}={value}: must be in [0, 2**32)")
        if self.gradient_accumulation_steps <= 0:
            raise UsageError(
                f"invalid gradient_accumulation_steps={self.gradient_accumulation_steps}: must be positive"
            )
        if self.per_device_eval_batch_size <= 0:
            raise UsageError(f"invalid per_device_eval_batch_size={self.per_device_eval_batch_size}")
        if self.num_train_epochs <= 0 and (self.max_steps is None or self.max_steps <= 0):
            raise UsageError(f"invalid num_train_epochs={self.num_train_epochs}: must be positive")
        if self.per_device_train_batch_size <= 0:
            raise UsageError(f"invalid per_device_train_batch_size={self.per_device_train_batch_size}")
        if self.warmup_steps < 0:
            raise UsageError(f"invalid warmup_steps={self.warmup_steps}: must be >= 0")
        try:
            super().__post_init__()
        except ValueError as exc:
            raise UsageError(str(exc).strip().splitlines()[0]) from exc


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config with ``safe_load``; a clear error for missing or malformed files."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"config file {path} is not readable text: {str(exc).splitlines()[0]}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must be a mapping of option: value")
    return data


def yaml_to_argv(data: dict[str, Any]) -> list[str]:
    """Turn a YAML mapping into flags placed *before* the command line, so the command line wins."""
    argv: list[str] = []
    for key, value in data.items():
        flag = f"--{str(key).replace('-', '_')}"
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [flag, *[str(v) for v in value]]
        elif isinstance(value, bool):
            argv += [flag, "true" if value else "false"]
        else:
            argv += [flag, str(value)]
    return argv


def dataclass_values(obj: Any) -> dict[str, Any]:
    """JSON-friendly field values of a dataclass (enums and paths as strings)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if hasattr(v, "value") and not isinstance(v, (int, float, str, bool)):
            v = v.value
        if isinstance(v, Path):
            v = str(v)
        if isinstance(v, (str, int, float, bool, type(None), list, dict)):
            out[f.name] = v
        else:
            out[f.name] = str(v)
    return out
