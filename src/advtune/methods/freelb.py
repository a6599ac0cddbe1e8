"""FreeLB: Enhanced Adversarial Training for Natural Language Understanding (Zhu et al., ICLR 2020,
arXiv:1909.11764), Algorithm 1 with dropout-mask reuse (section 3.3).

Per step: δ_0 = U(-s, s)/sqrt(N_δ); for t = 1..K: forward on X + δ_{t-1}, ``backward(loss / K)``
(parameter gradients accumulate into g_K = mean of the K per-step gradients), then
δ_t = Π_ε(δ_{t-1} + α g_δ/‖g_δ‖_F) from the same backward; the trainer then takes one optimizer
step on g_K. All forwards of a step reuse one dropout mask (``adv_reuse_dropout``; off = the
FreeLB-3* ablation of Table 4).

Defaults: Table 7, RTE column (ε = 0.15, α = 0.03, K = 3); the other GLUE columns are presets
``configs/freelb_<task>.yaml``. Cost: K forward + K backward passes per step.

Distributed: the first K-1 passes run under ``no_sync()``, so DDP all-reduces once per step.
Mixed precision: δ is fp32; the L2/sign step is invariant to fp16 loss scaling; an example whose
δ-gradient is not finite keeps its δ.

Deviations from the paper: for ``adv_norm="linf"`` we use sign steps and clamping (Madry's L∞
PGD); FreeLB's released code divides by the max-abs gradient instead. The last δ_K is never
computed (it would not be used).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..embeddings import RNGState, maybe_replay
from ..perturbation import ascent_step, init_delta
from .adversarial import EmbeddingAdvConfig, adv_loss, delta_frame, delta_metrics
from .base import Backward, Method, StepOutput, cfg_field


@dataclass
class FreeLBConfig(EmbeddingAdvConfig):
    """FreeLB-K hyper-parameters (Table 7, RTE column); see :class:`EmbeddingAdvConfig` for the rest.

    Args:
        adv_steps (`int`, *optional*, defaults to `3`): ascent steps K (= forward/backward passes per step).
        adv_reuse_dropout (`bool`, *optional*, defaults to `True`): one dropout mask for all K passes
            (section 3.3); ``False`` reproduces FreeLB-K* of Table 4.
    """

    adv_steps: int = cfg_field(3, "ascent steps K per batch (K forward/backward passes)")
    adv_reuse_dropout: bool = cfg_field(True, "reuse one dropout mask for all K passes (FreeLB section 3.3)")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_steps >= 1, "adv_steps", "must be >= 1")


class FreeLB(Method):
    name = "freelb"
    config_class = FreeLBConfig
    paper = {
        "title": "FreeLB: Enhanced Adversarial Training for Natural Language Understanding",
        "arxiv": "1909.11764",
    }

    def step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: Backward) -> StepOutput:
        cfg = self.config
        k = cfg.adv_steps
        like, mask = delta_frame(model, inputs)
        delta = init_delta(like, mask, cfg.adv_init, cfg.adv_init_scale, cfg.adv_norm)
        # captured after δ's random draw so the dropout masks do not reuse the init's numbers
        rng = RNGState.capture(like.device) if cfg.adv_reuse_dropout and model.training else None
        total = torch.zeros((), device=like.device)
        for t in range(k):
            delta.requires_grad_()
            sync = contextlib.nullcontext() if t == k - 1 else self.no_sync()
            with sync, maybe_replay(rng):
                loss = adv_loss(model, inputs, delta)
                backward(loss / k)
            total += loss.detach()
            if t < k - 1:
                delta = ascent_step(delta, delta.grad, mask, cfg.adv_step_size, cfg.adv_epsilon, cfg.adv_norm)
        metrics = {"adv/loss": float(loss.detach()), **delta_metrics(delta, mask, cfg.adv_norm)}
        return StepOutput(total / k, metrics)
