"""``AdversarialTrainer``: a ``transformers.Trainer`` whose training step is a method's step.

The only place that knows about the HF Trainer. ``training_step`` is kept parallel to the stock
one (transformers 5.x): same context-parallel preparation, ``model.train()``, input preparation,
autocast context, gradient-accumulation scaling and ``accelerator.backward``; the forward/backward
passes themselves are delegated to ``method.step(model, inputs, backward)``, where ``backward`` carries
``accelerator.no_sync(model)`` for the method's inner passes. Everything else
(optimizer, schedule, AMP, checkpointing, logging, callbacks) is the stock Trainer.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .methods import Method
from .methods.base import METHOD_STATE_FILE, Backward
from .methods.standard import Standard


class ReplaySampler(Sampler[int]):
    """Yields each mini-batch ``replays`` times in a row (FreeAT, YOPO batch replay).

    Indices are grouped into blocks of ``batch_size * world_size`` (one mini-batch per process,
    since accelerate shards whole batches round robin); each block is emitted ``replays`` times,
    so every process sees its own batch ``replays`` times in a row and every optimizer step stays an
    ordinary Trainer step. The last block is padded with indices from the start of the epoch so
    replays never straddle two batches. ``max_steps`` and logging count replays.
    """

    def __init__(self, base: Sampler[int], batch_size: int, replays: int, world_size: int = 1) -> None:
        self.base, self.replays = base, replays
        self.block = batch_size * max(world_size, 1)

    def __iter__(self):
        order = list(self.base)
        if not order:
            return
        pad = (-len(order)) % self.block
        order += (order * (pad // len(order) + 1))[:pad]
        for start in range(0, len(order), self.block):
            block = order[start : start + self.block]
            for _ in range(self.replays):
                yield from block

    def __len__(self) -> int:
        return math.ceil(len(self.base) / self.block) * self.block * self.replays

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)


class _MethodCallback(TrainerCallback):
    """Forwards epoch boundaries to the method (TAT refreshes its error tally there)."""

    def __init__(self, trainer: AdversarialTrainer) -> None:
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        logs = self.trainer.method.on_epoch_end(int(round(state.epoch or 0)))
        if logs:
            self.trainer.log({k: float(v) for k, v in logs.items()})
        return control


class AdversarialTrainer(Trainer):
    """``Trainer(method=...)``: every ``TrainingArguments`` option keeps its stock meaning."""

    def __init__(self, *args: Any, method: Method | None = None, **kwargs: Any) -> None:
        self.method = method if method is not None else Standard()
        super().__init__(*args, **kwargs)
        # Method losses are per-batch means: the backward below divides by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._method_metrics: dict[str, list[float]] = defaultdict(list)
        self.add_callback(_MethodCallback(self))

    # ------------------------------------------------------------------ the step
    def training_step(self, model, inputs, num_items_in_batch=None):
        cp_context, inputs = self._prepare_context_parallel_inputs(model, inputs)
        with cp_context():
            model.train()
            if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
                self.optimizer.train()
            inputs = self._prepare_inputs(inputs)
            gas = self.current_gradient_accumulation_steps

            def _backward(loss: torch.Tensor) -> None:
                kwargs: dict[str, Any] = {}
                if self.args.n_gpu > 1:
                    loss = loss.mean()
                if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
                    kwargs["scale_wrt_gas"] = False
                self.accelerator.backward(loss / gas, **kwargs)

            backward = Backward(_backward, no_sync=lambda: self.accelerator.no_sync(model))
            with self.compute_loss_context_manager():
                out = self.method.step(model, inputs, backward)
            for key, value in out.metrics.items():
                self._method_metrics[key].append(float(value))
            loss = out.loss.detach()
            if self.args.n_gpu > 1:
                loss = loss.mean()
            return loss / gas

    # ------------------------------------------------------------------ replay + logging
    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if self.method.replays > 1 and sampler is not None:
            return ReplaySampler(sampler, self._train_batch_size, self.method.replays, self.args.world_size)
        return sampler

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._method_metrics:
            for key, values in self._method_metrics.items():
                finite = [v for v in values if math.isfinite(v)]
                logs[key] = round(sum(finite) / len(finite), 6) if finite else float("nan")
            self._method_metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ method state in checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            if os.path.isdir(folder):
                torch.save(self.method.state_dict(), os.path.join(folder, METHOD_STATE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, METHOD_STATE_FILE)
        if os.path.isfile(path):
            self.method.load_state_dict(torch.load(path, weights_only=True))
