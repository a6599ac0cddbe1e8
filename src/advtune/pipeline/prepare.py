"""Everything a run needs, validated and loaded in order of cost before the run folder is touched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import adapters
from ..config import AdvTrainingArguments, TaskArguments
from ..errors import UsageError
from ..methods import Method, get_method_class
from ..modeling import load_tokenizer, resolve_model_path
from ..tasks.multiple_choice import MC_TASKS
from ..tasks.multiple_choice import load_splits as load_mc_splits


def load_task(task_args: TaskArguments, label_names: list[str] | None = None):
    """The task object, the training set (subsampled as asked) and the evaluation sets."""
    if task_args.task in MC_TASKS:  # multiple-choice data: questions with candidate answers
        return load_mc_splits(task_args)
    from ..tasks import get_task, resolve_data_dir

    data_dir = resolve_data_dir(task_args.data_dir)
    if task_args.train_file:
        from ..tasks.files import load_file_task

        fields = [f.strip() for f in task_args.text_fields.split(",") if f.strip()]
        regression = {"auto": None, "classification": False, "regression": True}[task_args.task_type]
        task, train_ds = load_file_task(
            task_args.train_file, fields, task_args.label_field, label_names=label_names, regression=regression
        )
        evals = {}
        if task_args.eval_file:
            _, evals["validation"] = load_file_task(
                task_args.eval_file,
                fields,
                task_args.label_field,
                label_names=list(task.label_names or []) or None,
                regression=task.is_regression,
            )
        return task, train_ds, evals
    task = get_task(task_args.task)
    train_ds = task.load(task.train_split, data_dir=data_dir)
    splits = [task.canonical_split(s) for s in _split_list(task_args.eval_splits)] or list(task.eval_splits)
    evals = {s: task.load(s, data_dir=data_dir) for s in splits}
    if task_args.max_eval_samples:
        evals = {s: d.select(range(min(len(d), task_args.max_eval_samples))) for s, d in evals.items()}
    return task, train_ds, evals


def _subsample_train(train_ds, task_args: TaskArguments, seed: int):
    from ..tasks import subsample, subsample_per_label

    if task_args.train_fraction_per_label:
        train_ds = subsample_per_label(train_ds, task_args.train_fraction_per_label, seed)
    if task_args.max_train_samples:
        train_ds = subsample(train_ds, task_args.max_train_samples, seed)
    return train_ds


def _split_list(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


@dataclass
class _Prepared:
    """Everything a run needs, loaded and checked before the run folder is touched."""

    task: Any
    train_ds: Any
    evals: dict
    tokenizer: Any
    model: Any
    method: Method
    adapter_args: adapters.AdapterArguments


def _prepare(task_args, model_args, run_args, training_args, method: Method | None, adapter_args=None) -> _Prepared:
    """Validate and load in order of cost: method, model path, data and labels, tokenizer, model, optimizer."""
    method = method or get_method_class(run_args.method)()
    resolve_model_path(model_args.model)
    task, train_ds, evals = load_task(task_args)
    train_ds = _subsample_train(train_ds, task_args, training_args.seed)
    _check_training_labels(task, train_ds, task_args)
    _check_optimizer(training_args, None)
    _check_max_length(task_args.max_length, model_args.model)
    tokenizer = load_tokenizer(model_args.model)
    from transformers import set_seed

    set_seed(training_args.seed)
    model = task.load_model(model_args.model)
    adapter_args = adapter_args or adapters.AdapterArguments()
    model = adapters.wrap_for_task(model, adapter_args, task.multiple_choice)
    _check_optimizer(training_args, model)
    _pad_left_under_a_prompt(tokenizer, model, adapter_args, method)
    return _Prepared(task, train_ds, evals, tokenizer, model, method, adapter_args)


def _pad_left_under_a_prompt(tokenizer, model, adapter_args, method: Method) -> None:
    """A decoder's classification head reads its last real token, which ``transformers`` finds from
    ``input_ids``; a prompt adapter (``--peft prompt``, PEAFT's prompts) feeds embeddings instead, and the
    head then reads the last position, a padding position of the shorter rows of a right-padded batch.
    Padding on the left makes the last position the last real token; the tokenizer saved in the run
    folder keeps the side, so evaluation and attacks pad alike."""
    from ..pooling import pooling_for

    prompt = adapter_args.peft == "prompt" or method.adds_prompt
    if prompt and pooling_for(model) == "last" and tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"


def _check_training_labels(task, train_ds, task_args: TaskArguments) -> None:
    """A classifier needs at least two classes in its training data."""
    if not task.needs_two_classes() or len(train_ds) == 0:
        return
    present = set(train_ds["label"])
    if len(present) < 2:
        where = task_args.train_file or f"task '{task.name}' ({len(train_ds)} training examples)"
        name = task.label_names[next(iter(present))] if present and task.label_names else "?"
        raise UsageError(
            f"{where}: every training example has the label '{name}'; a classifier needs at least two classes"
        )


def _check_max_length(max_length: int, model_name: str) -> None:
    """A ``--max-length`` beyond the model's position embeddings would fail at the first long example.

    Read from the model's config alone (cheap and quiet); a config that does not load is reported
    when the model is loaded.
    """
    from transformers import AutoConfig

    try:
        limit = getattr(AutoConfig.from_pretrained(resolve_model_path(model_name)), "max_position_embeddings", None)
    except (OSError, ValueError):
        return
    if isinstance(limit, int) and max_length > limit:
        raise UsageError(f"--max-length {max_length} exceeds the model's {limit} positions")


def _check_optimizer(training_args: AdvTrainingArguments, model) -> None:
    """An optimizer that cannot be built (``--optim adamw_bnb_8bit`` without bitsandbytes) fails now, not mid-run.

    Called once before the model is loaded (``model=None``: most optimizers need no model to be
    resolved; those that do are checked again with the model).
    """
    from transformers import Trainer

    try:
        Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    except (ImportError, ValueError, NotImplementedError) as exc:
        optim = getattr(training_args.optim, "value", training_args.optim)
        raise UsageError(f"--optim {optim}: {_first_line(exc)}") from None
    except (TypeError, AttributeError):
        if model is not None:
            raise


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
