"""FGM / FGSM adversarial training on word embeddings: Miyato et al., "Adversarial Training Methods for
Semi-Supervised Text Classification" (ICLR 2017, arXiv:1605.07725) for the L2 form, Goodfellow et al.
(arXiv:1412.6572) for the sign form, as written in CAT (Pan et al., "Improved Text Classification via
Contrastive Adversarial Training", AAAI 2022) equations 3-6.

Per step: a clean forward with a zero δ and ``backward(clean_loss)`` gives the parameter gradients of
the clean loss *and* g = ∂L/∂X at once; r = ε g/‖g‖_2 (``l2``, eq. 6) or ε sign(g) (``linf``, eq. 5)
per example; then a forward on X + r. The optimizer steps on ∇(clean + w · adv)/(1 + w), w =
``adv_weight``: a weighted *mean* of the two losses, so the learning rate means what it means for
standard fine-tuning (and for FreeLB, PGD, CAT, which all train on one loss-sized objective).
Cost: 2 forward + 2 backward passes.

Defaults: ``l2`` with ε = 0.1 per example and ``adv_weight`` = 1, i.e. (clean + adv)/2:
Goodfellow's α = 0.5 and CAT's (1 − λ)/2 (CE + CE_adv) at λ = 0 (Miyato's sum clean + adv is the
same objective at twice the learning rate). Neither CAT nor Miyato fixes ε for BERT-size models (CAT
grid-searches ε ∈ {1e-4, 1e-3, 5e-3, 2e-2} for its sign form). The widespread BERT recipe uses ε = 1
normalised over the *whole batch's* embedding gradient, ≈ 1/sqrt(B) ≈ 0.18 per example at B = 32;
per example, ε = 1 kept MiniLM at chance on SST-2 (token-embedding norms are ≈ 1.1, a short sentence
≈ 4), ε = 0.3 learned slowly and ε = 0.1 learned (docs/methods/fgm.md).
Deviations: CAT's eq. 5-6 print r = -ε ...; the minus sign contradicts the stated max of eq. 3
under the linearisation of eq. 4, so we step *up* the gradient as Goodfellow and Miyato do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..dropout_replay import dropout_rng, maybe_replay
from ..perturbation import ascent_step, init_delta
from .base import Backward, DropoutReplayConfig, Method, StepOutput, cfg_field
from .embedding_space import EmbeddingFamilyConfig, adv_loss, delta_frame, delta_metrics


@dataclass
class FGMConfig(DropoutReplayConfig, EmbeddingFamilyConfig):
    """FGM/FGSM hyper-parameters; ε and the norm are :class:`EmbeddingFamilyConfig`'s.

    Args:
        adv_epsilon (`float`, *optional*, defaults to `0.1`): size ε of the single step (= the ball radius),
            per example (Frobenius norm over tokens x hidden for ``l2``).
        adv_norm (`str`, *optional*, defaults to `"l2"`): ``l2`` (FGM, eq. 6) or ``linf`` (FGSM, eq. 5).
        adv_weight (`float`, *optional*, defaults to `1.0`): weight w of the adversarial loss; the
            objective is (clean + w · adv)/(1 + w).
        adv_reuse_dropout (`bool`, *optional*, defaults to `False`): same dropout mask in both passes.
    """

    adv_epsilon: float = cfg_field(0.1, "size epsilon of the single gradient step (per example)")
    adv_norm: str = cfg_field("l2", "l2 = FGM (normalised gradient), linf = FGSM (sign of the gradient)")
    adv_weight: float = cfg_field(1.0, "weight w of the adversarial loss: objective (clean + w*adv)/(1+w)")

    def validate(self) -> None:
        self._check(self.adv_epsilon > 0, "adv_epsilon", "must be > 0")
        super().validate()
        self._check(self.adv_weight >= 0, "adv_weight", "must be >= 0")


class FGM(Method):
    name = "fgm"
    config_class = FGMConfig
    paper = {
        "title": "Adversarial Training Methods for Semi-Supervised Text Classification",
        "arxiv": "1605.07725",
    }

    def step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: Backward) -> StepOutput:
        cfg, backward = self.config, Backward.of(backward)
        like, mask = delta_frame(model, inputs)
        zero = init_delta(like, mask, "zero").requires_grad_()
        rng = dropout_rng(cfg.adv_reuse_dropout, model, like.device)
        with backward.no_sync(), maybe_replay(rng):
            clean = adv_loss(model, inputs, zero)
            backward(clean / (1 + cfg.adv_weight))
        r = ascent_step(zero, zero.grad, mask, cfg.adv_epsilon, cfg.adv_epsilon, cfg.adv_norm)
        with maybe_replay(rng):
            adv = adv_loss(model, inputs, r)
            backward(cfg.adv_weight / (1 + cfg.adv_weight) * adv)
        metrics = {"adv/loss": float(adv.detach()), "adv/clean_loss": float(clean.detach())}
        metrics.update(delta_metrics(r, mask, cfg.adv_norm))
        return StepOutput(((clean + cfg.adv_weight * adv) / (1 + cfg.adv_weight)).detach(), metrics)
