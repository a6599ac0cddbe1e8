"""Training one run: the Trainer, then weights, statistics, evaluations and ``metrics.json`` last."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from pathlib import Path
from typing import Any

import torch

from .. import adapters, checkpoints, faults, runs
from ..config import AdvTrainingArguments, ModelArguments, RunArguments, TaskArguments, dataclass_values
from ..errors import UsageError
from ..methods import METHOD_STATE_FILE, Method, get_method_class
from .callbacks import _RunClock, _StepTimer
from .evaluation import _with_languages, _write_eval, score
from .prepare import _prepare, _Prepared


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("advtune", "torch", "transformers", "datasets", "accelerate", "peft"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _barrier(training_args: AdvTrainingArguments) -> None:
    import torch.distributed as dist

    if training_args.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_training(
    task_args: TaskArguments,
    model_args: ModelArguments,
    run_args: RunArguments,
    training_args: AdvTrainingArguments,
    method: Method | None = None,
    adapter_args: adapters.AdapterArguments | None = None,
) -> Path:
    """Train, save and evaluate one run; returns the run folder.

    Everything is validated and loaded before the run folder is touched; ``--overwrite`` moves the old
    run aside and deletes it only when the new one has written ``metrics.json`` (see :func:`runs.replacing`).
    """
    if not training_args.output_dir:
        raise UsageError("--output-dir is required (the run folder to write)")
    out = Path(training_args.output_dir)
    # under torchrun / accelerate launch every process checks the folder before any of them writes;
    # the main process alone writes the run folder (the Trainer saves checkpoints the same way)
    main = training_args.process_index == 0
    if main:
        runs.recover(out)
    mode = runs.check_output(out, overwrite=run_args.overwrite, resume=run_args.resume)
    prepared = _prepare(task_args, model_args, run_args, training_args, method, adapter_args)
    _barrier(training_args)
    with runs.replacing(out, replace=mode == "replace" and main), checkpoints.discard_if_fruitless(out, mode, main):
        _barrier(training_args)
        checkpoint = checkpoints.latest_complete(out, main=main) if mode == "resume" else None
        _train_and_save(out, prepared, task_args, model_args, training_args, checkpoint, main)
    return out


def _run_config(prepared: _Prepared, task_args, model_args, training_args) -> dict[str, Any]:
    task = prepared.task
    return {
        "task": {**dataclass_values(task_args), "name": task.name, "metric": task.metric, "pair": task.pair}
        | task.run_record(),
        "model": dataclass_values(model_args),
        "method": {"name": prepared.method.name, "config": prepared.method.config.to_dict()},
        "adapter": adapters.run_record(prepared.adapter_args, model_args.model),
        "training": dataclass_values(training_args),
        "label_names": list(task.label_names) if task.label_names else None,
        "num_train_examples": len(prepared.train_ds),
        "versions": versions(),
    }


def _train_and_save(out: Path, p: _Prepared, task_args, model_args, training_args, checkpoint, main: bool) -> None:
    """Train (from ``checkpoint`` when resuming), then save weights, statistics, evaluations and metrics.json."""
    out.mkdir(parents=True, exist_ok=True)
    model = _setup_and_record(out, p, task_args, model_args, training_args, main)
    timer = _StepTimer(training_args.threads)
    earlier = checkpoints.Earlier.read(checkpoint)
    clock = _RunClock(earlier.runtime_s, keep=training_args.save_total_limit)
    trainer = _build_trainer(model, p, task_args, training_args, callbacks=[timer, clock])
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if not main:
        return
    inference = _save_weights(out, p, trainer)
    runs.write_json_atomic(out / "log_history.json", trainer.state.log_history)
    stats = checkpoints.whole_run_stats(result.metrics, trainer.state.global_step, earlier)
    runs.write_json_atomic(
        out / "train_stats.json",
        {
            **stats,
            "global_step": trainer.state.global_step,
            "world_size": training_args.world_size,
            **timer.record(),
            "num_train_examples": len(p.train_ds),
        },
    )
    summary = _evaluate_splits(out, p, inference, task_args.max_length, training_args.per_device_eval_batch_size)
    runs.write_json_atomic(out / runs.METRICS, {"task": p.task.name, "method": p.method.name, "splits": summary})
    checkpoints.remove_all(out)  # the final weights are saved; checkpoints only served --resume
    runs.remove_temporaries(out)


def _setup_and_record(out: Path, p: _Prepared, task_args, model_args, training_args, main: bool):
    """Write ``run_config.json``, let the method set the model up, and record what setup measured."""
    config = _run_config(p, task_args, model_args, training_args)
    if main:
        runs.write_json_atomic(out / runs.RUN_CONFIG, config)
    model = p.method.setup(p.model, tokenizer=p.tokenizer, task=p.task)
    # what training updates, after the method's setup (PEAFT's prompts, CAT's projection head, an adapter)
    config["parameters"] = {
        "trainable": adapters.trainable_parameters(model),
        "total": sum(t.numel() for t in model.parameters()),
    }
    if p.method.embedding_scale is not None:  # measured by setup: record what the radii were scaled by
        config["method"]["embedding_scale"] = p.method.embedding_scale
    if main:
        runs.write_json_atomic(out / runs.RUN_CONFIG, config)
    return model


def _build_trainer(model, p: _Prepared, task_args, training_args, callbacks: list):
    """The Trainer on the task's encoding and collator; checkpoints rotated by ``_RunClock``, not the Trainer."""
    from ..trainer import AdversarialTrainer

    eval_ds = next(iter(p.evals.values()), None)
    trainer = AdversarialTrainer(
        model=model,
        args=training_args,
        method=p.method,
        train_dataset=p.task.encode(p.train_ds, p.tokenizer, task_args.max_length),
        eval_dataset=p.task.encode(eval_ds, p.tokenizer, task_args.max_length) if eval_ds is not None else None,
        data_collator=p.task.collator(p.tokenizer),
        processing_class=p.tokenizer,
        compute_metrics=_trainer_metrics(p.task) if eval_ds is not None else None,
        callbacks=callbacks,
    )
    trainer.args.save_total_limit = None  # the Trainer would delete the old checkpoint before the new one is whole
    faults.install_checkpoint_hook(trainer)
    return trainer


def _save_weights(out: Path, p: _Prepared, trainer):
    """Save the inference model, the method's state and (``--merge-adapter``) the merged model; returns the model."""
    inference = p.method.inference_model(trainer.model)
    p.method.save_inference_model(inference, p.tokenizer, out)
    state = p.method.state_dict()
    if state:
        torch.save(state, out / METHOD_STATE_FILE)
    if p.adapter_args.merge_adapter:
        adapters.write_merged(inference, p.tokenizer, out)
    return inference


def _evaluate_splits(out: Path, p: _Prepared, inference, max_length: int, batch_size: int) -> dict[str, dict]:
    """Score every evaluation split, writing its predictions and metrics; returns the metrics by split."""
    summary: dict[str, dict[str, float]] = {}
    inference.eval()
    for split, ds in p.evals.items():
        logits = p.task.predict(inference, p.tokenizer, ds, max_length, batch_size)
        metrics, rows = score(p.task, logits, ds)
        metrics = _with_languages(metrics, rows, ds)
        _write_eval(out, p.task.name, split, metrics, rows)
        summary[split] = metrics
    return summary


def _trainer_metrics(task):
    from ..evaluation.metrics import compute_metrics

    def fn(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = logits.reshape(len(labels), -1)[:, 0] if task.is_regression else logits.argmax(-1)
        return compute_metrics(task.metric, preds, labels)

    return fn


def train(
    task: str = "sst2",
    method: str = "standard",
    output_dir: str | Path = "runs/run",
    model: str = "minilm",
    method_overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    **kwargs: Any,
) -> Path:
    """Python API: ``train("rte", "freelb", "runs/rte-freelb", max_train_samples=500, num_train_epochs=1)``.

    Keyword arguments go to :class:`TaskArguments`, :class:`~advtune.adapters.AdapterArguments` (``peft="lora"``)
    or :class:`AdvTrainingArguments` by name.
    """
    task_fields = {f.name for f in dataclasses.fields(TaskArguments)}
    adapter_fields = {f.name for f in dataclasses.fields(adapters.AdapterArguments)}
    task_kwargs = {k: v for k, v in kwargs.items() if k in task_fields}
    adapter_kwargs = {k: v for k, v in kwargs.items() if k in adapter_fields}
    train_kwargs = {k: v for k, v in kwargs.items() if k not in task_fields | adapter_fields}
    train_kwargs.setdefault("report_to", "none")
    task_args = TaskArguments(task=task, **task_kwargs)
    training_args = AdvTrainingArguments(output_dir=str(output_dir), **train_kwargs)
    method_obj = get_method_class(method)(**(method_overrides or {}))
    return run_training(
        task_args,
        ModelArguments(model=model),
        RunArguments(method=method, overwrite=overwrite, resume=resume),
        training_args,
        method_obj,
        adapters.AdapterArguments(**adapter_kwargs),
    )
