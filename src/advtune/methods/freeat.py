"""FreeAT: "Adversarial Training for Free!" (Shafahi et al., NeurIPS 2019, arXiv:1904.12843) on word
embeddings, as compared in FreeLB (arXiv:1909.11764, sections 3.2 and 4.2).

Each mini-batch is replayed m times in a row (``adv_replays``; the trainer's replay sampler does
this, so one replay = one ordinary optimizer step). On every replay a single forward on X + δ and
a single ``backward`` give both the parameter gradients (the trainer steps on them) and ∂L/∂δ,
from which δ ← Π_ε(δ + α·normalize(∂L/∂δ)) for the next replay. δ lives on the method instance and
is carried across the replays of one batch; it is reset when a different batch arrives (detected
by comparing ``input_ids``) or after m replays.

**Epochs:** since every batch is seen m times, divide the number of epochs by m to keep the
compute of standard training (Shafahi et al., section 4); ``max_steps`` and logging count replays.

Defaults: FreeLB 4.2 uses the same α and m for PGD, FreeAT and FreeLB: Table 7 RTE (ε = 0.15,
α = 0.03, m = 3) with a zero start as Shafahi et al. Cost: 1 forward + 1 backward per optimizer
step (m per mini-batch).

Deviations: Shafahi et al. carry δ over to the *next* mini-batch too (images of one shape); text
batches differ in length and tokens, so δ restarts (from ``adv_init``) with each new batch. We use
FreeLB's L2-normalised steps of size α by default; ``adv_norm="linf"`` with ``adv_step_size`` =
``adv_epsilon`` is Shafahi's sign step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..perturbation import ascent_step, init_delta
from .base import Backward, Method, StepOutput, cfg_field
from .embedding_space import AscentConfig, adv_loss, delta_frame, delta_metrics


@dataclass
class FreeATConfig(AscentConfig):
    """FreeAT hyper-parameters; see :class:`AscentConfig` for ε, α and norm.

    Args:
        adv_replays (`int`, *optional*, defaults to `3`): replays m of each mini-batch (= optimizer steps).
        adv_init (`str`, *optional*, defaults to `"zero"`): start of δ for each new batch.
    """

    adv_replays: int = cfg_field(3, "replays m of each mini-batch, one optimizer step each (divide epochs by m)")
    adv_init: str = cfg_field("zero", "initial perturbation of each new batch: zero, uniform or normal")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_replays >= 1, "adv_replays", "must be >= 1")


class FreeAT(Method):
    name = "freeat"
    config_class = FreeATConfig
    paper = {"title": "Adversarial Training for Free!", "arxiv": "1904.12843"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delta: torch.Tensor | None = None
        self._ids: torch.Tensor | None = None
        self._count = 0

    def _is_new_batch(self, ids: torch.Tensor) -> bool:
        return (
            self._delta is None
            or self._ids is None
            or self._count >= self.replays
            or self._ids.shape != ids.shape
            or self._ids.device != ids.device
            or not torch.equal(self._ids, ids)
        )

    def step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: Backward) -> StepOutput:
        cfg = self.config
        like, mask = delta_frame(model, inputs)
        ids = inputs["input_ids"]
        if self._is_new_batch(ids):
            self._delta = init_delta(like, mask, cfg.adv_init, cfg.adv_init_scale, cfg.adv_norm)
            self._ids, self._count = ids.detach().clone(), 0
        delta = self._delta.detach().requires_grad_()
        loss = adv_loss(model, inputs, delta)
        backward(loss)
        metrics = {"adv/loss": float(loss.detach()), "adv/replay": float(self._count)}
        metrics.update(delta_metrics(delta, mask, cfg.adv_norm))
        self._delta = ascent_step(delta, delta.grad, mask, cfg.adv_step_size, cfg.adv_epsilon, cfg.adv_norm)
        self._count += 1
        return StepOutput(loss.detach(), metrics)

    def state_dict(self) -> dict[str, Any]:
        """The carried δ, the batch it belongs to and the replay count (exact resume mid-batch)."""
        return {"delta": self._delta, "input_ids": self._ids, "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._delta, self._ids, self._count = state.get("delta"), state.get("input_ids"), int(state.get("count", 0))
