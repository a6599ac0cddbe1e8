"""R3F: Aghajanyan et al., "Better Fine-Tuning by Reducing Representational Collapse" (ICLR 2021,
arXiv:2008.03156), section 3:

    L(θ) = L(f(x), y) + λ · KL_S(f(x) ‖ f(x + z)),   z ~ N(0, σ²I) or U(−σ, σ) on the word embeddings

with KL_S the symmetric KL divergence. No inner maximisation: one noised forward beside the clean one,
which is the point (cheaper than SMART/FreeLB at similar accuracy). Defaults: the paper's σ = 1e-5,
normal noise and λ = 1 (it searches λ ∈ {0.1, 0.5, 1, 5}); λ is ``adv_alpha``, σ ``adv_init_scale``.

Choices: z is zero on padding positions; the gradient of KL_S flows through both f(x) and f(x + z),
and the two passes draw their own dropout masks, as the authors' fairseq code does
(``adv_reuse_dropout`` gives the noised pass the clean pass's masks). Regression tasks: the squared
error between the two outputs in place of KL_S (a departure: the paper only treats classification).
λ = 0 skips the noised pass: exactly standard fine-tuning. Cost: 2 forward + 1 backward through both,
plus one no-grad forward every ``adv_diagnostics_every`` steps for ``diag/*`` (what z alone does).
``adv_memory=sequential``: the same gradient with one graph alive at a time, for one more forward of x + z
without autograd (:mod:`advtune.methods.paired`; R4F's spectral-norm vectors are restored for its replay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..dropout_replay import dropout_rng, maybe_replay
from ..embeddings import forward_with_delta
from ..perturbation import init_delta
from .base import Backward, Method, StepOutput, cfg_field, is_regression, model_inputs, symmetric_kl, task_loss
from .embedding_space import delta_frame
from .paired import Pair, PairedMethod, PairFrame
from .smoothness import Diagnostics, SmoothnessConfig, output_shift

NOISES = ("normal", "uniform")


@dataclass
class R3FConfig(SmoothnessConfig):
    """R3F's σ (``adv_init_scale``), λ (``adv_alpha``) and dropout reuse, plus the noise distribution.

    adv_noise (`str`, *optional*, defaults to `"normal"`): ``normal`` N(0, σ²) or ``uniform`` U(−σ, σ).
    """

    adv_noise: str = cfg_field("normal", "noise z on the embeddings: normal N(0, sigma^2) or uniform U(-sigma,sigma)")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_noise in NOISES, "adv_noise", f"choose from {', '.join(NOISES)}")


class R3F(PairedMethod):
    name = "r3f"
    config_class = R3FConfig
    paper = {"title": "Better Fine-Tuning by Reducing Representational Collapse", "arxiv": "2008.03156"}

    def __init__(self, config: R3FConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.diagnostics = Diagnostics()

    def noise(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """z of shape ``(B, L, H)``, fp32, zero on padding (``linf`` uniform init is plain U(−σ, σ))."""
        like, mask = delta_frame(model, inputs)
        return init_delta(like, mask, self.config.adv_noise, self.config.adv_init_scale, "linf")

    def step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: Backward) -> StepOutput:
        if self.config.adv_alpha == 0:  # λ = 0: no noised pass, exactly standard fine-tuning
            return Method.step(self, model, inputs, backward)
        return super().step(model, inputs, backward)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> StepOutput:
        if self.config.adv_alpha == 0:
            logits = model(**model_inputs(inputs)).logits
            return StepOutput(task_loss(logits, inputs["labels"], is_regression(model)), {})
        return super().compute_loss(model, inputs)

    # ------------------------------------------------------------------ the paired frame (methods/paired.py)
    def begin(self, frame: PairFrame) -> None:
        z = frame.state["z"] = self.noise(frame.model, frame.inputs)
        frame.state["rng"] = dropout_rng(self.config.adv_reuse_dropout, frame.model, z.device)  # after z, as FreeLB
        frame.state["masks"] = self.diagnostics.start(self.config.adv_diagnostics_every, z.device)

    def clean_pass(self, frame: PairFrame) -> torch.Tensor:
        with maybe_replay(frame.state["rng"]):
            return frame.model(**frame.batch).logits

    def perturbed_pass(self, frame: PairFrame) -> torch.Tensor:
        with maybe_replay(frame.state["rng"]):
            return forward_with_delta(frame.model, frame.batch, frame.state["z"]).logits

    def pair_loss(self, frame: PairFrame, clean: torch.Tensor, adv: torch.Tensor) -> StepOutput:
        loss = task_loss(clean, frame.labels, frame.regression)
        sym_kl = symmetric_kl(clean, adv, frame.regression)
        metrics = {"r3f/sym_kl": float(sym_kl.detach()), "adv/clean_loss": float(loss.detach())}
        return StepOutput(loss + self.config.adv_alpha * sym_kl, metrics)

    def finish(self, frame: PairFrame, pair: Pair) -> StepOutput:
        masks, metrics = frame.state["masks"], dict(pair.out.metrics)
        if masks is not None:  # z alone, with the clean pass's dropout masks (smoothness.Diagnostics)
            with Diagnostics.masks(masks):
                masks.restore()
                shifted = forward_with_delta(frame.model, frame.batch, frame.state["z"]).logits
            metrics.update(output_shift(pair.clean, shifted, frame.regression))
        return StepOutput(pair.out.loss, metrics)


__all__ = ["R3F", "R3FConfig"]
