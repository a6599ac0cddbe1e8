"""SMART: VAT's smoothness-inducing regulariser plus a Bregman proximal-point term with an EMA teacher.

Paper: Jiang et al., "SMART: Robust and Efficient Fine-Tuning for Pre-trained Natural Language Models
through Principled Regularized Optimization" (arXiv 1911.03437), eq. 1 and section 3.2 ("momentum
Bregman proximal point"):

    min_θ  L(f(x), y) + α · R_s(θ) + μ · D_Breg(θ, θ̃),   D_Breg = ℓs(f(x; θ), f(x; θ̃)),
    θ̃ ← β θ̃ + (1 − β) θ   (an exponential moving average of the parameters)

R_s is :class:`~advtune.methods.vat.VAT`'s term (σ = ε = 1e-5, η = 1e-3, K = 1, α = 1). Defaults μ = 1,
β = 0.99 (SMART section 5; the paper tunes μ in {1, 3, 5}). ``adv_bregman_mu = 0`` turns the proximal
term off, which is exactly ``vat``.

Cost per step: VAT's passes plus one no-grad teacher forward; memory for
one extra copy of the parameters.

Choices the paper leaves open: the EMA is updated at the start of each step from the parameters the
optimizer produced (equivalent to updating after the optimizer step, with no optimizer access; with
gradient accumulation it moves once per micro-batch); the
teacher starts as a copy of the initial model; it runs in the student's train/eval mode with its own
dropout draws (as a mean teacher); buffers are shared with the student. The teacher is part of
``state_dict()`` so a resumed run continues with the same θ̃.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call

from ..wrappers import unwrap
from .base import cfg_field, symmetric_kl
from .vat import VAT, CleanTerm, VATConfig


@dataclass
class SMARTConfig(VATConfig):
    """VAT's fields plus the Bregman proximal point term.

    adv_bregman_mu (`float`, *optional*, defaults to `1.0`): μ, weight of the proximal term (0 = VAT).
    adv_bregman_beta (`float`, *optional*, defaults to `0.99`): β, momentum of the EMA teacher θ̃.
    """

    adv_bregman_mu: float = cfg_field(1.0, "mu: weight of the Bregman proximal-point term (0 switches it off).")
    adv_bregman_beta: float = cfg_field(0.99, "beta: momentum of the EMA teacher used by the proximal term.")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_bregman_mu >= 0, "adv_bregman_mu", "must be >= 0")
        self._check(0 <= self.adv_bregman_beta < 1, "adv_bregman_beta", "must be in [0, 1)")


class SMART(VAT):
    name = "smart"
    config_class = SMARTConfig

    def __init__(self, config: SMARTConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.teacher: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def _update_teacher(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        params = {n: p.detach() for n, p in unwrap(model).named_parameters() if p.requires_grad}
        if self.teacher is None or set(self.teacher) != set(params):
            self.teacher = {n: p.clone() for n, p in params.items()}
        else:
            beta = self.config.adv_bregman_beta
            for n, p in params.items():
                t = self.teacher[n]
                if t.device != p.device:
                    t = self.teacher[n] = t.to(p.device)
                t.mul_(beta).add_(p.to(t.dtype), alpha=1 - beta)
        return self.teacher

    def clean_terms(
        self, model: torch.nn.Module, inputs: dict[str, Any], regression: bool
    ) -> tuple[CleanTerm | None, dict[str, float]]:
        """μ · ℓs(f(x; θ), f(x; θ̃)): the EMA update and the teacher's forward run here, once per step."""
        mu = self.config.adv_bregman_mu
        if mu == 0:
            return None, {}
        teacher = self._update_teacher(model)
        inner = unwrap(model)
        with torch.no_grad():
            teacher_logits = functional_call(inner, teacher, args=(), kwargs=dict(inputs), strict=False).logits

        def bregman(clean_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            breg = symmetric_kl(clean_logits, teacher_logits, regression)
            return mu * breg, {"adv/bregman": float(breg.detach())}

        return bregman, {}

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": {n: t.detach().cpu() for n, t in self.teacher.items()}} if self.teacher else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        teacher = state.get("teacher")
        self.teacher = {n: torch.as_tensor(t).clone() for n, t in teacher.items()} if teacher else None
