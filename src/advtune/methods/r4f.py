"""R4F: R3F plus spectral normalisation of the classification head (Aghajanyan et al., arXiv:2008.03156,
section 3.2): constraining the head to be 1-Lipschitz bounds how far the noise term can move the
representation-to-output map, the paper's second guard against representational collapse.

The head's final linear layer (the last ``nn.Linear`` outside ``base_model``: BERT's ``classifier``,
RoBERTa's ``classifier.out_proj``, a decoder's ``score``) is wrapped by
``torch.nn.utils.parametrizations.spectral_norm`` in :meth:`R4F.setup`, so its weight is W / σ_max(W)
with one power iteration per training forward, as the authors' fairseq code does for ``out_proj``.
For saving, :meth:`R4F.inference_model` folds W / σ_max(W) into a plain weight (in eval mode, without a
further power iteration), so the run folder holds an ordinary ``transformers`` model that predicts what
the trained one did.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import UsageError
from ..wrappers import unwrap
from .r3f import R3F, R3FConfig


def head_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The final linear layer of the classification head: the last ``nn.Linear`` outside ``base_model``
    (under PEFT: the trainable copy of the head, which peft's wrapper lists after the frozen original)."""
    inner = unwrap(model, peft=True)
    body = getattr(inner, "base_model", None)
    skip = {id(m) for m in body.modules()} if isinstance(body, torch.nn.Module) and body is not inner else set()
    linears = [m for m in inner.modules() if isinstance(m, torch.nn.Linear) and id(m) not in skip]
    if not linears:
        raise UsageError(f"{type(inner).__name__} has no linear classification head to spectrally normalise")
    return linears[-1]


class R4F(R3F):
    name = "r4f"
    config_class = R3FConfig

    def setup(self, model: torch.nn.Module, tokenizer: Any = None, task: Any = None) -> torch.nn.Module:
        head = head_linear(model)
        if not parametrize.is_parametrized(head, "weight"):
            spectral_norm(head)
        return model

    def inference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` with the head's spectral normalisation folded into its weight (in place: called once
        training is over; the result is an ordinary model that saves and loads as one)."""
        head = head_linear(model)
        if parametrize.is_parametrized(head, "weight"):
            training = head.training
            head.eval()  # the eval-mode weight: W / σ from the current power-iteration vectors, no update
            with torch.no_grad():
                parametrize.remove_parametrizations(head, "weight", leave_parametrized=True)
            head.train(training)
        return model


__all__ = ["R4F", "head_linear"]
