"""TAT: targeted adversarial training, VAT whose inner steps steer toward the labels the model confuses.

Paper: Pereira et al., "Targeted Adversarial Training for Natural Language Understanding" (NAACL 2021,
arXiv 2104.05847), Algorithm 1. Per example a target y_t ≠ y is sampled with probability ∝ e(y, y_t),
a running tally of the model's errors; the K inner steps *descend* l(f(x+δ), y_t) (δ ← Π(δ − η g));
the parameters are updated with L(f(x), y) + α · ℓs(f(x), f(x+δ)), as in VAT (the paper's only change).
Defaults (section 3.1, after SMART): σ = ε = 1e-5, η = 1e-4, K = 1, α = 1. Cost: as VAT (K + 2 forwards).

The tally (section 2): uniform at the start; during an epoch the clean training predictions f(x) of
every step are counted into a confusion matrix (gold × predicted); at each epoch end it becomes the
sampling table, plus ``adv_tally_smoothing`` in every off-diagonal cell so no target has zero
probability (a choice: the paper does not say how it avoids zeros). Under DDP the counts are summed over
processes at the epoch end. ``adv_fixed_confusion`` replaces the online tally by a fixed matrix (the
paper's oracle experiment). Regression (section 2, last paragraph): the value range is cut into
``adv_regression_bins`` equal bins, gold and predicted values are tallied by bin, a target bin ≠ the gold
bin is sampled the same way and the target value is drawn uniformly inside it; the targeted loss is the
squared error. The value range is ``adv_value_range`` or, when unset, the range of the training labels
seen so far. Targets are drawn from a ``torch.Generator`` seeded with ``adv_seed`` (default: the torch
seed in force at the first step, i.e. the run's ``--seed``), whose state is checkpointed with the tally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..distributed import all_reduce_sum
from ..errors import UsageError
from .base import cfg_field, task_loss
from .tat_tally import ErrorTally, load_confusion
from .vat import VAT, Objective, VATConfig

logger = logging.getLogger(__name__)


@dataclass
class TATConfig(VATConfig):
    """VAT's fields (η = 1e-4 here, TAT section 3.1) plus the error tally's.

    adv_tally_smoothing (`float`, *optional*, defaults to `1.0`): pseudo-count added to every e(y, y_t), y_t ≠ y.
    adv_fixed_confusion (`str`, *optional*): JSON or CSV confusion matrix (rows gold, columns predicted) to
        sample targets from instead of the online tally (oracle experiment).
    adv_regression_bins (`int`, *optional*, defaults to `10`): bins of the value range for regression tasks.
    adv_value_range (`str`, *optional*): ``"lo,hi"`` value range for regression (default: labels seen).
    adv_seed (`int`, *optional*): seed of the target sampler (default: the torch seed at the first step).
    """

    adv_step_size: float = cfg_field(1e-4, "eta: size of each normalised inner (descent) step; TAT section 3.1.")
    adv_tally_smoothing: float = cfg_field(1.0, "Pseudo-count added to every off-diagonal error tally cell.")
    adv_fixed_confusion: str | None = cfg_field(None, "JSON/CSV confusion matrix (gold rows) to use as a fixed tally.")
    adv_regression_bins: int = cfg_field(10, "Regression: number of equal bins of the value range.")
    adv_value_range: str | None = cfg_field(None, "Regression: 'lo,hi' value range (default: training labels seen).")
    adv_seed: int | None = cfg_field(None, "Seed of the target sampler (default: the run's torch seed).")

    def validate(self) -> None:
        super().validate()
        self._check(self.adv_tally_smoothing >= 0, "adv_tally_smoothing", "must be >= 0")
        self._check(self.adv_regression_bins >= 2, "adv_regression_bins", "must be >= 2")
        if self.adv_fixed_confusion is not None:
            load_confusion(self.adv_fixed_confusion)  # raises UsageError for a missing or malformed file
        if self.adv_value_range is not None:
            self.value_range()

    def value_range(self) -> tuple[float, float] | None:
        if self.adv_value_range is None:
            return None
        try:
            lo, hi = (float(v) for v in str(self.adv_value_range).split(","))
        except ValueError:
            lo = hi = float("nan")
        self._check(lo < hi, "adv_value_range", "expected 'lo,hi' with lo < hi, e.g. '0,5'")
        return lo, hi


class TAT(VAT):
    name = "tat"
    config_class = TATConfig
    paper = {"title": "Targeted Adversarial Training for Natural Language Understanding", "arxiv": "2104.05847"}
    descend = True

    def __init__(self, config: TATConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.tally: ErrorTally | None = None
        self.generator: torch.Generator | None = None
        self.label_names: list[str] | None = None
        self.targets: torch.Tensor | None = None  # this step's target labels (classification), for diag/target_gain

    def setup(self, model: torch.nn.Module, tokenizer: Any = None, task: Any = None) -> torch.nn.Module:
        id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
        self.label_names = [str(id2label.get(i, i)) for i in range(len(id2label))] or None
        return model

    def _tally(self, num_classes: int, regression: bool) -> ErrorTally:
        if self.tally is None:
            cfg = self.config
            fixed = load_confusion(cfg.adv_fixed_confusion) if cfg.adv_fixed_confusion else None
            value_range = cfg.value_range() if regression else None
            self.tally = ErrorTally(num_classes, cfg.adv_tally_smoothing, fixed, value_range)
        elif self.tally.num_classes != num_classes:
            raise UsageError(f"TAT tally has {self.tally.num_classes} classes but the model predicts {num_classes}")
        if self.generator is None:
            seed = self.config.adv_seed if self.config.adv_seed is not None else torch.initial_seed()
            self.generator = torch.Generator().manual_seed(int(seed) % 2**63)
        return self.tally

    def inner_objective(
        self, clean_logits: torch.Tensor, inputs: dict[str, Any], regression: bool
    ) -> tuple[Objective, dict[str, float]]:
        labels = inputs["labels"].detach().cpu()
        clean = clean_logits.detach().float().cpu()
        device = clean_logits.device
        if regression:
            tally = self._tally(self.config.adv_regression_bins, True)
            preds = clean.reshape(-1)
            tally.observe_values(labels.float(), preds)
            targets = tally.sample_values(labels.float(), self.generator).to(device)
        else:
            tally = self._tally(clean.shape[-1], False)
            tally.observe(labels.long(), clean.argmax(-1))
            targets = tally.sample(labels.long(), self.generator).to(device)
        self.targets = None if regression else targets
        return (lambda adv_logits: task_loss(adv_logits, targets, regression)), {}

    def diagnose_inner(self, model: torch.nn.Module, batch: dict[str, Any], shifted: torch.Tensor, masks):
        """``diag/target_gain``: mean gain of the target label's probability from δ_0 to δ_K (same masks)."""
        if self.targets is None or self.start is None:
            return {}
        start = self.replayed(model, batch, self.start, masks)
        p_end = shifted.float().softmax(-1).gather(-1, self.targets[:, None])
        p_start = start.float().softmax(-1).gather(-1, self.targets[:, None])
        return {"diag/target_gain": float((p_end - p_start).mean())}

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        if self.tally is None:
            return {}
        self.tally.counts.copy_(all_reduce_sum(self.tally.counts))
        logs = self.tally.summary(self.label_names)
        logger.info("TAT error tally after epoch %s (rows gold, columns predicted):\n%s", epoch, self.tally.counts)
        self.tally.refresh()
        return logs

    def state_dict(self) -> dict[str, Any]:
        if self.tally is None:
            return {}
        state = self.tally.state_dict()
        if self.generator is not None:
            state["rng_state"] = self.generator.get_state().tolist()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.tally = ErrorTally.from_state_dict(state, self.config.adv_tally_smoothing)
        if state.get("rng_state") is not None:
            self.generator = torch.Generator()
            self.generator.set_state(torch.as_tensor(state["rng_state"], dtype=torch.uint8))
