"""CAT: the embedding-matrix FGSM step, AT^V vs AT^x, NT-Xent, the projection head, reductions."""

from __future__ import annotations

import math

import pytest
import torch

from advtune.embeddings import (
    hooks_left,
    input_embedding_module,
    perturb_embedding_rows,
    perturb_embeddings,
    row_gradients,
    word_embeddings,
)
from advtune.errors import UsageError
from advtune.methods import get_method
from advtune.methods.base import model_inputs, task_loss
from advtune.methods.cat import CAT, HEAD, nt_xent
from advtune.testing import tiny_model


def _clean_grad(model, batch):
    """CE on the clean batch and its gradient w.r.t. the looked-up word embeddings."""
    probe = torch.zeros(*batch["input_ids"].shape, model.config.hidden_size, requires_grad=True)
    with perturb_embeddings(model, probe):
        logits = model(**model_inputs(batch)).logits
    ce = task_loss(logits, batch["labels"], False)
    (grad,) = torch.autograd.grad(ce, probe)
    return ce.detach(), grad


def _loss(model, batch):
    with torch.no_grad():
        return task_loss(model(**model_inputs(batch)).logits, batch["labels"], False)


@pytest.mark.parametrize("target", ["matrix", "embeddings"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_perturbation_increases_the_clean_loss(model, batch, target, norm):
    """The paper prints r = -eps*sign(g) (eqs. 5-6); the step must ascend, and -r must descend."""
    model.eval()
    method = CAT(adv_epsilon=1e-3 if norm == "linf" else 1e-2, adv_target=target)  # first-order regime
    clean, grad = _clean_grad(model, batch)
    ctx, _ = method.perturbation(model, batch["input_ids"], grad, batch["attention_mask"], norm)
    with ctx:
        adv = _loss(model, batch)
    assert adv > clean
    ctx, _ = method.perturbation(model, batch["input_ids"], -grad, batch["attention_mask"], norm)
    with ctx:
        assert _loss(model, batch) < clean
    assert hooks_left(model) == 0


def _added(model, batch, ctx):
    """What the perturbation adds to every looked-up embedding (B, L, H)."""
    with torch.no_grad():
        clean = word_embeddings(model, batch["input_ids"])
        with ctx:
            return word_embeddings(model, batch["input_ids"]) - clean


def test_matrix_perturbation_norms_and_padding(model, batch):
    model.eval()
    eps = 3e-3
    _, grad = _clean_grad(model, batch)
    mask = batch["attention_mask"]
    ids = batch["input_ids"]
    token_ids, rows = row_gradients(grad * mask.unsqueeze(-1), ids)
    ctx, size = CAT(adv_epsilon=eps).perturbation(model, ids, grad, mask, "linf")
    added = _added(model, batch, ctx)
    assert size == pytest.approx(eps)
    assert added.abs().max().item() == pytest.approx(eps, rel=1e-5)  # max-norm exactly eps
    assert torch.all(added[mask.bool()].abs().amax(-1) > 0)  # every real token is perturbed
    assert torch.all(added[~mask.bool()] == 0)  # the [PAD] row gets no perturbation
    ctx, size = CAT(adv_epsilon=eps).perturbation(model, ids, grad, mask, "l2")
    added = _added(model, batch, ctx)
    # L2: ||r||_F = eps over the perturbed rows of V (each row counted once, however often it occurs)
    first = {}
    for pos, tok in enumerate(ids.flatten().tolist()):
        first.setdefault(tok, pos)
    r_rows = added.reshape(-1, added.shape[-1])[[first[t] for t in token_ids.tolist()]]
    assert size == pytest.approx(eps, rel=1e-5)
    assert r_rows.norm().item() == pytest.approx(eps, rel=1e-4)
    torch.testing.assert_close(r_rows, eps * rows / rows.norm(), atol=1e-7, rtol=1e-4)


def test_embeddings_target_l2_is_per_example(model, batch):
    model.eval()
    eps = 0.3
    _, grad = _clean_grad(model, batch)
    ctx, _ = CAT(adv_epsilon=eps, adv_target="embeddings").perturbation(
        model, batch["input_ids"], grad, batch["attention_mask"], "l2"
    )
    added = _added(model, batch, ctx)
    torch.testing.assert_close(added.flatten(1).norm(dim=1), torch.full((added.shape[0],), eps), rtol=1e-4, atol=0)
    assert torch.all(added[~batch["attention_mask"].bool()] == 0)


def test_repeated_token_same_perturbation_under_at_v_only(model, tokenizer):
    """AT^V perturbs a row of V, so both occurrences of "good" move together; AT^x moves each position."""
    model.eval()
    enc = tokenizer(["good movie but good plot", "bad film"], padding=True, return_tensors="pt")
    batch = {**enc, "labels": torch.tensor([1, 0])}
    good = tokenizer.convert_tokens_to_ids("good")
    where = (batch["input_ids"][0] == good).nonzero().flatten()
    assert len(where) == 2
    _, grad = _clean_grad(model, batch)
    assert not torch.allclose(grad[0, where[0]], grad[0, where[1]])  # the positions' gradients differ
    results = {}
    for target in ("matrix", "embeddings"):
        ctx, _ = CAT(adv_epsilon=1e-2, adv_target=target).perturbation(
            model, batch["input_ids"], grad, batch["attention_mask"], "linf"
        )
        added = _added(model, batch, ctx)
        results[target] = torch.equal(added[0, where[0]], added[0, where[1]])
    assert results == {"matrix": True, "embeddings": False}


def test_sparse_rows_equal_the_dense_matrix_computation(model, batch):
    """row_gradients + the row hook == autograd through the full (vocab x hidden) weight + an edited V."""
    model.eval()
    eps = 5e-3
    weight = input_embedding_module(model).weight
    logits = model(**model_inputs(batch)).logits
    (dense,) = torch.autograd.grad(task_loss(logits, batch["labels"], False), weight)
    _, grad = _clean_grad(model, batch)
    token_ids, rows = row_gradients(grad, batch["input_ids"])
    torch.testing.assert_close(rows, dense[token_ids], atol=1e-7, rtol=1e-5)
    others = torch.ones(dense.shape[0], dtype=torch.bool)
    others[token_ids] = False
    assert torch.all(dense[others] == 0)  # only the batch's rows have a gradient
    for norm in ("linf", "l2"):
        r_dense = eps * (dense.sign() if norm == "linf" else dense / dense.norm())
        ctx, _ = CAT(adv_epsilon=eps).perturbation(model, batch["input_ids"], grad, None, norm)
        with torch.no_grad(), ctx:
            sparse_logits = model(**model_inputs(batch)).logits
        original = weight.detach().clone()
        with torch.no_grad():
            weight.add_(r_dense)
            dense_logits = model(**model_inputs(batch)).logits
            weight.copy_(original)
        torch.testing.assert_close(sparse_logits, dense_logits, atol=1e-5, rtol=1e-5)


def test_row_hook_ignores_ids_outside_the_rows(model, batch):
    ids = batch["input_ids"]
    token_ids = torch.tensor([7, 11])
    delta = torch.ones(2, model.config.hidden_size)
    added = _added(model, batch, perturb_embedding_rows(model, token_ids, delta))
    hit = (ids == 7) | (ids == 11)
    torch.testing.assert_close(added[hit], torch.ones_like(added[hit]))
    assert torch.all(added[~hit] == 0)
    assert hooks_left(model) == 0


def test_step_leaves_v_unchanged_and_trains_the_head(batch):
    model = tiny_model(num_labels=2, dropout=0.1, seed=0)
    method = get_method("cat", adv_epsilon=2e-2)
    model = method.setup(model)
    v_before = input_embedding_module(model).weight.detach().clone()
    out = method.step(model, dict(batch), lambda loss: loss.backward())
    assert torch.equal(input_embedding_module(model).weight.detach(), v_before)
    assert hooks_left(model) == 0
    assert set(out.metrics) == {"adv/clean_loss", "adv/loss", "adv/delta_norm", "adv/ctr_loss"}
    assert out.metrics["adv/delta_norm"] == pytest.approx(2e-2)
    head = getattr(model, HEAD)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert any(p is head[0].weight for p in model.parameters())  # the optimizer (model.parameters()) sees it
    assert head[0].weight.shape == (32, 32) and head[2].weight.shape == (300, 32)  # W1: dh x dh, W2: dk x dh


def test_inference_model_strips_the_head(tmp_path):
    model = CAT().setup(tiny_model(seed=0))
    clean = CAT().inference_model(model)
    assert hasattr(model, HEAD) and not hasattr(clean, HEAD)  # the training model keeps it
    assert clean.classifier.weight is model.classifier.weight  # same weights, no copy
    clean.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert keys and not any(HEAD in k for k in keys)
    ids = torch.tensor([[2, 7, 8, 3]])
    model.eval()
    torch.testing.assert_close(clean(input_ids=ids).logits, model(input_ids=ids).logits)


def test_lambda_zero_has_no_head():
    model = CAT(adv_lambda=0.0).setup(tiny_model(seed=0))
    assert not hasattr(model, HEAD)


def test_nt_xent_hand_computed_2x2():
    """N = 2, z_adv = z_clean = e1, e2, tau = 1: every anchor has cos 1 to its pair, 0 to the other two."""
    z = torch.eye(2)
    expected = math.log((math.e + 2) / math.e)
    assert nt_xent(z, z.clone(), 1.0).item() == pytest.approx(expected, rel=1e-6)
    # swapped pairs: the positive is orthogonal and a negative coincides with the anchor
    assert nt_xent(z, z.flip(0), 1.0).item() == pytest.approx(math.log(2 + math.e), rel=1e-6)
    # temperature divides the cosine: tau = 0.5 -> exp(2)
    assert nt_xent(z, z.clone(), 0.5).item() == pytest.approx(math.log((math.exp(2) + 2) / math.exp(2)), rel=1e-6)
    assert nt_xent(z, 3 * z, 1.0).item() == pytest.approx(expected, rel=1e-6)  # cosine: scale-free


def test_nt_xent_minimal_when_pairs_coincide():
    """Rotating every adversarial vector away from its clean partner only raises the loss."""
    z = torch.eye(2)
    losses = []
    for deg in range(-90, 91, 5):
        t = math.radians(deg)
        rot = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        losses.append((nt_xent(z, z @ rot.T, 0.1).item(), deg))
    assert min(losses)[1] == 0
    assert sorted(losses)[1][0] > min(losses)[0]
    by_angle = dict((deg, loss) for loss, deg in losses)
    assert by_angle[0] < by_angle[10] < by_angle[45] < by_angle[90]


@pytest.mark.parametrize("target", ["matrix", "embeddings"])
def test_lambda_zero_epsilon_zero_is_standard_fine_tuning(batch, target):
    """(1-0)/2 (CE + CE(V + 0)) = CE: identical parameter gradients (dropout off so both passes agree)."""
    grads = {}
    for name, kwargs in (("standard", {}), ("cat", {"adv_lambda": 0.0, "adv_epsilon": 0.0, "adv_target": target})):
        model = tiny_model(num_labels=2, dropout=0.0, seed=0)
        method = get_method(name, **kwargs)
        model = method.setup(model)
        model.train()
        out = method.step(model, dict(batch), lambda loss: loss.backward())
        grads[name] = ({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, out.loss)
    std, cat = grads["standard"], grads["cat"]
    assert set(std[0]) == set(cat[0])
    for n in std[0]:
        torch.testing.assert_close(cat[0][n], std[0][n], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cat[1], std[1])


def test_mixed_draws_both_norms():
    torch.manual_seed(0)
    method = CAT(adv_norm="mixed")
    assert {method.norm() for _ in range(40)} == {"linf", "l2"}
    assert CAT().norm() == "linf"


@pytest.mark.parametrize(
    "field,value",
    [
        ("adv_epsilon", -1.0),
        ("adv_norm", "l1"),
        ("adv_target", "weights"),
        ("adv_lambda", 1.5),
        ("adv_temperature", 0),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(UsageError, match=field):
        CAT(**{field: value})


def test_missing_setup_is_a_clear_error(batch):
    with pytest.raises(RuntimeError, match="setup"):
        CAT().compute_loss(tiny_model(seed=0), dict(batch))
