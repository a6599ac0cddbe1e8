"""``adv_memory=sequential`` gives the joint backward's gradient with one graph alive at a time.

Every method whose config has ``adv_memory`` (the single-backward methods, found in the registry) runs two
training steps in both modes on the tiny model with dropout on, so the replay of the perturbed pass's
dropout masks is exercised; the gradients of both steps, the reported loss, the metrics, the method's
state and the random stream after the steps must agree. A second step (after an SGD update) checks that
the sequential step leaves the random stream and the buffers where the joint one does.
"""

from __future__ import annotations

import weakref

import pytest
import torch

from advtune.methods import METHODS, get_method
from advtune.methods import paired as paired_module
from advtune.methods.base import AdvMemoryConfig
from advtune.methods.paired import PairedMethod
from advtune.testing import tiny_model

PAIRED = sorted(n for n, cls in METHODS.items() if issubclass(cls.config_class, AdvMemoryConfig))
"""The registry's single-backward methods (every config with ``adv_memory``)."""

VARIANTS = {
    # CAT's NT-Xent: each view's partner is the other view, detached in the sequential parts
    "cat-contrastive": ("cat", {"adv_lambda": 0.5, "adv_proj_dim": 8, "adv_epsilon": 1e-2}),
    "cat-uncoupled": ("cat", {"adv_lambda": 0.0, "adv_target": "embeddings", "adv_epsilon": 1e-2}),
    # a δ that moves the outputs (the papers' ε = 1e-5 barely does), for VAT/TAT's terms of both passes
    "vat-mtdnn": ("vat", {"adv_variant": "mtdnn"}),
    "tat-targeted": ("tat", {"adv_epsilon": 1e-2, "adv_step_size": 1e-2, "adv_init_scale": 1e-3}),
    "smart-bregman": ("smart", {"adv_bregman_mu": 3.0, "adv_bregman_beta": 0.5}),
    "r3f-reuse-dropout": ("r3f", {"adv_reuse_dropout": True, "adv_init_scale": 1e-2}),
    "rose-selecting": ("rose", {"adv_lower": 20.0, "adv_upper": 80.0}),
}
CASES = {**{n: (n, {}) for n in PAIRED}, **VARIANTS}


def _train(name: str, overrides: dict, mode: str, batch: dict, steps: int = 2):
    """``steps`` SGD steps; returns each step's output and gradients, the method, the final RNG state and the
    model's buffers."""
    torch.manual_seed(0)
    method = get_method(name, adv_memory=mode, **overrides)
    model = method.setup(tiny_model(num_labels=2, dropout=0.1, seed=0)).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    torch.manual_seed(1)
    outs, grads = [], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        outs.append(method.step(model, dict(batch), lambda loss: loss.backward()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        opt.step()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return outs, grads, method, torch.get_rng_state(), buffers


def test_the_registry_declares_the_single_backward_methods():
    """The capability is the config's ``adv_memory``; every paired-frame method has it and honours it."""
    assert len(PAIRED) >= 8
    for name, cls in METHODS.items():
        assert issubclass(cls, PairedMethod) == (name in PAIRED), name


@pytest.mark.parametrize("case", sorted(CASES))
def test_sequential_equals_joint(case, batch):
    name, overrides = CASES[case]
    joint = _train(name, overrides, "joint", batch)
    seq = _train(name, overrides, "sequential", batch)
    for step, (out_j, out_s, g_j, g_s) in enumerate(zip(joint[0], seq[0], joint[1], seq[1])):
        torch.testing.assert_close(out_s.loss, out_j.loss, rtol=1e-6, atol=1e-7, msg=f"{case} step {step}: loss")
        assert out_s.metrics.keys() == out_j.metrics.keys()
        for key, value in out_j.metrics.items():
            assert out_s.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), f"{case} step {step}: {key}"
        assert g_s.keys() == g_j.keys(), f"{case}: different parameters received gradients"
        assert any(g.abs().sum() > 0 for g in g_j.values())
        for n in g_j:
            torch.testing.assert_close(g_s[n], g_j[n], rtol=1e-4, atol=1e-6, msg=f"{case} step {step}: {n}")
    assert torch.equal(seq[3], joint[3]), f"{case}: the random stream ends elsewhere"
    for n, buf in joint[4].items():
        torch.testing.assert_close(seq[4][n], buf, rtol=1e-6, atol=1e-7, msg=f"{case}: buffer {n}")
    state_j, state_s = joint[2].state_dict(), seq[2].state_dict()
    assert state_s.keys() == state_j.keys()
    for key in state_j:
        torch.testing.assert_close(state_s[key], state_j[key], msg=f"{case}: method state {key}")


@pytest.mark.parametrize(("name", "overrides", "keep_buffers"), [("vat", {}, False), ("r4f", {}, True)])
def test_without_the_replay_the_gradients_differ(name, overrides, keep_buffers, batch, monkeypatch):
    """The equality above rests on the replay: restoring nothing changes VAT's sequential gradient (other
    dropout masks); restoring only the RNG leaves R4F's spectral-norm vectors (buffers every training
    forward updates) one power iteration further than the joint step's."""
    joint = _train(name, overrides, "joint", batch, steps=1)
    if keep_buffers:
        monkeypatch.setattr(paired_module.Snapshot, "restore", lambda self: self.rng.restore())
    else:
        monkeypatch.setattr(paired_module.Snapshot, "restore", lambda self: None)
    seq = _train(name, overrides, "sequential", batch, steps=1)
    if keep_buffers:
        differ = [n for n, b in joint[4].items() if not torch.allclose(seq[4][n], b, rtol=1e-6, atol=1e-7)]
    else:
        differ = [n for n in joint[1][0] if not torch.allclose(seq[1][0][n], joint[1][0][n], rtol=1e-4, atol=1e-6)]
    assert differ, f"{name}: the sequential step does not depend on the replay: weak test"


class SavedBytes:
    """Bytes of the tensors autograd has saved for backward and not yet freed, and their peak."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def pack(self, t: torch.Tensor):
        n = t.numel() * t.element_size()
        self.live += n
        self.peak = max(self.peak, self.live)
        box = [t]
        holder = type("Saved", (), {"box": box})()
        weakref.finalize(holder, self._free, n)
        return holder

    def _free(self, n: int) -> None:
        self.live -= n

    @staticmethod
    def unpack(holder):
        return holder.box[0]


@pytest.mark.parametrize("name", PAIRED)
def test_sequential_keeps_one_graph_at_a_time(name, batch):
    """Peak saved-for-backward bytes: sequential at most 0.6x joint (two graphs -> one)."""
    peaks = {}
    for mode in ("joint", "sequential"):
        counter = SavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            _train(name, {}, mode, batch, steps=1)
        peaks[mode] = counter.peak
    assert peaks["sequential"] <= 0.6 * peaks["joint"], peaks


def test_adv_memory_is_validated():
    from advtune.errors import UsageError

    with pytest.raises(UsageError, match=r"invalid adv_memory='lazy': choose from joint, sequential"):
        get_method("vat", adv_memory="lazy")
    with pytest.raises(UsageError, match="adv_memory"):
        get_method("cat", adv_memory="both")


def test_overhead_rows_per_adv_memory_mode():
    """``--adv-memory joint,sequential`` gives every single-backward method one row per mode, others one row."""
    from advtune.bench.overhead import _jobs

    jobs = _jobs(["standard", "freelb", "vat"], {"vat": {"adv_steps": 2}}, "joint,sequential")
    assert jobs == [
        ("standard", "standard", {}),
        ("freelb", "freelb", {}),
        ("vat[joint]", "vat", {"adv_steps": 2, "adv_memory": "joint"}),
        ("vat[sequential]", "vat", {"adv_steps": 2, "adv_memory": "sequential"}),
    ]
    assert _jobs(["vat"], {}, None) == [("vat", "vat", {})]


def test_overhead_cli_refuses_an_unknown_mode():
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "advtune.bench.overhead", "--methods", "vat", "--adv-memory", "lazy"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: invalid adv_memory 'lazy': choose from joint, sequential"]


@pytest.mark.parametrize("name", ["tat", "rose"])
def test_trainer_gives_the_same_model_in_both_modes(name, tmp_path, tokenizer, toy_dataset):
    """Through AdversarialTrainer (accelerate's backward, gradient accumulation over 2 micro-batches, AdamW,
    dropout on), both modes end at the same weights."""
    from transformers import TrainingArguments

    from advtune.data import collator
    from advtune.trainer import AdversarialTrainer

    finals = []
    for mode in ("joint", "sequential"):
        args = TrainingArguments(
            output_dir=str(tmp_path / mode), per_device_train_batch_size=8, gradient_accumulation_steps=2,
            max_steps=3, learning_rate=1e-3, report_to="none", save_strategy="no", seed=0, use_cpu=True,
            dataloader_pin_memory=False,
        )  # fmt: skip
        model = tiny_model(num_labels=2, dropout=0.1, seed=0)
        method = get_method(name, adv_memory=mode)
        trainer = AdversarialTrainer(
            model=model, args=args, method=method, train_dataset=toy_dataset, data_collator=collator(tokenizer)
        )
        trainer.train()
        finals.append({k: v.detach().clone() for k, v in model.named_parameters()})
    for k, v in finals[0].items():
        torch.testing.assert_close(finals[1][k], v, rtol=1e-4, atol=1e-6, msg=k)
