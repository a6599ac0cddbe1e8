"""The embedding-space family (FGM, PGD, FreeAT, FreeLB, YOPO): its shared fields and δ helpers.

:class:`EmbeddingFamilyConfig` declares the fields every adversary on the word embeddings has
(``adv_epsilon``, ``adv_norm``) and :class:`AscentConfig` those of the iterated ones
(``adv_step_size``, ``adv_init``, ``adv_init_scale``), each once with its validation and one meaning
everywhere; a method's config only retunes a default or help text to its paper's (a redeclared field
keeps its place and its validation). :func:`delta_frame` gives the shape/mask δ lives in;
:func:`adv_loss` runs one forward pass with δ on the word embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..embeddings import embedding_dim, forward_with_delta
from ..perturbation import INITS, NORMS, masked_norm
from .base import RadiusConfig, cfg_field, is_regression, task_loss


@dataclass
class EmbeddingFamilyConfig(RadiusConfig):
    """What every adversary on the word embeddings has (FGM, PGD, FreeAT, FreeLB, YOPO), declared once.

    Args:
        adv_epsilon (`float`, *optional*, defaults to `0.15`):
            radius ε of the per-example perturbation ball (Frobenius norm over tokens x hidden for
            ``l2``); ``0`` = unbounded, as in FreeLB's released settings.
        adv_norm (`str`, *optional*, defaults to `"l2"`): ``l2`` (normalised gradient) or ``linf`` (sign).
    """

    adv_epsilon: float = cfg_field(0.15, "perturbation radius epsilon per example (0 = unbounded)")
    adv_norm: str = cfg_field("l2", "perturbation norm: l2 (normalised gradient steps) or linf (sign steps)")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_epsilon >= 0, "adv_epsilon", "must be >= 0 (0 = unbounded)")
        self._check(self.adv_norm in NORMS, "adv_norm", f"choose from {', '.join(NORMS)}")


@dataclass
class AscentConfig(EmbeddingFamilyConfig):
    """Iterated ascent from a random start (PGD, FreeAT, FreeLB, YOPO; defaults: FreeLB Table 7, RTE column).

    Args:
        adv_step_size (`float`, *optional*, defaults to `0.03`): ascent step size α.
        adv_init (`str`, *optional*, defaults to `"uniform"`): ``zero``, ``uniform`` (FreeLB's
            ``U(-s, s)/sqrt(N_δ)`` for ``l2``) or ``normal``.
        adv_init_scale (`float`, *optional*, defaults to `0.15`): ``s`` of the random init (FreeLB uses ε).
    """

    adv_step_size: float = cfg_field(0.03, "ascent step size alpha")
    adv_init: str = cfg_field("uniform", "initial perturbation: zero, uniform (U(-s,s)/sqrt(N) for l2) or normal")
    adv_init_scale: float = cfg_field(0.15, "magnitude s of the random initial perturbation")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_step_size > 0, "adv_step_size", "must be > 0")
        self._check(self.adv_init in INITS, "adv_init", f"choose from {', '.join(INITS)}")
        self._check(self.adv_init_scale >= 0, "adv_init_scale", "must be >= 0")


def delta_frame(model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(like, mask)``: an empty fp32 ``(B, L, H)`` tensor on the batch's device and the real-token mask."""
    ids = inputs["input_ids"]
    like = torch.empty(*ids.shape, embedding_dim(model), dtype=torch.float32, device=ids.device)
    mask = inputs.get("attention_mask")
    return like, (mask if mask is not None else torch.ones_like(ids))


def adv_loss(model: torch.nn.Module, inputs: dict[str, Any], delta: torch.Tensor | None) -> torch.Tensor:
    """Task loss (fp32) of one forward pass with ``delta`` added to the word embeddings."""
    logits = forward_with_delta(model, inputs, delta).logits
    return task_loss(logits, inputs["labels"], is_regression(model))


def delta_metrics(delta: torch.Tensor, mask: torch.Tensor, norm: str) -> dict[str, float]:
    """``adv/delta_norm``: mean per-example norm of δ (in the method's norm)."""
    return {"adv/delta_norm": float(masked_norm(delta.detach(), mask, norm).mean())}
