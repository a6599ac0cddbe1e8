"""K-PGD adversarial training on word embeddings (Madry et al., ICLR 2018, arXiv:1706.06083), as the
PGD baseline of FreeLB (Zhu et al., arXiv:1909.11764, section 3.1, eq. 1-2).

Per step: random start δ_0 inside the ball, K ascent steps δ_{t+1} = Π_ε(δ_t + α g/‖g‖_F) with
``torch.autograd.grad(loss, δ)`` only (no parameter gradients are accumulated), then the
parameters are updated on the loss at the final δ_K (one ordinary backward).

Defaults: FreeLB section 4.2 uses "the same step size α and number of steps m for PGD, FreeAT and
FreeLB", so the RTE column of Table 7 (ε = 0.15, α = 0.03, K = 3). Cost: K + 1 forward and K + 1
backward passes per step (the K inner ones backpropagate to δ only).

Distributed: the K inner passes run under ``backward.no_sync()`` (DDP must not expect a reduction for them);
the final backward all-reduces once. Mixed precision: δ fp32; non-finite δ-gradients skip the update.

Deviations: dropout-mask reuse across the K + 1 passes is available (``adv_reuse_dropout``) but off
by default, as in Madry et al.; ``adv_clean_weight`` (default 0, pure PGD) optionally adds the
clean loss, which costs one more forward/backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import cfg_field
from .embedding_space import adv_loss
from .multipass import Frame, MultiPassConfig, MultiPassMethod


@dataclass
class PGDConfig(MultiPassConfig):
    """K-PGD hyper-parameters; see :class:`MultiPassConfig` for ε, α, norm, init, K and dropout reuse.

    Args:
        adv_clean_weight (`float`, *optional*, defaults to `0.0`): weight of an added clean loss.
    """

    adv_clean_weight: float = cfg_field(0.0, "weight of the clean-input loss added to the adversarial loss")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_clean_weight >= 0, "adv_clean_weight", "must be >= 0")


class PGD(MultiPassMethod):
    """The multi-pass frame with K passes to δ only and one training pass at δ_K."""

    name = "pgd"
    config_class = PGDConfig
    paper = {"title": "Towards Deep Learning Models Resistant to Adversarial Attacks", "arxiv": "1706.06083"}
    trains_every_pass = False

    def num_passes(self) -> int:
        return self.config.adv_steps + 1

    def pass_loss(self, frame: Frame, delta: torch.Tensor, last: bool) -> tuple[torch.Tensor, dict[str, float]]:
        adv = adv_loss(frame.model, frame.inputs, delta)
        if not last or self.config.adv_clean_weight == 0:
            return adv, {}
        clean = adv_loss(frame.model, frame.inputs, None)
        logs = {"adv/loss": float(adv.detach()), "adv/clean_loss": float(clean.detach())}
        return adv + self.config.adv_clean_weight * clean, logs

    def metrics(self, losses: list[torch.Tensor], delta: torch.Tensor, frame: Frame) -> dict[str, Any]:
        return {**super().metrics(losses, delta, frame), "adv/start_loss": float(losses[0])}
