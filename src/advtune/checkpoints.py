"""Checkpoints for ``--resume``: pick the latest *complete* one, set partial ones aside, whole-run statistics.

A ``kill -9`` while the Trainer writes ``checkpoint-N`` leaves a folder with some of its files; handing
that folder to the Trainer ends in a traceback. A checkpoint counts here only when its weights,
optimizer, scheduler, RNG state, trainer state and method state are all present and readable; the
others are renamed to ``.partial-checkpoint-N`` (hidden from the Trainer's rotation) with one warning.

Older checkpoints are deleted only after a newer one is complete (:func:`rotate`), never before, so a
complete checkpoint exists at every moment after the first one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runs
from .errors import UsageError

PREFIX = "checkpoint-"
WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
REQUIRED = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "method_state.pt")


def _step(path: Path) -> int:
    tail = path.name[len(PREFIX) :]
    return int(tail) if tail.isdigit() else -1


def all_checkpoints(out: str | Path) -> list[Path]:
    """``checkpoint-N`` folders, oldest first."""
    found = [p for p in Path(out).glob(f"{PREFIX}*") if p.is_dir() and _step(p) >= 0]
    return sorted(found, key=_step)


def problem(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be resumed from (the first missing or damaged file), or ``None`` when complete."""
    weights = [ckpt / w for w in WEIGHTS if (ckpt / w).is_file()]
    if not weights:
        return "no weights"
    missing = [name for name in REQUIRED if not (ckpt / name).is_file()]
    if not any(ckpt.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    if missing:
        return f"missing {missing[0]}"
    try:
        for path in [*weights, *(ckpt / name for name in REQUIRED), *ckpt.glob("rng_state*.pth")]:
            runs.check_file(path)
        if runs.read_json(ckpt / "trainer_state.json").get("global_step") != _step(ckpt):
            return "trainer_state.json does not match the folder's step"
    except UsageError as exc:
        return f"damaged {Path(getattr(exc, 'path', '?')).name}"
    return None


def latest_complete(out: str | Path, main: bool = True) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are set aside (main process) with one warning."""
    partial: list[tuple[Path, str]] = []
    chosen = None
    for ckpt in reversed(all_checkpoints(out)):
        why = problem(ckpt)
        if why is None:
            chosen = ckpt
            break
        partial.append((ckpt, why))
    if partial and main:
        for ckpt, _ in partial:
            aside = ckpt.parent / f".partial-{ckpt.name}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(ckpt, aside)
        names = ", ".join(f"{c.name} ({why})" for c, why in partial)
        then = f"resuming from {chosen.name}" if chosen else "no complete checkpoint: training from the start"
        runs.warn(f"set aside incomplete checkpoint(s) {names}; {then}")
    return chosen


def rotate(out: str | Path, keep: int | None, protect: str | None = None) -> None:
    """Keep the newest ``keep`` complete checkpoints (and ``protect``, the best one); delete older ones."""
    if not keep or keep <= 0:
        return
    complete = [c for c in all_checkpoints(out) if problem(c) is None]
    for ckpt in complete[:-keep]:
        if protect is None or Path(protect).resolve() != ckpt.resolve():
            shutil.rmtree(ckpt, ignore_errors=True)


@contextlib.contextmanager
def discard_if_fruitless(out: str | Path, mode: str, main: bool = True) -> Iterator[None]:
    """A new run that fails before its first checkpoint leaves no folder behind (nothing to resume from).

    With a checkpoint the folder stays: ``--resume`` continues it. Resumed and replacing runs are left
    to their own rules (the replaced run comes back through :func:`advtune.runs.replacing`).
    """
    out = Path(out)
    created = not out.exists()
    was_empty = out.is_dir() and not any(out.iterdir())  # a folder the user made for the run: emptied, kept
    try:
        yield
    except BaseException:
        if (
            main
            and (created or was_empty)
            and mode in ("new", "replace")
            and out.is_dir()
            and not all_checkpoints(out)
        ):
            for child in [out] if created else list(out.iterdir()):
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def remove_all(out: str | Path) -> None:
    """Delete checkpoints and set-aside partial checkpoints once the run has finished."""
    out = Path(out)
    for path in [*all_checkpoints(out), *out.glob(f".partial-{PREFIX}*")]:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Earlier:
    """What the run did before ``--resume`` picked up (read before training: rotation deletes the checkpoint)."""

    step: int = 0
    loss_sum: float = 0.0
    runtime_s: float = 0.0

    @classmethod
    def read(cls, ckpt: Path | None) -> Earlier:
        if ckpt is None:
            return cls()
        state = runs.read_json(ckpt / "trainer_state.json")
        clock = state.get("stateful_callbacks", {}).get("_RunClock") or {}
        if isinstance(clock, list):
            clock = clock[-1] if clock else {}
        step = _step(ckpt)
        runtime = float(clock.get("attributes", {}).get("runtime_s", 0.0))
        return cls(step, loss_sum(state.get("log_history", []), step), runtime)


def loss_sum(log_history: list[dict[str, Any]], up_to_step: int) -> float:
    """Sum of the per-step training losses up to ``up_to_step``, rebuilt from the logged interval means."""
    total, prev = 0.0, 0
    for entry in log_history:
        step = entry.get("step", 0)
        if "loss" in entry and step <= up_to_step:
            total += float(entry["loss"]) * (step - prev)
            prev = step
    return total


def whole_run_stats(metrics: dict[str, Any], global_step: int, earlier: Earlier) -> dict[str, Any]:
    """The Trainer's ``train_*`` metrics for the whole run, not the last part only, when it was resumed."""
    out = dict(metrics)
    if earlier.step == 0:
        return out
    part_steps = global_step - earlier.step
    part_runtime = float(metrics.get("train_runtime", 0.0))
    out["train_loss"] = (earlier.loss_sum + float(metrics.get("train_loss", 0.0)) * part_steps) / max(global_step, 1)
    out["train_runtime"] = earlier.runtime_s + part_runtime
    if out["train_runtime"] > 0:
        out["train_steps_per_second"] = global_step / out["train_runtime"]
        if part_steps and part_runtime:
            per_step = float(metrics.get("train_samples_per_second", 0.0)) * part_runtime / part_steps
            out["train_samples_per_second"] = per_step * global_step / out["train_runtime"]
    out["resumed_from_step"] = earlier.step
    return out
