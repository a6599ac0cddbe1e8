"""A test hook: ``ADVTUNE_FAULT=<point>[@<n>]`` makes the process kill itself (SIGKILL) at a named point.

Fault tests need a ``kill -9`` at moments a timer cannot hit reliably: after a checkpoint's weights are
written but before its optimizer state, between writing ``metrics.json``'s temporary file and renaming
it, after the n-th attacked example. Code calls :func:`point` at those moments; with the variable unset
(always, outside the fault tests) it costs one dictionary lookup. Points in use:

- ``step`` (``@n``: after optimizer step n), ``checkpoint_weights`` (a checkpoint's weights are on disk,
  its optimizer, scheduler, RNG and trainer state are not), ``write:<file name>`` (the temporary file
  is written, the rename has not happened), ``attack_example`` (``@n``: after the n-th example is
  appended to ``adversarial.jsonl``).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def point(name: str, n: int | None = None) -> None:
    """SIGKILL this process if ``ADVTUNE_FAULT`` names this point (and, with ``@k``, this is occurrence k).

    ``n`` is the occurrence number when the caller knows it (a step number); otherwise calls are counted.
    """
    spec = os.environ.get("ADVTUNE_FAULT")
    if not spec:
        return
    want, _, at = spec.partition("@")
    if want != name:
        return
    if n is None:
        n = _counts[name] = _counts.get(name, 0) + 1
    if not at or int(at) == n:
        os.kill(os.getpid(), signal.SIGKILL)


def install_checkpoint_hook(trainer) -> None:
    """With ``ADVTUNE_FAULT=checkpoint_weights[@n]``: die after a checkpoint's weights, before its optimizer."""
    if not os.environ.get("ADVTUNE_FAULT", "").startswith("checkpoint_weights"):
        return
    original = trainer._save_optimizer_and_scheduler

    def save_optimizer_and_scheduler(output_dir):
        point("checkpoint_weights")
        return original(output_dir)

    trainer._save_optimizer_and_scheduler = save_optimizer_and_scheduler
