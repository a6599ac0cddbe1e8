"""--resume: only complete checkpoints count, partial ones are set aside, statistics cover the whole run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from advtune import checkpoints
from advtune.checkpoints import Earlier, latest_complete, loss_sum, problem, rotate, whole_run_stats


def make_checkpoint(out, step, skip=(), log_history=None, runtime_s=0.0):
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.zeros(3)}, str(ckpt / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "method_state.pt"):
        torch.save({"x": torch.ones(2)}, ckpt / name)
    state = {
        "global_step": step,
        "log_history": log_history or [],
        "stateful_callbacks": {"_RunClock": {"args": {}, "attributes": {"runtime_s": runtime_s}}},
    }
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    for name in skip:
        (ckpt / name).unlink()
    return ckpt


def test_complete_checkpoint_has_no_problem(tmp_path):
    assert problem(make_checkpoint(tmp_path, 4)) is None


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                  "trainer_state.json", "method_state.pt"])  # fmt: skip
def test_a_missing_file_makes_a_checkpoint_incomplete(tmp_path, name):
    why = problem(make_checkpoint(tmp_path, 4, skip=(name,)))
    assert why is not None and (name in why or why == "no weights"), why


@pytest.mark.parametrize("name,cut", [("model.safetensors", 20), ("optimizer.pt", 30), ("trainer_state.json", 5)])
def test_a_truncated_file_makes_a_checkpoint_incomplete(tmp_path, name, cut):
    ckpt = make_checkpoint(tmp_path, 4)
    path = ckpt / name
    path.write_bytes(path.read_bytes()[:cut])
    assert problem(ckpt) == f"damaged {name}"


def test_latest_complete_sets_partial_ones_aside_with_one_warning(tmp_path, capsys):
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 8)
    make_checkpoint(tmp_path, 12, skip=("optimizer.pt", "scheduler.pt"))
    make_checkpoint(tmp_path, 16, skip=("trainer_state.json",))
    assert latest_complete(tmp_path) == tmp_path / "checkpoint-8"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint-16" in err[0] and "checkpoint-12" in err[0] and "checkpoint-8" in err[0]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".partial-checkpoint-12", ".partial-checkpoint-16", "checkpoint-4", "checkpoint-8"]


def test_no_complete_checkpoint_trains_from_the_start(tmp_path, capsys):
    make_checkpoint(tmp_path, 4, skip=("rng_state.pth",))
    assert latest_complete(tmp_path) is None
    assert "training from the start" in capsys.readouterr().err


def test_rotation_never_deletes_the_last_complete_checkpoint(tmp_path):
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 8)
    make_checkpoint(tmp_path, 12, skip=("method_state.pt",))  # being written
    rotate(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-12", "checkpoint-8"]


def test_whole_run_train_loss_and_runtime(tmp_path):
    losses = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]  # per step; logged every 3 steps and at the checkpoint (4)
    logs = [{"step": 3, "loss": sum(losses[:3]) / 3}, {"step": 4, "loss": losses[3]}]
    assert loss_sum(logs, 4) == pytest.approx(sum(losses[:4]))
    ckpt = make_checkpoint(tmp_path, 4, log_history=logs, runtime_s=10.0)
    earlier = Earlier.read(ckpt)
    part = {"train_loss": sum(losses[4:]) / 4, "train_runtime": 5.0, "train_samples_per_second": 6.4}
    stats = whole_run_stats(part, 8, earlier)
    assert stats["train_loss"] == pytest.approx(sum(losses) / 8)
    assert stats["train_runtime"] == pytest.approx(15.0)
    assert stats["train_steps_per_second"] == pytest.approx(8 / 15)
    assert stats["train_samples_per_second"] == pytest.approx(8 * 8 / 15)  # 8 samples a step
    assert stats["resumed_from_step"] == 4
    assert whole_run_stats(part, 8, Earlier()) == part  # not resumed: the Trainer's own numbers


def test_remove_all_clears_checkpoints_and_partials(tmp_path):
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 8, skip=("optimizer.pt",))
    latest_complete(tmp_path)
    checkpoints.remove_all(tmp_path)
    assert list(tmp_path.iterdir()) == []
