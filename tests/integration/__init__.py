"""Integration tier: the real MiniLM checkpoint on the shared data, a few steps per run.

A test here shows that a path works on the real checkpoint and data; how well a method learns ("accuracy
reaches X after N examples") is a benchmark (``advtune bench``, recorded in ``docs/``), not a CI test.
The one learning check kept is cheap and can still fail: a run that sees the same small batch at every
step (``FIXED_BATCH``) must lower the training loss on it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

FIXED_BATCH = dict(
    max_train_samples=16, per_device_train_batch_size=16, num_train_epochs=6, logging_steps=1, warmup_steps=0
)
"""16 examples in one batch, 6 epochs: six optimizer steps on the same batch, each step's loss logged."""


def logged_losses(run: Path) -> list[float]:
    """The training loss of every logging step, in order (``log_history.json``)."""
    logs = json.loads((run / "log_history.json").read_text())
    return [entry["loss"] for entry in logs if "loss" in entry]


def assert_learns_its_batch(run: Path, drop: float = 0.03) -> None:
    """Finite losses, and the last step's loss on the fixed batch at least ``drop`` (relative) below the first."""
    losses = logged_losses(run)
    assert len(losses) >= 4 and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < (1 - drop) * losses[0], f"the loss on the trained batch did not go down: {losses}"
