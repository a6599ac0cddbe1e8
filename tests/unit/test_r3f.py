"""R3F and R4F (Aghajanyan et al. 2020) on tiny random models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advtune.embeddings import forward_with_delta
from advtune.errors import UsageError
from advtune.methods import get_method
from advtune.methods.base import model_inputs, symmetric_kl
from advtune.methods.r4f import head_linear
from advtune.testing import tiny_model, tiny_tokenizer


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _step(name: str, batch, seed: int = 0, dropout: float = 0.1, model=None, **cfg):
    model = model if model is not None else tiny_model(num_labels=2, dropout=dropout, seed=0)
    method = get_method(name, **cfg)
    model = method.setup(model).train()
    torch.manual_seed(seed)
    out = method.step(model, dict(batch), lambda loss: loss.backward())
    return model, method, out


def test_noise_is_zero_on_padding_and_bounded_by_sigma(batch):
    assert (batch["attention_mask"] == 0).any(), "the fixture batch must hold padding"
    model = tiny_model(dropout=0.0)
    pad = batch["attention_mask"] == 0
    for noise in ("normal", "uniform"):
        z = get_method("r3f", adv_noise=noise, adv_init_scale=0.5).noise(model, batch)
        assert z.shape == (*batch["input_ids"].shape, model.config.hidden_size)
        assert torch.equal(z[pad], torch.zeros_like(z[pad]))
        assert (z[~pad].abs() > 0).all()
    z = get_method("r3f", adv_noise="uniform", adv_init_scale=0.5).noise(model, batch)
    assert z.abs().max() <= 0.5


def test_noise_makes_a_positive_finite_kl_term_that_enters_the_loss(batch):
    """Dropout off: the two passes differ only by z, so KL_S > 0 comes from the noise alone."""
    _, _, out = _step("r3f", batch, dropout=0.0, adv_init_scale=0.5)
    kl = out.metrics["r3f/sym_kl"]
    assert 0 < kl < float("inf")
    assert out.loss.item() == pytest.approx(out.metrics["adv/clean_loss"] + kl, rel=1e-6)
    _, _, tiny = _step("r3f", batch, dropout=0.0, adv_init_scale=0.0)
    assert tiny.metrics["r3f/sym_kl"] == 0.0  # σ = 0: f(x + 0) = f(x)


def test_sym_kl_is_the_symmetric_kl_of_the_clean_and_noised_outputs(batch):
    model = tiny_model(num_labels=3, dropout=0.0, seed=2)
    method = get_method("r3f", adv_init_scale=0.3, adv_alpha=0.5)
    torch.manual_seed(4)
    z = method.noise(model, batch)
    clean = model(**model_inputs(batch)).logits
    noised = forward_with_delta(model, batch, z).logits
    labels = batch["labels"] % 3
    torch.manual_seed(4)
    out = method.compute_loss(model, {**batch, "labels": labels})
    p, q = F.softmax(clean, -1), F.softmax(noised, -1)
    by_hand = ((p * (p.log() - q.log())).sum(-1) + (q * (q.log() - p.log())).sum(-1)).mean()
    assert out.metrics["r3f/sym_kl"] == pytest.approx(by_hand.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(F.cross_entropy(clean, labels).item() + 0.5 * by_hand.item(), rel=1e-5)


def test_regression_uses_the_squared_error_between_outputs(batch):
    model = tiny_model(num_labels=1, regression=True, dropout=0.0, seed=3)
    method = get_method("r3f", adv_init_scale=0.3)
    torch.manual_seed(5)
    z = method.noise(model, batch)
    clean = model(**model_inputs(batch)).logits
    noised = forward_with_delta(model, batch, z).logits
    torch.manual_seed(5)
    out = method.compute_loss(model, {**batch, "labels": batch["labels"].float()})
    assert out.metrics["r3f/sym_kl"] == pytest.approx(F.mse_loss(clean, noised).item(), rel=1e-6)
    assert out.metrics["r3f/sym_kl"] == pytest.approx(symmetric_kl(clean, noised, True).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["r3f", "r4f"])
def test_gradients_reach_every_trainable_parameter(name, batch):
    model, _, _ = _step(name, batch, adv_init_scale=0.1)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


def test_lambda_zero_is_standard_fine_tuning(batch):
    """Same seed, dropout on: λ = 0 gives standard's loss, gradients and random stream."""
    _, _, std = _step("standard", batch, seed=7)
    g_std, after_std = _grads(_step("standard", batch, seed=7)[0]), torch.rand(3)
    _, _, r3f = _step("r3f", batch, seed=7, adv_alpha=0.0)
    g_r3f, after_r3f = _grads(_step("r3f", batch, seed=7, adv_alpha=0.0)[0]), torch.rand(3)
    assert torch.equal(std.loss, r3f.loss)
    assert g_std.keys() == g_r3f.keys() and all(torch.equal(g_std[n], g_r3f[n]) for n in g_std)
    assert torch.equal(after_std, after_r3f)


def test_reuse_dropout_leaves_only_the_noise_in_the_kl_term(batch):
    _, _, fresh = _step("r3f", batch, dropout=0.3, adv_init_scale=0.0)
    _, _, reused = _step("r3f", batch, dropout=0.3, adv_init_scale=0.0, adv_reuse_dropout=True)
    assert fresh.metrics["r3f/sym_kl"] > 0 and reused.metrics["r3f/sym_kl"] == 0.0


def test_invalid_noise_is_a_usage_error():
    with pytest.raises(UsageError, match=r"invalid adv_noise='laplace': choose from normal, uniform"):
        get_method("r3f", adv_noise="laplace")


# ------------------------------------------------------------------------------------------- R4F


def test_r4f_normalises_the_final_head_layer_during_training(batch):
    model, method, _ = _step("r4f", batch, adv_init_scale=0.1)
    head = head_linear(model)
    assert head is model.classifier
    assert torch.nn.utils.parametrize.is_parametrized(head, "weight")
    assert torch.linalg.matrix_norm(head.weight.detach(), ord=2).item() == pytest.approx(1.0, rel=1e-3)
    raw = head.parametrizations.weight.original
    assert torch.linalg.matrix_norm(raw.detach(), ord=2).item() != pytest.approx(1.0, rel=1e-2)


def test_r4f_inference_model_has_unit_spectral_norm_and_saves_and_loads_identically(batch, tmp_path):
    model, method, _ = _step("r4f", batch, adv_init_scale=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for seed in range(3):  # a few updates: the raw weight moves away from the normalised one
        opt.step()
        opt.zero_grad()
        torch.manual_seed(seed)
        method.step(model, dict(batch), lambda loss: loss.backward())
    inference = method.inference_model(model).eval()
    with torch.no_grad():
        before = inference(**model_inputs(batch)).logits
    head = head_linear(inference)
    assert not torch.nn.utils.parametrize.is_parametrized(head)
    assert torch.linalg.matrix_norm(head.weight, ord=2).item() == pytest.approx(1.0, rel=1e-3)
    method.save_inference_model(inference, tiny_tokenizer(), tmp_path)
    loaded, _ = type(method).load_inference_model(tmp_path, {})
    with torch.no_grad():
        after = loaded.eval()(**model_inputs(batch)).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_head_linear_is_the_last_linear_outside_the_encoder():
    from advtune.testing import tiny_family_model

    roberta = tiny_family_model("roberta")
    assert head_linear(roberta) is roberta.classifier.out_proj
    llama = tiny_family_model("llama-right")
    assert head_linear(llama) is llama.score
