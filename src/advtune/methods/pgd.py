"""K-PGD adversarial training on word embeddings (Madry et al., ICLR 2018, arXiv:1706.06083), as the
PGD baseline of FreeLB (Zhu et al., arXiv:1909.11764, section 3.1, eq. 1-2).

Per step: random start δ_0 inside the ball, K ascent steps δ_{t+1} = Π_ε(δ_t + α g/‖g‖_F) with
``torch.autograd.grad(loss, δ)`` only (no parameter gradients are accumulated), then the
parameters are updated on the loss at the final δ_K (one ordinary backward).

Defaults: FreeLB section 4.2 uses "the same step size α and number of steps m for PGD, FreeAT and
FreeLB", so the RTE column of Table 7 (ε = 0.15, α = 0.03, K = 3). Cost: K + 1 forward and K + 1
backward passes per step (the K inner ones backpropagate to δ only).

Distributed: the K inner passes run under ``no_sync()`` (DDP must not expect a reduction for them);
the final backward all-reduces once. Mixed precision: δ fp32; non-finite δ-gradients skip the update.

Deviations: dropout-mask reuse across the K + 1 passes is available (``adv_reuse_dropout``) but off
by default, as in Madry et al.; ``adv_clean_weight`` (default 0, pure PGD) optionally adds the
clean loss, which costs one more forward/backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..embeddings import RNGState, maybe_replay
from ..perturbation import ascent_step, init_delta
from .adversarial import EmbeddingAdvConfig, adv_loss, delta_frame, delta_metrics
from .base import Method, StepOutput, cfg_field


@dataclass
class PGDConfig(EmbeddingAdvConfig):
    """K-PGD hyper-parameters; see :class:`EmbeddingAdvConfig` for ε, α, norm and init.

    Args:
        adv_steps (`int`, *optional*, defaults to `3`): inner ascent steps K.
        adv_reuse_dropout (`bool`, *optional*, defaults to `False`): one dropout mask for all passes.
        adv_clean_weight (`float`, *optional*, defaults to `0.0`): weight of an added clean loss.
    """

    adv_steps: int = cfg_field(3, "inner ascent steps K (each one forward + backward to delta only)")
    adv_reuse_dropout: bool = cfg_field(False, "reuse one dropout mask for the inner and final passes")
    adv_clean_weight: float = cfg_field(0.0, "weight of the clean-input loss added to the adversarial loss")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_steps >= 1, "adv_steps", "must be >= 1")
        self._check(self.adv_clean_weight >= 0, "adv_clean_weight", "must be >= 0")


class PGD(Method):
    name = "pgd"
    config_class = PGDConfig
    paper = {"title": "Towards Deep Learning Models Resistant to Adversarial Attacks", "arxiv": "1706.06083"}

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> StepOutput:
        cfg = self.config
        like, mask = delta_frame(model, inputs)
        delta = init_delta(like, mask, cfg.adv_init, cfg.adv_init_scale, cfg.adv_norm)
        rng = RNGState.capture(like.device) if cfg.adv_reuse_dropout and model.training else None
        first_loss = None
        for _ in range(cfg.adv_steps):
            delta.requires_grad_()
            with self.no_sync(), maybe_replay(rng):
                loss = adv_loss(model, inputs, delta)
                (grad,) = torch.autograd.grad(loss, delta)
            first_loss = loss.detach() if first_loss is None else first_loss
            delta = ascent_step(delta, grad, mask, cfg.adv_step_size, cfg.adv_epsilon, cfg.adv_norm)
        with maybe_replay(rng):
            adv = adv_loss(model, inputs, delta)
        metrics = {"adv/loss": float(adv.detach()), "adv/start_loss": float(first_loss)}
        metrics.update(delta_metrics(delta, mask, cfg.adv_norm))
        if cfg.adv_clean_weight > 0:
            clean = adv_loss(model, inputs, None)
            metrics["adv/clean_loss"] = float(clean.detach())
            return StepOutput(adv + cfg.adv_clean_weight * clean, metrics)
        return StepOutput(adv, metrics)
