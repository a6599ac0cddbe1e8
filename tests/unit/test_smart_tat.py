"""VAT / SMART / TAT: smoothness term, targeted inner steps, error tally and target sampling (tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from sklearn.metrics import confusion_matrix

from advtune.errors import UsageError
from advtune.methods import get_method
from advtune.methods.base import model_inputs, symmetric_kl, task_loss
from advtune.methods.tat_tally import ErrorTally, load_confusion, sample_targets
from advtune.testing import tiny_model, tiny_tokenizer
from tests.conftest import toy_sentiment


def _batch(n: int = 8, num_labels: int = 2, seed: int = 0, regression: bool = False):
    texts, _ = toy_sentiment(n, seed=seed)
    enc = dict(tiny_tokenizer()(texts, padding=True, return_tensors="pt"))
    g = torch.Generator().manual_seed(seed)
    if regression:
        enc["labels"] = torch.rand(n, generator=g) * 5
    else:
        enc["labels"] = torch.randint(0, num_labels, (n,), generator=g)
    return enc


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------------------ symmetric KL
def test_symmetric_kl_zero_for_equal_inputs_and_symmetric():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    assert symmetric_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(p, q).item() > 1e-3
    torch.testing.assert_close(symmetric_kl(p, q), symmetric_kl(q, p))
    r, s = torch.randn(6, 1, generator=g), torch.randn(6, 1, generator=g)
    assert symmetric_kl(r, r, regression=True).item() == 0.0
    torch.testing.assert_close(symmetric_kl(r, s, True), symmetric_kl(s, r, True))


# ------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name,variant", [("vat", "paper"), ("smart", "paper"), ("tat", "mtdnn")])
def test_alpha_zero_gives_standard_gradients(name, variant):
    """α = 0 (and μ = 0): the extra passes must not change the gradient, dropout included."""
    batch = _batch(8)
    overrides = {"adv_alpha": 0.0, "adv_variant": variant} | ({"adv_bregman_mu": 0.0} if name == "smart" else {})
    grads = {}
    for method_name, kw in (("standard", {}), (name, overrides), (name, {})):
        model = tiny_model(num_labels=2, dropout=0.1, seed=0)
        model.train()
        torch.manual_seed(123)
        get_method(method_name, **kw).step(model, dict(batch), lambda loss: loss.backward())
        grads[(method_name, bool(kw))] = _grads(model)
    standard, zero, default = grads[("standard", False)], grads[(name, True)], grads[(name, False)]
    assert standard.keys() == zero.keys()
    for n in standard:
        torch.testing.assert_close(zero[n], standard[n], rtol=1e-5, atol=1e-7, msg=n)
    assert any(not torch.allclose(default[n], standard[n], atol=1e-6) for n in standard), "alpha=1 changed nothing"


def test_reuse_dropout_makes_the_smoothness_term_vanish_for_a_tiny_delta():
    batch = _batch(8)
    values = {}
    for reuse in (False, True):
        model = tiny_model(num_labels=2, dropout=0.3, seed=0)
        model.train()
        torch.manual_seed(0)
        m = get_method("vat", adv_reuse_dropout=reuse, adv_init_scale=0.0, adv_step_size=1e-9, adv_epsilon=1e-9)
        values[reuse] = m.compute_loss(model, dict(batch)).metrics["adv/smoothness"]
    assert values[True] < 1e-8 < values[False]


def test_smart_ema_teacher_update_and_state():
    model = tiny_model(num_labels=2, dropout=0.0, seed=0)
    smart = get_method("smart", adv_bregman_beta=0.9)
    batch = _batch(4)
    out = smart.compute_loss(model, dict(batch))
    assert out.metrics["adv/bregman"] == pytest.approx(0.0, abs=1e-7)  # teacher = student at the first step
    w = model.classifier.weight
    old = smart.teacher["classifier.weight"].clone()
    with torch.no_grad():
        w.add_(1.0)
    out = smart.compute_loss(model, dict(batch))
    torch.testing.assert_close(smart.teacher["classifier.weight"], 0.9 * old + 0.1 * w.detach())
    assert out.metrics["adv/bregman"] > 0
    fresh = get_method("smart")
    fresh.load_state_dict(smart.state_dict())
    torch.testing.assert_close(fresh.teacher["classifier.weight"], smart.teacher["classifier.weight"])


# ------------------------------------------------------------------------------ targeted step
@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 1.0)])
def test_targeted_inner_step_lowers_target_loss_and_raises_target_probability(norm, eps):
    model = tiny_model(num_labels=3, dropout=0.0, seed=1)
    model.eval()
    batch = model_inputs(_batch(8, num_labels=3))
    with torch.no_grad():
        clean = model(**batch).logits
    targets = (clean.argmin(-1)).long()  # the least likely label of each example: a real push is needed
    tat = get_method("tat", adv_steps=3, adv_step_size=eps / 2, adv_epsilon=eps, adv_norm=norm, adv_init_scale=0.0)
    objective = lambda logits: task_loss(logits, targets, False)  # noqa: E731
    delta = tat.perturbation(model, batch, objective, None)
    from advtune.embeddings import forward_with_delta

    with torch.no_grad():
        adv = forward_with_delta(model, batch, delta).logits
    assert task_loss(adv, targets, False) < task_loss(clean, targets, False) - 1e-3
    p_clean = clean.softmax(-1).gather(1, targets[:, None]).squeeze(1)
    p_adv = adv.softmax(-1).gather(1, targets[:, None]).squeeze(1)
    assert (p_adv > p_clean).float().mean() >= 0.75 and p_adv.mean() > p_clean.mean()
    # the untargeted (VAT-sign) step on the same objective goes the other way
    vat = get_method("vat", adv_steps=3, adv_step_size=eps / 2, adv_epsilon=eps, adv_norm=norm, adv_init_scale=0.0)
    with torch.no_grad():
        away = forward_with_delta(model, batch, vat.perturbation(model, batch, objective, None)).logits
    assert task_loss(away, targets, False) > task_loss(clean, targets, False)


def test_mtdnn_variant_puts_unit_linf_tokens_on_the_embedding_output_and_steers_toward_the_target():
    """``adv_variant=mtdnn`` (SMART's reference code): δ on the embedding layer's output, every real
    token rescaled to L∞ norm 1, padding untouched; TAT's step still lowers the loss toward y_t."""
    from advtune.embeddings import embedding_output_dim, forward_with_delta, hooks_left

    model = tiny_model(num_labels=3, dropout=0.0, seed=1)
    model.eval()
    full = _batch(8, num_labels=3)
    batch = model_inputs(full)
    mask = batch["attention_mask"]
    mask[-2:, -2:] = 0  # two padded examples
    with torch.no_grad():
        clean = model(**batch).logits
        shape = (*batch["input_ids"].shape, embedding_output_dim(model))
        torch.testing.assert_close(forward_with_delta(model, batch, torch.zeros(shape), "output").logits, clean)
    targets = clean.argmin(-1).long()
    objective = lambda logits: task_loss(logits, targets, False)  # noqa: E731
    tat = get_method("tat", adv_variant="mtdnn", adv_step_size=1.0)
    delta = tat.perturbation(model, batch, objective, None)
    assert delta.shape == shape and hooks_left(model) == 0
    peak = delta.abs().amax(-1)
    real = peak[mask.bool()]  # max|v| / (max|v| + 1e-6): just under 1 (v is ~1e-5 here)
    assert real.max() <= 1.0 and real.min() > 0.8
    assert peak[~mask.bool()].max() == 0
    vat = get_method("vat", adv_variant="mtdnn", adv_step_size=1.0)
    with torch.no_grad():
        toward = task_loss(forward_with_delta(model, batch, delta, "output").logits, targets, False)
        away = task_loss(
            forward_with_delta(model, batch, vat.perturbation(model, batch, objective, None), "output").logits,
            targets,
            False,
        )
    assert toward < task_loss(clean, targets, False) < away
    # the same δ on the word embeddings (the paper variant's site) is a different perturbation
    with torch.no_grad():
        assert not torch.allclose(
            forward_with_delta(model, batch, delta, "word").logits,
            forward_with_delta(model, batch, delta, "output").logits,
        )


@pytest.mark.parametrize("eta,decides", [(1e4, True), (1e-12, False)])
def test_logged_gradient_share_says_whether_vat_and_tat_perturb_differently(eta, decides):
    """mtdnn variant: when ``adv/grad_share`` is ~0 the unit-L∞ δ is its random start, so VAT's ascent
    and TAT's descent give the same δ; when it is ~1 they point in opposite directions."""
    model = tiny_model(num_labels=3, dropout=0.0, seed=1)
    model.eval()
    batch = model_inputs(_batch(8, num_labels=3))
    with torch.no_grad():
        targets = model(**batch).logits.argmin(-1)
    objective = lambda logits: task_loss(logits, targets, False)  # noqa: E731
    deltas, shares = {}, {}
    for name in ("vat", "tat"):
        method = get_method(name, adv_variant="mtdnn", adv_step_size=eta)
        torch.manual_seed(0)  # the same random start for both
        deltas[name] = method.perturbation(model, batch, objective, None)
        shares[name] = method.last_gradient_share
    cos = torch.nn.functional.cosine_similarity(deltas["vat"], deltas["tat"], dim=-1)[batch["attention_mask"].bool()]
    if decides:
        assert min(shares.values()) > 0.9 and cos.max() < 0
    else:
        assert max(shares.values()) < 1e-3 and cos.min() > 0.999
    full = _batch(8, num_labels=3)
    out = get_method("vat", adv_variant="mtdnn", adv_step_size=eta).compute_loss(model, full)
    assert 0.0 <= out.metrics["adv/grad_share"] <= 1.0
    assert "adv/grad_share" not in get_method("vat").compute_loss(model, full).metrics


def test_mtdnn_variant_smoothness_term_is_far_larger_than_the_papers_radius():
    """The reason the variant exists: at ε = 1e-5 on the word embeddings the smoothness term is ~0."""
    batch = _batch(8)
    values = {}
    for variant in ("paper", "mtdnn"):
        model = tiny_model(num_labels=2, dropout=0.0, seed=0)
        model.train()
        torch.manual_seed(0)
        out = get_method("vat", adv_variant=variant).compute_loss(model, dict(batch))
        values[variant] = out.metrics["adv/smoothness"]
        assert out.metrics["adv/delta_norm"] == pytest.approx(1.0 if variant == "mtdnn" else 1e-5, rel=0.1)
    assert values["mtdnn"] > 1e3 * values["paper"]


def test_tat_objective_targets_the_other_label_in_binary_tasks():
    """Two classes: y_t = 1 - y always, so TAT's own objective lowers CE toward the wrong label."""
    model = tiny_model(num_labels=2, dropout=0.0, seed=2)
    model.eval()
    full = _batch(8)
    batch = model_inputs(full)
    tat = get_method("tat", adv_steps=2, adv_step_size=0.05, adv_epsilon=0.1, adv_init_scale=0.0)
    with torch.no_grad():
        clean = model(**batch).logits
    objective, _ = tat.inner_objective(clean, full, regression=False)
    wrong = 1 - full["labels"]
    torch.testing.assert_close(objective(clean), task_loss(clean, wrong, False))
    from advtune.embeddings import forward_with_delta

    with torch.no_grad():
        adv = forward_with_delta(model, batch, tat.perturbation(model, batch, objective, None)).logits
    assert task_loss(adv, wrong, False) < task_loss(clean, wrong, False)


# ------------------------------------------------------------------------------ sampling
def test_target_sampling_follows_the_tally_and_never_returns_gold():
    table = torch.tensor([[0.0, 6, 3, 1], [2, 0, 2, 4], [1, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    for gold in range(4):
        draws = sample_targets(table, torch.full((n,), gold), gen)
        assert not (draws == gold).any()
        counts = np.bincount(draws.numpy(), minlength=4)
        weights = table[gold].clone()
        weights[gold] = 0
        if weights.sum() == 0:  # class 3 has no errors yet: uniform over the others
            weights = torch.ones(4, dtype=torch.float64)
            weights[gold] = 0
        expected = (weights / weights.sum() * n).numpy()
        keep = expected > 0
        assert counts[~keep].sum() == 0
        assert chisquare(counts[keep], expected[keep]).pvalue > 1e-3, (gold, counts, expected)


def test_sampling_is_reproducible_with_a_seed_and_mixed_batches_never_hit_gold():
    table = torch.rand(5, 5, generator=torch.Generator().manual_seed(1)).double()
    gold = torch.randint(0, 5, (1000,), generator=torch.Generator().manual_seed(2))
    a = sample_targets(table, gold, torch.Generator().manual_seed(7))
    b = sample_targets(table, gold, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not (a == gold).any()


def test_smoothing_gives_every_target_probability():
    tally = ErrorTally(3, smoothing=0.5)
    tally.observe(torch.tensor([0, 0, 0, 1]), torch.tensor([1, 1, 1, 1]))  # class 2: no data at all
    tally.refresh()
    expected = torch.tensor([[0, 3.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], dtype=torch.float64)
    torch.testing.assert_close(tally.table, expected)


# ------------------------------------------------------------------------------ tally refresh
def test_tally_refresh_matches_the_epochs_confusion_counts():
    torch.manual_seed(0)
    model = tiny_model(num_labels=3, dropout=0.0, seed=3)
    tat = get_method("tat", adv_tally_smoothing=0.25)
    model = tat.setup(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    assert tat.state_dict() == {}  # nothing tallied yet
    for epoch in range(2):
        gold, pred = [], []
        for b in range(4):
            batch = _batch(8, num_labels=3, seed=10 * epoch + b)
            with torch.no_grad():  # dropout 0: the same clean logits the method sees
                pred += model(**model_inputs(batch)).logits.argmax(-1).tolist()
            gold += batch["labels"].tolist()
            opt.zero_grad()
            tat.step(model, batch, lambda loss: loss.backward())
            opt.step()  # predictions change during the epoch
        cm = confusion_matrix(gold, pred, labels=[0, 1, 2]).astype(float)
        torch.testing.assert_close(torch.tensor(tat.tally.counts.numpy()), torch.tensor(cm))
        logs = tat.on_epoch_end(epoch)
        expected = cm + 0.25
        np.fill_diagonal(expected, 0)
        np.testing.assert_allclose(np.array(tat.state_dict()["table"]), expected)
        assert tat.tally.counts.sum() == 0  # counting restarts each epoch
        assert logs["adv/tally_error_rate"] == pytest.approx(1 - np.trace(cm) / cm.sum())
        assert all(k.startswith("adv/") for k in logs)


def test_tat_state_round_trip_is_json_and_resumes_sampling():
    model = tiny_model(num_labels=3, dropout=0.0, seed=0)
    tat = get_method("tat", adv_seed=5)
    batch = _batch(8, num_labels=3)
    tat.step(model, dict(batch), lambda loss: loss.backward())
    tat.on_epoch_end(0)
    state = json.loads(json.dumps(tat.state_dict()))
    fresh = get_method("tat", adv_seed=5)
    fresh.load_state_dict(state)
    gold = torch.randint(0, 3, (50,))
    assert torch.equal(tat.tally.sample(gold, tat.generator), fresh.tally.sample(gold, fresh.generator))


def test_fixed_confusion_matrix_json_and_csv(tmp_path):
    m = [[50, 8, 2], [1, 40, 9], [3, 3, 30]]
    (tmp_path / "cm.json").write_text(json.dumps({"labels": ["a", "b", "c"], "matrix": m}))
    (tmp_path / "cm.csv").write_text("gold,a,b,c\na,50,8,2\nb,1,40,9\nc,3,3,30\n")
    np.testing.assert_array_equal(load_confusion(tmp_path / "cm.json"), load_confusion(tmp_path / "cm.csv"))
    tat = get_method("tat", adv_fixed_confusion=str(tmp_path / "cm.csv"), adv_tally_smoothing=0.0)
    model = tiny_model(num_labels=3, dropout=0.0)
    tat.step(model, _batch(8, num_labels=3), lambda loss: loss.backward())
    tat.on_epoch_end(0)
    expected = np.array(m, dtype=float)
    np.fill_diagonal(expected, 0)
    np.testing.assert_array_equal(np.array(tat.state_dict()["table"]), expected)  # not refreshed
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(UsageError, match="square"):
        get_method("tat", adv_fixed_confusion=str(tmp_path / "bad.csv"))
    with pytest.raises(UsageError, match="does not exist"):
        get_method("tat", adv_fixed_confusion=str(tmp_path / "missing.json"))
    two = get_method("tat", adv_fixed_confusion=str(tmp_path / "cm.json"))
    with pytest.raises(UsageError, match="needs 2x2"):
        two.step(tiny_model(num_labels=2), _batch(8), lambda loss: loss.backward())


# ------------------------------------------------------------------------------ regression
def test_regression_targets_lie_in_another_bin():
    tally = ErrorTally(10, smoothing=1.0, value_range=(0.0, 5.0))
    gold = torch.tensor([0.0, 0.2, 2.5, 4.99, 5.0, 3.3] * 200)
    targets = tally.sample_values(gold, torch.Generator().manual_seed(0))
    assert ((targets >= 0) & (targets <= 5)).all()
    assert not torch.equal(tally.bins(targets), tally.bins(gold)) and (tally.bins(targets) != tally.bins(gold)).all()


@pytest.mark.parametrize("name", ["vat", "smart", "tat"])
def test_regression_path_runs(name):
    model = tiny_model(regression=True, dropout=0.1, seed=0)
    method = get_method(name)
    model = method.setup(model)
    model.train()
    batch = _batch(8, regression=True)
    out = method.step(model, batch, lambda loss: loss.backward())
    assert torch.isfinite(out.loss) and model.classifier.weight.grad.abs().sum() > 0
    if name == "tat":
        logs = method.on_epoch_end(0)
        table = np.array(method.state_dict()["table"])
        assert table.shape == (10, 10) and (np.diag(table) == 0).all()
        lo, hi = float(batch["labels"].min()), float(batch["labels"].max())
        assert method.state_dict()["value_range"] == pytest.approx([lo, hi])
        assert "adv/tally_error_rate" in logs


def test_config_validation():
    with pytest.raises(UsageError, match="adv_norm"):
        get_method("vat", adv_norm="l3")
    with pytest.raises(UsageError, match="adv_value_range"):
        get_method("tat", adv_value_range="5,0")
    with pytest.raises(UsageError, match="adv_bregman_beta"):
        get_method("smart", adv_bregman_beta=1.0)
    assert get_method("tat", adv_value_range="0,5").config.value_range() == (0.0, 5.0)


@pytest.mark.parametrize("method", ["vat", "smart", "tat"])
def test_presets_hold_the_tat_paper_settings(method):
    """configs/<method>_*.yaml: TAT section 3.1 (eps = sigma = 1e-5, eta = 1e-4, K = 1, alpha = 1, 6 epochs)."""
    from pathlib import Path

    from advtune.commands.train import parse

    files = sorted((Path(__file__).resolve().parents[2] / "configs").glob(f"{method}_*.yaml"))
    assert len(files) >= 5
    for f in files:
        task_args, _, _, m, training = parse(["--config", str(f), "--output_dir", "unused"])
        c = m.config
        assert m.name == method and task_args.task in f.stem
        values = (c.adv_epsilon, c.adv_init_scale, c.adv_step_size, c.adv_steps, c.adv_alpha)
        assert values == (1e-5, 1e-5, 1e-4, 1, 1.0)
        assert training.num_train_epochs == 6 and training.weight_decay == 0.01
        if method == "tat" and task_args.task == "stsb":
            assert c.value_range() == (0.0, 5.0)


# ------------------------------------------------------------------------------ mechanism diagnostics (diag/*)
def _diag_step(name: str, dropout: float = 0.3, seed: int = 0, num_labels: int = 2, **cfg):
    model = tiny_model(num_labels=num_labels, dropout=dropout, seed=0).train()
    method = get_method(name, **cfg)
    model = method.setup(model)
    torch.manual_seed(seed)
    out = method.step(model, _batch(8, num_labels=num_labels), lambda loss: loss.backward())
    return out, _grads(model), torch.rand(3), method


@pytest.mark.parametrize("name", ["vat", "smart", "tat", "r3f"])
def test_diagnostics_only_add_logs(name):
    """Diagnosed or not, a step has the same loss, gradients and random stream afterwards."""
    on, g_on, rng_on, _ = _diag_step(name, adv_diagnostics_every=1)
    off, g_off, rng_off, _ = _diag_step(name, adv_diagnostics_every=0)
    assert torch.equal(on.loss, off.loss) and torch.equal(rng_on, rng_off)
    assert g_on.keys() == g_off.keys() and all(torch.equal(g_on[n], g_off[n]) for n in g_on)
    assert {"diag/sym_kl", "diag/abs_dlogit"} <= set(on.metrics)
    assert not any(k.startswith("diag/") for k in off.metrics)


@pytest.mark.parametrize("name", ["vat", "tat"])
def test_diag_sym_kl_is_the_smoothness_term_when_the_passes_share_their_masks(name):
    """With the clean pass's masks replayed the training term compares f(x) and f(x + δ) only: the diagnostic."""
    out, *_ = _diag_step(name, adv_reuse_dropout=True, adv_init_scale=0.05, adv_epsilon=0.05, adv_diagnostics_every=1)
    assert out.metrics["diag/sym_kl"] > 0
    assert out.metrics["diag/sym_kl"] == pytest.approx(out.metrics["adv/smoothness"], rel=1e-5)


def test_diagnostics_separate_delta_from_dropout():
    """δ ≈ 0 under dropout 0.3: the training term is all dropout, the diagnostic (same masks) is ~0."""
    out, *_ = _diag_step("vat", adv_init_scale=0.0, adv_epsilon=1e-12, adv_step_size=1e-12, adv_diagnostics_every=1)
    assert out.metrics["adv/smoothness"] > 1e-6
    assert out.metrics["diag/sym_kl"] < 1e-12 and out.metrics["diag/abs_dlogit"] < 1e-6


def test_diag_abs_dlogit_is_the_mean_absolute_change_of_the_logits():
    from advtune.embeddings import forward_with_delta

    model = tiny_model(num_labels=3, dropout=0.0, seed=1)
    method = get_method("r3f", adv_init_scale=0.3, adv_diagnostics_every=1)
    batch = _batch(8, num_labels=3)
    torch.manual_seed(2)
    z = method.noise(model, batch)
    with torch.no_grad():
        by_hand = (forward_with_delta(model, batch, z).logits - model(**model_inputs(batch)).logits).abs().mean()
    torch.manual_seed(2)
    out = method.compute_loss(model, batch)
    assert out.metrics["diag/abs_dlogit"] == pytest.approx(by_hand.item(), rel=1e-5)
    assert out.metrics["diag/sym_kl"] == pytest.approx(out.metrics["r3f/sym_kl"], rel=1e-6)  # dropout off: same passes


def test_diagnostics_every_n_steps():
    model = tiny_model(num_labels=2, dropout=0.1, seed=0).train()
    method = get_method("vat", adv_diagnostics_every=3)
    seen = [("diag/sym_kl" in method.compute_loss(model, _batch(8)).metrics) for _ in range(7)]
    assert seen == [True, False, False, True, False, False, True]


def test_tat_target_gain_is_the_rise_of_the_target_probability_from_the_inner_steps():
    big = dict(adv_steps=3, adv_step_size=0.5, adv_epsilon=1.0, adv_norm="l2", adv_init_scale=0.0, num_labels=3)
    out, *_ = _diag_step("tat", dropout=0.0, adv_diagnostics_every=1, **big)
    assert out.metrics["diag/target_gain"] > 1e-3  # the steps descend the target's loss: its probability rises
    none = {**big, "adv_step_size": 1e-9, "adv_epsilon": 1e-9}
    out, *_ = _diag_step("tat", dropout=0.3, adv_diagnostics_every=1, **none)
    assert abs(out.metrics["diag/target_gain"]) < 1e-6  # no movement: no gain, whatever the dropout masks
