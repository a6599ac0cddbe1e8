"""Method-specific facts of FGM, PGD, FreeAT, FreeLB and YOPO on tiny random models."""

from __future__ import annotations

import contextlib

import pytest
import torch

from advtune.embeddings import embedding_dim, hooks_left
from advtune.errors import UsageError
from advtune.methods import Backward, get_method
from advtune.methods.embedding_space import adv_loss
from advtune.methods.yopo_blocks import first_block_output
from advtune.perturbation import ascent_step, init_delta, normalize
from advtune.testing import tiny_model

FAMILY = ["fgm", "pgd", "freeat", "freelb", "yopo"]


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], msg=f"gradient of {n} differs", **tol)


def _step_grads(name: str, batch, dropout: float = 0.0, seed: int = 0, **cfg):
    model = tiny_model(dropout=dropout, seed=0).train()
    torch.manual_seed(seed)
    out = get_method(name, **cfg).step(model, dict(batch), lambda loss: loss.backward())
    return model, out, _grads(model)


def _mask_shape(model, batch):
    return batch["attention_mask"], (*batch["input_ids"].shape, embedding_dim(model))


def test_freelb_k1_unbounded_zero_init_equals_standard(batch):
    """K=1, ε=0, δ_0=0: FreeLB is plain fine-tuning (also with dropout on: same seed, same masks)."""
    _, out_std, g_std = _step_grads("standard", batch, dropout=0.1)
    _, out_lb, g_lb = _step_grads("freelb", batch, dropout=0.1, adv_steps=1, adv_epsilon=0.0, adv_init="zero")
    torch.testing.assert_close(out_lb.loss, out_std.loss)
    _assert_same_grads(g_lb, g_std)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_freelb_gradient_is_mean_of_k_per_step_gradients(batch, norm):
    k, eps, alpha = 3, 0.5, 0.2 if norm == "l2" else 0.02
    cfg = dict(adv_steps=k, adv_epsilon=eps, adv_step_size=alpha, adv_norm=norm, adv_init_scale=eps)
    model, _, g_lb = _step_grads("freelb", batch, seed=3, **cfg)
    # reference: K separate forward/backward passes, δ updated by hand between them
    ref = tiny_model(dropout=0.0, seed=0).train()
    mask, shape = _mask_shape(ref, batch)
    torch.manual_seed(3)
    delta = init_delta(torch.empty(shape), mask, "uniform", eps, norm)
    per_step = []
    for _ in range(k):
        ref.zero_grad()
        delta.requires_grad_()
        adv_loss(ref, batch, delta).backward()
        per_step.append(_grads(ref))
        delta = ascent_step(delta, delta.grad, mask, alpha, eps, norm)
    mean = {n: sum(g[n] for g in per_step) / k for n in per_step[0]}
    _assert_same_grads(g_lb, mean, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(per_step[0]["classifier.weight"], per_step[-1]["classifier.weight"])


@pytest.mark.parametrize("reuse", [True, False])
def test_freelb_dropout_mask_reuse(batch, monkeypatch, reuse):
    """δ held at 0: the K forwards of one step give identical logits iff the dropout mask is reused."""
    method = get_method("freelb", adv_steps=2, adv_init="zero", adv_reuse_dropout=reuse)
    monkeypatch.setattr(method, "next_delta", lambda frame, delta, *a: torch.zeros_like(delta).detach())
    model = tiny_model(dropout=0.3, seed=0).train()
    logits = []
    model.classifier.register_forward_hook(lambda m, a, out: logits.append(out.detach()))
    torch.manual_seed(0)
    method.step(model, dict(batch), lambda loss: loss.backward())
    assert len(logits) == 2
    assert torch.equal(logits[0], logits[1]) is reuse


def test_freelb_inner_passes_run_under_no_sync(batch):
    entered = []
    method = get_method("freelb", adv_steps=3)
    backward = Backward(lambda loss: loss.backward(), no_sync=lambda: contextlib.nullcontext(entered.append(1)))
    method.step(tiny_model(dropout=0.0), dict(batch), backward)
    assert len(entered) == 2  # K - 1 inner passes; the last backward syncs


def test_pgd_updates_parameters_on_final_adversarial_loss_only(batch):
    """Inner steps use autograd.grad w.r.t. δ only: parameter grads = grads of the final loss."""
    cfg = dict(adv_steps=2, adv_epsilon=0.5, adv_step_size=0.3)
    _, out, g_pgd = _step_grads("pgd", batch, seed=5, **cfg)
    ref = tiny_model(dropout=0.0, seed=0).train()
    mask, shape = _mask_shape(ref, batch)
    torch.manual_seed(5)
    delta = init_delta(torch.empty(shape), mask, "uniform", 0.15)
    for _ in range(2):
        delta.requires_grad_()
        (g,) = torch.autograd.grad(adv_loss(ref, batch, delta), delta)
        delta = ascent_step(delta, g, mask, 0.3, 0.5)
    final = adv_loss(ref, batch, delta)
    final.backward()
    _assert_same_grads(g_pgd, _grads(ref), rtol=1e-4, atol=1e-6)
    assert out.metrics["adv/loss"] > out.metrics["adv/start_loss"]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fgm_gradient_is_the_weighted_mean_of_clean_and_adversarial(batch, norm):
    eps, w = (1.0, 0.5) if norm == "l2" else (0.01, 0.5)
    _, out, g_fgm = _step_grads("fgm", batch, adv_epsilon=eps, adv_norm=norm, adv_weight=w)
    ref = tiny_model(dropout=0.0, seed=0).train()
    mask, shape = _mask_shape(ref, batch)
    zero = torch.zeros(shape, requires_grad=True)
    (adv_loss(ref, batch, zero) / (1 + w)).backward()
    r = eps * normalize(zero.grad * (1 + w), mask, norm)  # the direction does not depend on the scale
    (w / (1 + w) * adv_loss(ref, batch, r)).backward()
    _assert_same_grads(g_fgm, _grads(ref), rtol=1e-4, atol=1e-6)
    assert out.metrics["adv/loss"] > out.metrics["adv/clean_loss"]


def test_freeat_replays_keep_delta_and_reset_on_new_batch(batch):
    """m optimizer steps on one batch, δ carried between them, a fresh δ for the next batch."""
    m = 3
    model = tiny_model(dropout=0.0).train()
    method = get_method("freeat", adv_replays=m, adv_step_size=0.1, adv_epsilon=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    norms, steps = [], 0
    for r in range(m):
        opt.zero_grad()
        before = None if method._delta is None else method._delta.clone()
        out = method.step(model, dict(batch), lambda loss: loss.backward())
        opt.step()
        steps += 1
        assert out.metrics["adv/replay"] == r
        if before is not None:  # the δ used in this replay is the one left by the previous replay
            torch.testing.assert_close(out.metrics["adv/delta_norm"], float(before.norm(dim=(1, 2)).mean()))
        norms.append(out.metrics["adv/delta_norm"])
    assert steps == m and norms[0] == 0.0 and 0 < norms[1] < norms[2] <= 0.3 + 1e-6
    other = dict(batch, input_ids=batch["input_ids"].flip(0))
    assert method.step(model, other, lambda loss: loss.backward()).metrics["adv/replay"] == 0
    state = method.state_dict()
    fresh = get_method("freeat", adv_replays=m)
    fresh.load_state_dict(state)
    assert torch.equal(fresh._delta, method._delta) and fresh._count == 1


def test_freeat_with_trainer_makes_m_steps_per_batch(tmp_path, tokenizer, toy_dataset):
    from transformers import TrainingArguments

    from advtune.data import collator
    from advtune.trainer import AdversarialTrainer

    m, bs = 3, 16
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=bs, num_train_epochs=1, learning_rate=1e-3,
        report_to="none", save_strategy="no", logging_steps=1, use_cpu=True, dataloader_pin_memory=False,
    )  # fmt: skip
    method = get_method("freeat", adv_replays=m)
    seen = []
    step = method.step

    def recording_step(model, inputs, backward):
        seen.append(inputs["input_ids"].clone())
        return step(model, inputs, backward)

    method.step = recording_step
    trainer = AdversarialTrainer(
        model=tiny_model(), args=args, method=method, train_dataset=toy_dataset, data_collator=collator(tokenizer)
    )
    trainer.train()
    n_batches = -(-len(toy_dataset) // bs)
    assert trainer.state.global_step == n_batches * m
    for b in range(n_batches):  # each batch replayed m times in a row
        assert all(torch.equal(seen[b * m], seen[b * m + r]) for r in range(m))
    logged = [h for h in trainer.state.log_history if "adv/replay" in h]
    assert logged and {h["adv/replay"] for h in logged} == {0.0, 1.0, 2.0}


def test_yopo_with_one_inner_update_is_freelb(batch):
    cfg = dict(adv_steps=3, adv_epsilon=0.5, adv_step_size=0.2)
    _, out_lb, g_lb = _step_grads("freelb", batch, seed=1, **cfg)
    _, out_yo, g_yo = _step_grads("yopo", batch, seed=1, adv_inner_steps=1, **cfg)
    torch.testing.assert_close(out_yo.loss, out_lb.loss)
    _assert_same_grads(g_yo, g_lb)
    _, out_yo2, g_yo2 = _step_grads("yopo", batch, seed=1, adv_inner_steps=3, **cfg)
    assert not torch.allclose(g_yo2["classifier.weight"], g_lb["classifier.weight"])
    assert out_yo2.metrics["adv/delta_norm"] <= 0.5 + 1e-5


def test_first_block_output_is_layer_one_hidden_state(batch):
    model = tiny_model(dropout=0.0).eval()
    delta = torch.randn(*batch["input_ids"].shape, embedding_dim(model)) * 0.1
    h = first_block_output(model, batch, delta)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "input_ids")}
    embeds = model.get_input_embeddings()(batch["input_ids"]) + delta
    ref = model(inputs_embeds=embeds, output_hidden_states=True, **inputs).hidden_states[1]
    torch.testing.assert_close(h, ref)
    assert hooks_left(model) == 0


def test_yopo_frozen_p_times_f0_jacobian_is_the_full_gradient(batch):
    """At the δ of the full pass, ∂(p · f0(X + δ))/∂δ with p = ∂L/∂f0-output equals ∂L/∂δ (chain rule)."""
    from advtune.methods.yopo_blocks import record_first_block

    model = tiny_model(dropout=0.0).train()
    delta = (torch.randn(*batch["input_ids"].shape, embedding_dim(model)) * 0.1).requires_grad_()
    with record_first_block(model) as rec:
        adv_loss(model, batch, delta).backward()
    h = first_block_output(model, batch, delta)
    (g,) = torch.autograd.grad((h * rec["grad"]).sum(), delta)
    torch.testing.assert_close(g, delta.grad, rtol=1e-4, atol=1e-7)
    assert hooks_left(model) == 0


@pytest.mark.parametrize("name", FAMILY)
def test_bf16_autocast_on_cpu_runs_without_nan(name, batch):
    model = tiny_model(dropout=0.1).train()
    method = get_method(name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = method.step(model, dict(batch), lambda loss: loss.backward())
        assert torch.isfinite(out.loss), name
        assert all(v == v for v in out.metrics.values()), (name, out.metrics)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), name
        opt.step()
    assert hooks_left(model) == 0


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [("freelb", "adv_epsilon", -1.0), ("freelb", "adv_norm", "l1"), ("pgd", "adv_steps", 0),
     ("freeat", "adv_replays", 0), ("yopo", "adv_inner_steps", 0), ("fgm", "adv_epsilon", 0.0)],
)  # fmt: skip
def test_invalid_config_is_a_usage_error(name, field, value):
    with pytest.raises(UsageError, match=field):
        get_method(name, **{field: value})


TABLE7 = {  # FreeLB appendix A.2: task -> (epsilon, alpha, m)
    "mnli": (0.2, 0.1, 2), "qnli": (0.15, 0.1, 2), "qqp": (0.45, 0.15, 2), "rte": (0.15, 0.03, 3),
    "sst2": (0.6, 0.1, 2), "mrpc": (0.4, 0.04, 3), "cola": (0.2, 0.025, 3), "stsb": (0.3, 0.1, 3),
    "wnli": (0.01, 0.005, 2),
}  # fmt: skip


def _configs_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "configs"


def _parse_preset(path):
    """A preset parsed as the CLI does: YAML -> flags -> the method's config dataclass."""
    from transformers import HfArgumentParser

    from advtune.config import read_yaml, yaml_to_argv
    from advtune.methods import get_method_class

    data = read_yaml(path)
    cls = get_method_class(data["method"]).config_class
    adv = {k: v for k, v in data.items() if k.startswith("adv_")}
    (cfg,) = HfArgumentParser(cls).parse_args_into_dataclasses(args=yaml_to_argv(adv))
    return data, cfg


@pytest.mark.parametrize("task", sorted(TABLE7))
def test_freelb_presets_match_table7(task):
    data, cfg = _parse_preset(_configs_dir() / f"freelb_{task}.yaml")
    eps, alpha, m = TABLE7[task]
    assert data["task"] == task and data["method"] == "freelb"
    assert (cfg.adv_epsilon, cfg.adv_step_size, cfg.adv_steps) == pytest.approx((eps, alpha, m))
    assert cfg.adv_init_scale == pytest.approx(eps) and cfg.adv_reuse_dropout is True


def test_overhead_benchmark_counts_passes(tmp_path):
    """The overhead table on a tiny saved model: pass counts per step and relative columns. A backward
    counts 2/3 of a pass each time it goes through a forward's logits: ROSE's KL gradient to the weights
    and its CE backward both traverse its two forwards (2/3 + 4/3 + 4/3)."""
    from advtune.bench.overhead import format_table, measure_overhead

    tiny_model(dropout=0.0).save_pretrained(tmp_path / "tiny")
    rows = measure_overhead(
        ["freelb", "fgm", "pgd", "rose"], model=str(tmp_path / "tiny"), batch_size=4, seq_len=8, warmup=0, steps=1,
        isolate=False, method_overrides={"freelb": {"adv_steps": 3}},
    )  # fmt: skip
    passes = {r["method"]: r["passes"] for r in rows}
    assert passes == {"standard": 1.0, "freelb": 3.0, "fgm": 2.0, "pgd": 4.0, "rose": 3.33}
    assert rows[0]["method"] == "standard" and rows[0]["time_ratio"] == 1.0
    assert all(r["step_s"] > 0 for r in rows) and "| freelb |" in format_table(rows)
    with pytest.raises(UsageError):
        measure_overhead(["nope"], model=str(tmp_path / "tiny"))


def _child_env() -> dict:
    import os

    return {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}


def test_cpu_memory_measurement_processes_disable_malloc_caching(monkeypatch):
    """The spawned CPU measurements run with a fixed mmap threshold (peak RSS = live memory), and the
    setting does not leak into this process."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from advtune.bench.overhead import CPU_MALLOC_ENV, _environ

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "7")
    with _environ(CPU_MALLOC_ENV), ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        seen = pool.submit(_child_env).result()
    assert seen == CPU_MALLOC_ENV
    assert _child_env() == {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": "7"}
