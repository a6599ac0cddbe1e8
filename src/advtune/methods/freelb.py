"""FreeLB: Enhanced Adversarial Training for Natural Language Understanding (Zhu et al., ICLR 2020,
arXiv:1909.11764), Algorithm 1 with dropout-mask reuse (section 3.3).

Per step: δ_0 = U(-s, s)/sqrt(N_δ); for t = 1..K: forward on X + δ_{t-1}, ``backward(loss / K)``
(parameter gradients accumulate into g_K = mean of the K per-step gradients), then
δ_t = Π_ε(δ_{t-1} + α g_δ/‖g_δ‖_F) from the same backward; the trainer then takes one optimizer
step on g_K. All forwards of a step reuse one dropout mask (``adv_reuse_dropout``; off = the
FreeLB-3* ablation of Table 4).

Defaults: Table 7, RTE column (ε = 0.15, α = 0.03, K = 3); the other GLUE columns are presets
``configs/freelb_<task>.yaml``. Cost: K forward + K backward passes per step.

Distributed: the first K-1 passes run under ``backward.no_sync()``, so DDP all-reduces once per step.
Mixed precision: δ is fp32; the L2/sign step is invariant to fp16 loss scaling; an example whose
δ-gradient is not finite keeps its δ.

Deviations from the paper: for ``adv_norm="linf"`` we use sign steps and clamping (Madry's L∞
PGD); FreeLB's released code divides by the max-abs gradient instead. The last δ_K is never
computed (it would not be used).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import cfg_field
from .multipass import MultiPassConfig, MultiPassMethod


@dataclass
class FreeLBConfig(MultiPassConfig):
    """FreeLB-K hyper-parameters (Table 7, RTE column); see :class:`MultiPassConfig` for the rest.

    Args:
        adv_reuse_dropout (`bool`, *optional*, defaults to `True`): one dropout mask for all K passes
            (section 3.3); ``False`` reproduces FreeLB-K* of Table 4.
    """

    adv_reuse_dropout: bool = cfg_field(True, "reuse one dropout mask for all K passes (FreeLB section 3.3)")


class FreeLB(MultiPassMethod):
    """Algorithm 1 is the multi-pass frame with its defaults: K training passes, one ascent step between them."""

    name = "freelb"
    config_class = FreeLBConfig
    paper = {
        "title": "FreeLB: Enhanced Adversarial Training for Natural Language Understanding",
        "arxiv": "1909.11764",
    }
