"""Standard fine-tuning: cross-entropy (classification) or MSE (regression) on clean inputs.

The baseline of every paper here. One forward and one backward pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, MethodConfig, StepOutput, is_regression, model_inputs, task_loss


@dataclass
class StandardConfig(MethodConfig):
    """Standard fine-tuning has no hyper-parameters of its own (the optimizer's are TrainingArguments)."""


class Standard(Method):
    name = "standard"
    config_class = StandardConfig
    paper = {"title": "BERT: Pre-training of Deep Bidirectional Transformers", "arxiv": "1810.04805"}

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> StepOutput:
        logits = model(**model_inputs(inputs)).logits
        loss = task_loss(logits, inputs["labels"], is_regression(model))
        return StepOutput(loss, {})
