"""The virtual/smoothness family (VAT, SMART, TAT, R3F): loss = task loss + α · ℓs(f(x), f(x + δ)).

Every member perturbs the embeddings with random noise of scale σ (R3F keeps it; VAT moves it
adversarially first), weighs a symmetric divergence ℓs between the clean and the perturbed outputs
by α, and may replay the clean pass's dropout masks. Those fields are declared once here, with
their validation.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import DropoutReplayConfig, cfg_field


@dataclass
class SmoothnessConfig(DropoutReplayConfig):
    """Fields of the smoothness family (defaults: SMART section 5, also R3F's σ and λ = 1).

    adv_init_scale (`float`, *optional*, defaults to `1e-5`): σ, scale of the random perturbation.
    adv_alpha (`float`, *optional*, defaults to `1.0`): α (R3F's λ), weight of the smoothness term.
    """

    adv_init_scale: float = cfg_field(1e-5, "sigma: standard deviation of the N(0, sigma^2) initial perturbation.")
    adv_alpha: float = cfg_field(1.0, "alpha: weight of the adversarial smoothness term in the loss.")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_init_scale >= 0, "adv_init_scale", "must be >= 0")
        self._check(self.adv_alpha >= 0, "adv_alpha", "must be >= 0")


__all__ = ["SmoothnessConfig"]
