"""The virtual/smoothness family (VAT, SMART, TAT, R3F): loss = task loss + α · ℓs(f(x), f(x + δ)).

Every member perturbs the embeddings with random noise of scale σ (R3F keeps it; VAT moves it
adversarially first), weighs a symmetric divergence ℓs between the clean and the perturbed outputs
by α, and may replay the clean pass's dropout masks. Those fields are declared once here, with
their validation.

Mechanism diagnostics (``diag/*``): the training term compares two passes that differ by δ *and* by
their dropout masks, and at the papers' σ = ε = 1e-5 the masks dominate (docs/methods/vat.md). Every
``adv_diagnostics_every`` steps :class:`Diagnostics` re-runs the perturbed input without gradients
with the clean pass's masks, so ``diag/sym_kl`` and ``diag/abs_dlogit`` measure what δ alone does to
the outputs. The random stream is restored afterwards: training is the same with diagnostics on or off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..dropout_replay import RNGState
from .base import AdvMemoryConfig, DropoutReplayConfig, RadiusConfig, cfg_field, symmetric_kl


@dataclass
class SmoothnessConfig(DropoutReplayConfig, AdvMemoryConfig, RadiusConfig):
    """Fields of the smoothness family (defaults: SMART section 5, also R3F's σ and λ = 1).

    adv_init_scale (`float`, *optional*, defaults to `1e-5`): σ, scale of the random perturbation.
    adv_alpha (`float`, *optional*, defaults to `1.0`): α (R3F's λ), weight of the smoothness term.
    """

    adv_init_scale: float = cfg_field(1e-5, "sigma: standard deviation of the N(0, sigma^2) initial perturbation.")
    adv_alpha: float = cfg_field(1.0, "alpha: weight of the adversarial smoothness term in the loss.")
    adv_diagnostics_every: int = cfg_field(
        10, "Every N steps log diag/*: how much delta alone moves the outputs (one no-grad forward; 0 = never)."
    )

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_init_scale >= 0, "adv_init_scale", "must be >= 0")
        self._check(self.adv_alpha >= 0, "adv_alpha", "must be >= 0")
        self._check(self.adv_diagnostics_every >= 0, "adv_diagnostics_every", "must be >= 0 (0 = never)")


def output_shift(clean: torch.Tensor, shifted: torch.Tensor, regression: bool) -> dict[str, float]:
    """``diag/sym_kl`` (symmetric KL, squared error for regression) and ``diag/abs_dlogit`` (mean |Δlogit|
    over examples and outputs) between two outputs of the same inputs; for classification also
    ``diag/flip_rate``, the share of examples whose predicted label δ changes (the report's plainest
    answer to "did δ change the model's outputs")."""
    clean, shifted = clean.detach().float(), shifted.detach().float()
    out = {
        "diag/sym_kl": float(symmetric_kl(clean, shifted, regression)),
        "diag/abs_dlogit": float((shifted - clean).abs().mean()),
    }
    if not regression:
        out["diag/flip_rate"] = float((shifted.argmax(-1) != clean.argmax(-1)).float().mean())
    return out


class Diagnostics:
    """Decides which steps are diagnosed and replays the clean pass's dropout masks for them."""

    def __init__(self) -> None:
        self.steps = 0

    def start(self, every: int, device: torch.device) -> RNGState | None:
        """Call right before the clean forward: the masks' RNG snapshot on a diagnosed step, else ``None``."""
        self.steps += 1
        return RNGState.capture(device) if every > 0 and (self.steps - 1) % every == 0 else None

    @staticmethod
    @contextlib.contextmanager
    def masks(state: RNGState) -> Iterator[None]:
        """No gradients, and every :meth:`RNGState.restore` inside gives the clean pass's masks; the
        random stream is put back on exit."""
        devices = [state.device] if state.cuda is not None else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            yield


__all__ = ["Diagnostics", "SmoothnessConfig", "output_shift"]
