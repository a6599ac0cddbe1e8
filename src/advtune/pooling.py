"""Which token stands for the sentence: the first one for encoders, the last real one for decoders.

Methods that read a sentence representation from the hidden states (CAT's contrastive term, any
representation-level regulariser) must pick the same token the model's own classification head
pools, or the representation they shape is not the one the classifier reads:

* encoders (BERT, RoBERTa, ALBERT, ELECTRA, DeBERTa, XLM-R, DistilBERT, ...) put ``[CLS]`` / ``<s>``
  first and their heads read position 0;
* decoders with a sequence-classification head (Llama, Qwen2, Mistral, GPT-2, ...) read the hidden
  state of the **last non-padding token**, wherever the padding is (left or right).

The family is recognised from the model type, not from attribute paths: a model type that has a
causal-LM head but no masked-LM head in ``transformers``' auto mappings is treated as a decoder
(XLNet lands there too, and its head also pools the last token). ``pooling="first"|"last"``
overrides the guess.
"""

from __future__ import annotations

from typing import Literal

import torch

from .wrappers import unwrap

Pooling = Literal["first", "last"]


def pooling_for(model: torch.nn.Module) -> Pooling:
    """``"last"`` for decoder-only families, ``"first"`` for everything else."""
    config = getattr(unwrap(model, peft=True), "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        return "first"
    if getattr(config, "summary_type", None) == "last":
        return "last"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "last"
    return "first"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row; correct for left and right padding alike."""
    mask = attention_mask.to(torch.long)
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return (positions * mask).argmax(-1)


def sentence_representation(
    model: torch.nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    pooling: Pooling | None = None,
) -> torch.Tensor:
    """The ``(N, H)`` sentence vectors of ``hidden_states`` ``(N, L, H)``.

    Args:
        model: the model that produced the states (wrappers are looked through); it decides the pooling.
        hidden_states: usually ``outputs.hidden_states[-1]``. For multiple choice the model sees
            ``(B * k, L, H)``; pass that and the ``(B, k, L)`` mask, which is flattened to match.
        attention_mask: 1 on real tokens. ``None`` means no padding (the last position is the last token).
        pooling: force ``"first"`` or ``"last"`` instead of deciding from the model type.
    """
    how = pooling or pooling_for(model)
    if how == "first":
        return hidden_states[:, 0]
    n, length = hidden_states.shape[0], hidden_states.shape[1]
    if attention_mask is None:
        return hidden_states[:, -1]
    mask = attention_mask.reshape(n, -1)
    if mask.shape[1] < length:  # a prompt adapter put virtual tokens before the text: they are real positions
        mask = torch.cat([mask.new_ones(n, length - mask.shape[1]), mask], dim=1)
    index = last_token_index(mask)
    return hidden_states[torch.arange(n, device=hidden_states.device), index]


__all__ = ["last_token_index", "pooling_for", "sentence_representation"]
