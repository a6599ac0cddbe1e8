"""PEAFT: frozen backbone, trainable prompt + head, inner ascent, padding, attack prompt not in inference."""

from __future__ import annotations

import torch

from advtune.methods import get_method
from advtune.methods.peaft import PEAFT, trainable_parameters
from advtune.testing import tiny_model, tiny_tokenizer


def _setup(**overrides):
    torch.manual_seed(0)
    method = get_method("peaft", **overrides)
    model = method.setup(tiny_model(num_labels=2, dropout=0.0, seed=0))
    return method, model


def test_backbone_bit_identical_and_only_prompt_and_head_change(batch):
    method, model = _setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        method.step(model, dict(batch), lambda loss: loss.backward())
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and not changed & set(frozen), "a frozen backbone weight changed"
    assert any("prompt_encoder" in n for n in changed), "the defense prompt did not train"
    assert any("classifier" in n for n in changed) and any("pooler" in n for n in changed), "the head did not train"
    assert all("prompt_encoder" in n or "modules_to_save" in n for n in changed), changed


def test_trainable_count_is_k_d_plus_head():
    k, d = 7, 32
    _, model = _setup(adv_num_virtual_tokens=k)
    head = (d * 2 + 2) + (d * d + d)  # classifier + pooler (BERT's part of the task head)
    assert trainable_parameters(model) == k * d + head
    _, no_pooler = _setup(adv_num_virtual_tokens=k, adv_train_pooler=False)
    assert trainable_parameters(no_pooler) == k * d + d * 2 + 2


def test_inner_step_increases_adversarial_loss(batch):
    method, model = _setup(adv_attack_tokens=3)
    model.eval()
    from advtune.methods.base import task_loss
    from advtune.perturbation import ascent_step

    mask, labels = batch["attention_mask"], batch["labels"]
    delta = torch.zeros(*batch["input_ids"].shape, 32, requires_grad=True)
    prompt = method.attack_prompt.clone().requires_grad_()
    loss0 = task_loss(method._adv_forward(model, batch, delta, prompt), labels, False)
    g_delta, g_prompt = torch.autograd.grad(loss0, [delta, prompt])
    delta1 = ascent_step(delta, g_delta, mask, 2 * method.config.adv_epsilon, method.config.adv_epsilon, "linf")
    prompt1 = method._prompt_step(prompt, g_prompt, 2 * method.config.adv_epsilon)
    with torch.no_grad():
        loss1 = task_loss(method._adv_forward(model, batch, delta1, prompt1), labels, False)
        loss_delta_only = task_loss(method._adv_forward(model, batch, delta1, prompt), labels, False)
    assert loss1 > loss0 and loss_delta_only > loss0
    assert (delta1.abs() <= method.config.adv_epsilon + 1e-7).all()


def test_delta_zero_at_padding_and_prompt_positions_masked(batch):
    seen = []

    class Spy(PEAFT):
        def _adv_forward(self, model, inputs, delta, prompt):
            seen.append(delta.detach().clone())
            return super()._adv_forward(model, inputs, delta, prompt)

    torch.manual_seed(0)
    method = Spy()
    model = method.setup(tiny_model(num_labels=2, dropout=0.0, seed=0))
    method.step(model, dict(batch), lambda loss: loss.backward())
    pad = batch["attention_mask"] == 0
    assert pad.any() and len(seen) == method.config.adv_steps + 1
    for delta in seen:
        assert torch.count_nonzero(delta[pad]) == 0
        assert torch.count_nonzero(delta[~pad]) > 0
    # extra padding must not change an example's adversarial logits (prompt + text masks extended correctly)
    model.eval()
    tok = tiny_tokenizer()
    short = tok(["good movie"], return_tensors="pt")
    padded = tok(["good movie"], padding="max_length", max_length=12, return_tensors="pt")
    with torch.no_grad():
        q = short["input_ids"].shape[1]
        a = method._adv_forward(model, dict(short), torch.zeros(1, q, 32), method.attack_prompt)
        b = method._adv_forward(model, dict(padded), torch.zeros(1, 12, 32), method.attack_prompt)
        # with δ = 0 and no attack prompt the adversarial path equals the ordinary peft forward
        c = method._adv_forward(model, dict(padded), torch.zeros(1, 12, 32), None)
        d = model(**padded).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, d, atol=1e-6, rtol=1e-6)


def test_attack_prompt_not_part_of_inference(batch, tmp_path):
    method, model = _setup(adv_attack_tokens=4)
    method.step(model, dict(batch), lambda loss: loss.backward())
    inference = method.inference_model(model).eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        before = inference(**inputs).logits
        method.attack_prompt = method.attack_prompt + 10.0  # a different attack prompt...
        after = inference(**inputs).logits
    torch.testing.assert_close(before, after)  # ...changes nothing at inference
    # the saved run holds the defense prompt and the head only, and reloads to the same predictions
    base_dir, run_dir = tmp_path / "base", tmp_path / "run"
    tiny_model(num_labels=2, dropout=0.0, seed=0).save_pretrained(base_dir)
    method.save_inference_model(inference, tiny_tokenizer(), run_dir)
    from safetensors.torch import load_file

    saved = load_file(run_dir / "peft_adapter" / "adapter_model.safetensors")
    assert any("prompt_embeddings" in k for k in saved)
    assert all("prompt_embeddings" in k or "classifier" in k or "pooler" in k for k in saved), sorted(saved)
    assert not any(v.shape == method.attack_prompt.shape for v in saved.values())
    loaded, tok = PEAFT.load_inference_model(run_dir, {"model": {"model": str(base_dir)}, "label_names": ["n", "p"]})
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs).logits, before)
    assert tok("good movie")["input_ids"] == tiny_tokenizer()("good movie")["input_ids"]


def test_lambda_zero_is_prompt_tuning_and_state_round_trip(batch):
    method, model = _setup(adv_lambda=0.0)
    out = method.step(model, dict(batch), lambda loss: loss.backward())
    assert abs(out.loss.item() - out.metrics["adv/clean_loss"]) < 1e-6
    state = method.state_dict()
    fresh = PEAFT()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.attack_prompt, method.attack_prompt)


def test_without_attack_prompt(batch):
    method, model = _setup(adv_attack_tokens=0, adv_steps=2)
    out = method.step(model, dict(batch), lambda loss: loss.backward())
    assert method.attack_prompt is None and method.state_dict() == {}
    assert out.metrics["adv/loss"] >= out.metrics["adv/inner_loss_first"] - 1e-6


def test_mean_pooling_reads_the_mean_of_the_text_states_and_survives_reloading(batch, tmp_path):
    """``adv_pooling=mean``: the head sees the masked mean of the final states after the defense
    prompt (padding excluded), not the first virtual token; a reloaded run pools the same way."""
    k = 4
    method, model = _setup(adv_num_virtual_tokens=k, adv_pooling="mean", adv_attack_tokens=0)
    method.step(model, dict(batch), lambda loss: loss.backward())
    model.eval()
    inputs = {k_: v for k_, v in batch.items() if k_ != "labels"}
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        last = out.hidden_states[-1]  # (B, k + L, d)
        mask = batch["attention_mask"].float()
        mean = (last[:, k:] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        base = model.get_base_model()
        pooled = base.bert.pooler.modules_to_save["default"](mean.unsqueeze(1))
        expected = base.classifier.modules_to_save["default"](pooled)
        torch.testing.assert_close(out.logits, expected)
        first = base.classifier.modules_to_save["default"](base.bert.pooler.modules_to_save["default"](last))
        assert not torch.allclose(out.logits, first)
    assert (batch["attention_mask"] == 0).any(), "the batch must hold padding for this test"
    base_dir, run_dir = tmp_path / "base", tmp_path / "run"
    tiny_model(num_labels=2, dropout=0.0, seed=0).save_pretrained(base_dir)
    method.save_inference_model(model, tiny_tokenizer(), run_dir)
    config = {
        "model": {"model": str(base_dir)},
        "label_names": ["n", "p"],
        "method": {"config": method.config.to_dict()},
    }
    loaded, _ = PEAFT.load_inference_model(run_dir, config)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs).logits, out.logits)


def test_mean_pooling_is_validated():
    import pytest

    from advtune.errors import UsageError

    with pytest.raises(UsageError, match="adv_pooling"):
        get_method("peaft", adv_pooling="max")


def test_mean_pooling_leaves_the_attack_prompt_out_of_the_mean(batch):
    """In the adversarial forwards the pooled positions are the text's: the attack prompt acts through
    attention only (as on the first position), and the skip is restored afterwards."""
    k, k_a = 4, 3
    method, model = _setup(adv_num_virtual_tokens=k, adv_pooling="mean", adv_attack_tokens=k_a)
    model.eval()
    state = model._advtune_pool_state
    delta = torch.zeros(*batch["input_ids"].shape, 32)
    seen = {}
    head = model.get_base_model().bert.pooler.modules_to_save["default"]

    def spy(module, args):  # the first call only: the reference forward below runs the pooler again
        seen.setdefault("pooled", args[0][:, 0].clone())

    handle = head.register_forward_pre_hook(spy)
    with torch.no_grad():
        out = method._adv_forward(model, batch, delta, method.attack_prompt)
        hidden = (
            model.get_base_model()
            .bert(
                inputs_embeds=torch.cat(
                    [
                        model.prompt_encoder["default"].embedding.weight.unsqueeze(0).expand(len(delta), -1, -1),
                        method.attack_prompt.unsqueeze(0).expand(len(delta), -1, -1),
                        model.get_input_embeddings()(batch["input_ids"]),
                    ],
                    dim=1,
                ),
                attention_mask=torch.cat(
                    [torch.ones(len(delta), k + k_a, dtype=torch.long), batch["attention_mask"]], 1
                ),
            )
            .last_hidden_state
        )
    handle.remove()
    mask = batch["attention_mask"].float().unsqueeze(-1)
    expected = (hidden[:, k + k_a :] * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(seen["pooled"], expected, rtol=1e-4, atol=1e-5)
    assert state["skip"] == k and out.shape == (len(delta), 2)


def _decoder_peaft(family: str, pooling: str, k: int = 3):
    from advtune.testing import tiny_family_model

    method = get_method("peaft", adv_num_virtual_tokens=k, adv_pooling=pooling, adv_attack_tokens=0)
    return method.setup(tiny_family_model(family, dropout=0.0)).eval()


def test_mean_pooling_on_decoders_reads_the_mean_of_the_text_states():
    """Decoders (Llama, Qwen2) have a ``score`` head that transformers applies at the last position when a
    prompt adapter feeds embeddings: with ``adv_pooling=mean`` it reads the masked mean of the text's final
    states instead, so a right-padded sentence gets the logits it gets alone; with ``first`` it does not
    (the last position of the short row is padding)."""
    from advtune.testing import tiny_family_batch

    texts, labels, k = ["good movie", "a very bad and boring movie"], [1, 0], 3
    for family in ("llama-right", "qwen2-left"):
        model = _decoder_peaft(family, "mean", k)
        batch = tiny_family_batch(family, texts, labels)
        inputs = {n: v for n, v in batch.items() if n != "labels"}
        assert (batch["attention_mask"] == 0).any()
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
            states, mask = out.hidden_states[-1], batch["attention_mask"].float()  # final states, after the norm
            mean = (states[:, k:] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            expected = model.get_base_model().score.modules_to_save["default"](mean)
            torch.testing.assert_close(out.logits, expected, rtol=1e-4, atol=1e-5)
    batch = tiny_family_batch("llama-right", texts, labels)
    inputs = {n: v for n, v in batch.items() if n != "labels"}
    short = {n: v[:1, : int(batch["attention_mask"][0].sum())] for n, v in inputs.items()}
    with torch.no_grad():
        for pooling, same in (("mean", True), ("first", False)):
            model = _decoder_peaft("llama-right", pooling, k)
            batched, alone = model(**inputs).logits[0], model(**short).logits[0]
            assert torch.allclose(batched, alone, rtol=1e-4, atol=1e-5) is same, pooling
