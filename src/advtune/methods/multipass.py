"""The multi-pass frame: several forward passes on X + δ_t per step, δ moved between them.

FreeLB, PGD and YOPO share one loop (and so would an InfoBERT-style method)::

    δ_0 = init;  rng = the step's dropout snapshot (when masks are reused)
    for t in 0..T-1:                                   T = num_passes()
        under no_sync() unless t is the last pass, with the step's dropout masks:
            loss_t = pass_loss(model, x, δ_t)            # the inner-loss hook (default: task loss on x + δ_t)
            training pass: backward(loss_t / passes that train)  (parameter gradients accumulate)
            else:          g = ∂loss_t/∂δ only             (PGD's inner passes)
        δ_{t+1} = next_delta(δ_t, g)                    # not after the last pass
    report the mean loss of the training passes; log metrics(...)

A method says which passes train (``trains_every_pass``: FreeLB and YOPO, every one; PGD, the last
only), what each pass's loss is, how δ moves (YOPO adds its cheap first-block updates) and what is
logged. DDP all-reduces once per step: every pass but the last runs under ``backward.no_sync()``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..dropout_replay import RNGState, dropout_rng, maybe_replay
from ..perturbation import ascent_step, init_delta
from .base import Backward, DropoutReplayConfig, Method, StepOutput, cfg_field
from .embedding_space import AscentConfig, adv_loss, delta_frame, delta_metrics


@dataclass
class MultiPassConfig(DropoutReplayConfig, AscentConfig):
    """The embedding-space fields plus the number of ascent steps K (PGD, FreeLB, YOPO).

    Args:
        adv_steps (`int`, *optional*, defaults to `3`): ascent steps K per batch.
    """

    adv_steps: int = cfg_field(3, "ascent steps K per batch (FreeLB, YOPO: K full passes; PGD: K passes to delta)")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_steps >= 1, "adv_steps", "must be >= 1")


@dataclass
class Frame:
    """What the hooks of one step may need besides δ: the batch, its real-token mask and the step's seams."""

    model: torch.nn.Module
    inputs: dict[str, Any]
    mask: torch.Tensor
    rng: RNGState | None
    backward: Backward


class MultiPassMethod(Method):
    """Base of the methods that run the multi-pass frame; subclasses override the hooks below."""

    config: MultiPassConfig
    trains_every_pass: ClassVar[bool] = True
    """``True``: every pass backpropagates ``loss / T`` into the parameters (FreeLB); ``False``: only the
    last pass does, the others differentiate w.r.t. δ only (PGD)."""

    # ------------------------------------------------------------------ hooks
    def num_passes(self) -> int:
        """T, the forward passes per step."""
        return self.config.adv_steps

    def pass_loss(self, frame: Frame, delta: torch.Tensor, last: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """The inner-loss hook: ``(loss, metrics)`` of one pass on X + δ (default: the task loss)."""
        return adv_loss(frame.model, frame.inputs, delta), {}

    def recording(self, frame: Frame) -> contextlib.AbstractContextManager:
        """Entered around each pass's forward and backward; what it yields reaches :meth:`next_delta`."""
        return contextlib.nullcontext({})

    def next_delta(self, frame: Frame, delta: torch.Tensor, grad: torch.Tensor, record: Any) -> torch.Tensor:
        """δ_{t+1} from δ_t and ∂loss_t/∂δ_t: one projected, normalised ascent step of size α."""
        cfg = self.config
        return ascent_step(delta, grad, frame.mask, cfg.adv_step_size, cfg.adv_epsilon, cfg.adv_norm)

    def metrics(self, losses: list[torch.Tensor], delta: torch.Tensor, frame: Frame) -> dict[str, float]:
        """What is logged: the last pass's loss and the norm of the last δ (``losses`` are detached)."""
        return {"adv/loss": float(losses[-1]), **delta_metrics(delta, frame.mask, self.config.adv_norm)}

    # ------------------------------------------------------------------ the frame
    def step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: Backward) -> StepOutput:
        cfg, backward = self.config, Backward.of(backward)
        passes = self.num_passes()
        trained = passes if self.trains_every_pass else 1
        like, mask = delta_frame(model, inputs)
        delta = init_delta(like, mask, cfg.adv_init, cfg.adv_init_scale, cfg.adv_norm)
        # captured after δ's random draw so the dropout masks do not reuse the init's numbers
        frame = Frame(model, inputs, mask, dropout_rng(cfg.adv_reuse_dropout, model, like.device), backward)
        total = torch.zeros((), device=like.device)
        losses: list[torch.Tensor] = []
        logs: dict[str, float] = {}
        for t in range(passes):
            last = t == passes - 1
            delta.requires_grad_()
            sync = contextlib.nullcontext() if last else backward.no_sync()
            with sync, maybe_replay(frame.rng), self.recording(frame) as record:
                loss, logs = self.pass_loss(frame, delta, last)
                if last or self.trains_every_pass:
                    backward(loss / trained)
                    total += loss.detach()
                    grad = delta.grad
                else:
                    (grad,) = torch.autograd.grad(loss, delta)
            losses.append(loss.detach())
            if not last:
                delta = self.next_delta(frame, delta, grad, record)
        return StepOutput(total / trained, {**self.metrics(losses, delta, frame), **logs})


__all__ = ["Frame", "MultiPassConfig", "MultiPassMethod"]
