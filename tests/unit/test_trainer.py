"""AdversarialTrainer: delegation adds nothing, replays, logs, method state in checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Trainer, TrainingArguments

from advtune.data import collator
from advtune.methods import get_method
from advtune.methods.base import Backward, Method, MethodConfig, StepOutput, model_inputs, task_loss
from advtune.testing import tiny_model
from advtune.trainer import AdversarialTrainer, ReplaySampler


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        seed=0,
        logging_steps=1,
        use_cpu=True,
        dataloader_pin_memory=False,
        weight_decay=0.01,
        warmup_steps=0.1,
    )
    base.update(kw)
    return TrainingArguments(**base)


def test_standard_step_lowers_loss(model, batch):
    method = get_method("standard")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        out = method.step(model, batch, lambda loss: loss.backward())
        losses.append(out.loss.item())
        opt.step()
    assert losses[-1] < losses[0]
    assert not out.loss.requires_grad


def test_trainer_matches_stock_trainer(tmp_path, tokenizer, toy_dataset):
    """Same seed and data: AdversarialTrainer(standard) == transformers.Trainer, parameter for parameter."""
    results = []
    for cls in (Trainer, AdversarialTrainer):
        model = tiny_model(dropout=0.1, seed=1)
        kw = {"method": get_method("standard")} if cls is AdversarialTrainer else {}
        trainer = cls(
            model=model,
            args=_args(tmp_path / cls.__name__),
            train_dataset=toy_dataset,
            data_collator=collator(tokenizer),
            **kw,
        )
        trainer.train()
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    stock, ours = results
    for key in stock:
        torch.testing.assert_close(ours[key], stock[key], rtol=0, atol=1e-6, msg=key)
    # and training changed the weights at all
    assert not torch.equal(ours["classifier.weight"], tiny_model(dropout=0.1, seed=1).classifier.weight)


def test_gradient_accumulation_equivalence(tmp_path, tokenizer, toy_dataset):
    """Batch 16 x 1 step == batch 8 x 2 accumulated micro-batches (dropout off, same order)."""
    finals = []
    for bs, gas in ((16, 1), (8, 2)):
        model = tiny_model(dropout=0.0, seed=2)
        trainer = AdversarialTrainer(
            model=model,
            args=_args(
                tmp_path / f"{bs}",
                per_device_train_batch_size=bs,
                gradient_accumulation_steps=gas,
                max_steps=2,
                warmup_steps=0,
                optim="sgd",
            ),
            method=get_method("standard"),
            train_dataset=toy_dataset,
            data_collator=collator(tokenizer),
        )
        trainer.train()
        finals.append(model.classifier.weight.detach().clone())
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-4, atol=1e-5)


@dataclass
class _CountingConfig(MethodConfig):
    adv_replays: int = 3


class _Counting(Method):
    """Records the batches it sees; logs a metric; keeps state."""

    name = "counting"
    config_class = _CountingConfig

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self.seen: list[tuple[int, ...]] = []
        self.epochs: list[int] = []
        self.counter = torch.zeros(())

    def compute_loss(self, model, inputs):
        self.seen.append(tuple(inputs["input_ids"][:, 1].tolist()))
        self.counter += 1
        loss = task_loss(model(**model_inputs(inputs)).logits, inputs["labels"], False)
        return StepOutput(loss, {"adv/seen": float(len(self.seen))})

    def on_epoch_end(self, epoch):
        self.epochs.append(epoch)
        return {"adv/epoch_marker": float(epoch)}

    def state_dict(self):
        return {"counter": self.counter.clone()}

    def load_state_dict(self, state):
        self.counter = state["counter"]


def test_replay_sampler_repeats_whole_batches():
    base = list(range(10))
    sampler = ReplaySampler(base, batch_size=4, replays=3)
    order = list(sampler)
    assert len(order) == len(sampler) == 36  # 10 padded to 12, times 3
    batches = [tuple(order[i : i + 4]) for i in range(0, len(order), 4)]
    for k in range(0, len(batches), 3):
        assert batches[k] == batches[k + 1] == batches[k + 2]
    assert set(order) == set(base)


def test_trainer_replays_logs_and_state(tmp_path, tokenizer, toy_dataset):
    method = _Counting()
    trainer = AdversarialTrainer(
        model=tiny_model(),
        args=_args(tmp_path, save_strategy="steps", save_steps=6),
        method=method,
        train_dataset=toy_dataset,
        data_collator=collator(tokenizer),
    )
    trainer.train()
    # 64 examples / batch 8 = 8 batches, each replayed 3 times = 24 optimizer steps
    assert trainer.state.global_step == 24
    assert len(method.seen) == 24
    for k in range(0, 24, 3):
        assert method.seen[k] == method.seen[k + 1] == method.seen[k + 2]
    assert method.seen[0] != method.seen[3]
    logged = [h for h in trainer.state.log_history if "adv/seen" in h]
    assert logged and all("loss" in h for h in logged)
    assert method.epochs == [1]
    assert any(h.get("adv/epoch_marker") == 1.0 for h in trainer.state.log_history)
    # method state is saved with checkpoints and restored on resume
    ckpt = tmp_path / "checkpoint-24"
    assert (ckpt / "method_state.pt").is_file()
    fresh = _Counting()
    trainer2 = AdversarialTrainer(
        model=tiny_model(),
        args=_args(tmp_path),
        method=fresh,
        train_dataset=toy_dataset,
        data_collator=collator(tokenizer),
    )
    trainer2._load_from_checkpoint(str(ckpt))
    assert fresh.counter.item() == 24


class _InnerPass(Method):
    """Runs one inner pass under ``backward.no_sync()``, as FreeLB's first K-1 passes do."""

    name = "inner-pass"
    config_class = _CountingConfig

    def step(self, model, inputs, backward):
        self.backward = backward
        with backward.no_sync():
            loss = task_loss(model(**model_inputs(inputs)).logits, inputs["labels"], False)
        backward(loss)
        return StepOutput(loss.detach(), {})


def test_trainer_passes_the_accelerators_no_sync_with_backward(tmp_path, tokenizer, toy_dataset, monkeypatch):
    """``no_sync`` travels with ``backward`` (no attribute is set on the method), bound to the model being trained."""
    method = _InnerPass(adv_replays=1)
    trainer = AdversarialTrainer(
        model=tiny_model(),
        args=_args(tmp_path, max_steps=2),
        method=method,
        train_dataset=toy_dataset,
        data_collator=collator(tokenizer),
    )
    entered = []
    real = trainer.accelerator.no_sync
    monkeypatch.setattr(trainer.accelerator, "no_sync", lambda model: (entered.append(model), real(model))[1])
    trainer.train()
    assert isinstance(method.backward, Backward)
    assert len(entered) == 2 and all(m is trainer.model for m in entered)
    assert "no_sync" not in vars(method)
