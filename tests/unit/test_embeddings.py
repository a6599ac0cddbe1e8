"""The embedding hook, unwrapping, dropout-mask replay and the first-block finder."""

from __future__ import annotations

import pytest
import torch

from advtune.dropout_replay import RNGState
from advtune.embeddings import (
    embedding_dim,
    forward_with_delta,
    hooks_left,
    input_embedding_module,
    perturb_embeddings,
    word_embeddings,
)
from advtune.errors import UsageError
from advtune.methods.yopo_blocks import first_block
from advtune.testing import tiny_model
from advtune.wrappers import unwrap


def _delta(batch, model, scale=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*batch["input_ids"].shape, embedding_dim(model), generator=g) * scale


def test_hook_adds_delta_to_word_embeddings_only(model, batch):
    model.eval()
    delta = _delta(batch, model)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    expected = model(inputs_embeds=word_embeddings(model, batch["input_ids"]) + delta, **rest).logits
    got = forward_with_delta(model, batch, delta).logits
    torch.testing.assert_close(got, expected)
    clean = model(**inputs).logits
    assert not torch.allclose(got, clean)
    torch.testing.assert_close(forward_with_delta(model, batch, None).logits, clean)
    assert hooks_left(model) == 0


def test_delta_receives_gradient_and_is_cast_to_output_dtype(model, batch):
    delta = _delta(batch, model).requires_grad_()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = forward_with_delta(model, batch, delta).logits
    logits.float().sum().backward()
    assert delta.grad is not None and delta.grad.dtype == torch.float32 and delta.grad.abs().sum() > 0


def test_hook_removed_after_exception_and_shape_mismatch_is_reported(model, batch):
    with pytest.raises(RuntimeError, match="does not match"):
        forward_with_delta(model, batch, torch.zeros(1, 2, embedding_dim(model)))
    assert hooks_left(model) == 0
    with pytest.raises(KeyError):
        with perturb_embeddings(model, _delta(batch, model)):
            assert hooks_left(model) == 1
            raise KeyError("boom")
    assert hooks_left(model) == 0


def test_works_through_wrappers(model, batch):
    model.eval()
    wrapped = torch.nn.DataParallel(model)  # same `.module` convention as DistributedDataParallel
    assert unwrap(wrapped) is model
    assert input_embedding_module(wrapped) is model.get_input_embeddings()
    delta = _delta(batch, model)
    torch.testing.assert_close(
        forward_with_delta(wrapped, batch, delta).logits, forward_with_delta(model, batch, delta).logits
    )
    assert hooks_left(wrapped) == 0


def test_works_on_peft_prompt_tuning_model(batch):
    peft = pytest.importorskip("peft")
    base = tiny_model(dropout=0.0)
    cfg = peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4)
    model = peft.get_peft_model(base, cfg).eval()
    assert input_embedding_module(model) is base.get_input_embeddings()
    delta = _delta(batch, base).requires_grad_()
    inputs = {k: v for k, v in batch.items() if k != "token_type_ids"}
    logits = forward_with_delta(model, inputs, delta).logits
    clean = forward_with_delta(model, inputs, None).logits
    assert not torch.allclose(logits, clean)
    logits.sum().backward()
    assert delta.grad.abs().sum() > 0
    assert hooks_left(model) == 0


def test_rng_replay_reuses_dropout_masks_and_then_moves_on(batch):
    model = tiny_model(dropout=0.3).train()
    rng = RNGState.capture("cpu")
    with rng.replay():
        a = forward_with_delta(model, batch, None).logits
    with rng.replay():
        b = forward_with_delta(model, batch, None).logits
    torch.testing.assert_close(a, b)
    c = forward_with_delta(model, batch, None).logits  # after the last replay the stream continues
    assert not torch.allclose(a, c)


def test_first_block_is_layer_zero(model):
    assert first_block(model) is model.bert.encoder.layer[0]
    with pytest.raises(UsageError, match="distinct Transformer blocks"):
        first_block(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_unwrap_sees_through_nested_wrappers_and_peft_only_when_asked(model):
    """One ``unwrap`` for the package: DDP-style ``.module``, ``torch.compile``'s ``_orig_mod`` and, on
    request, PEFT, in any nesting."""
    peft = pytest.importorskip("peft")

    class Compiled(torch.nn.Module):  # the attribute torch.compile's OptimizedModule keeps the model in
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    prompt = peft.get_peft_model(
        model, peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2, token_dim=32, num_layers=2)
    )
    wrapped = torch.nn.DataParallel(Compiled(prompt))
    assert unwrap(wrapped) is prompt  # runnable: the soft prompt stays
    assert unwrap(wrapped, peft=True) is model
    assert unwrap(model, peft=True) is model
