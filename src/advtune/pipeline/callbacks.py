"""Trainer callbacks of a run: step timing with the machine record, and whole-run bookkeeping for ``--resume``."""

from __future__ import annotations

import statistics
import time
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .. import checkpoints, faults
from ..threads import MachineProbe
from ..threads import apply as apply_threads


class _StepTimer(TrainerCallback):
    """Wall and process-CPU seconds of each training step, and the machine record of the training.

    It applies the run's ``--threads`` when created (see :mod:`advtune.threads`). CPU step times sit
    beside the wall ones because on a shared machine wall time follows the other jobs' load, so the
    report compares methods by CPU time where both runs recorded it.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._t = self._c = 0.0
        self._setting = apply_threads(threads)
        self._probe = MachineProbe.start(self._setting)
        self.machine: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._probe = MachineProbe.start(self._setting)

    def on_step_begin(self, args, state, control, **kwargs):
        self._t, self._c = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)
        self.cpu_times.append(time.process_time() - self._c)

    def on_train_end(self, args, state, control, **kwargs):
        self.machine = self._probe.finish()

    def record(self) -> dict[str, Any]:
        """The ``train_stats.json`` fields: median wall and CPU step time, threads and machine load."""
        return {
            "step_time_median_s": statistics.median(self.times) if self.times else None,
            "step_cpu_time_median_s": statistics.median(self.cpu_times) if self.cpu_times else None,
            "machine": self.machine or self._probe.finish(),
        }


class _RunClock(TrainerCallback, ExportableState):
    """Whole-run bookkeeping that survives ``--resume``.

    A log line is forced at every checkpoint, so the checkpoint's ``log_history`` accounts for the loss
    of every step up to it (the whole-run ``train_loss`` of a resumed run is rebuilt from it), and the
    training time so far is stored in the checkpoint's ``trainer_state.json``. Also the ``step`` fault
    point of :mod:`advtune.faults`.
    """

    def __init__(self, runtime_s: float = 0.0, keep: int | None = None) -> None:
        self.runtime_s = runtime_s  # training seconds of the earlier parts of the run
        self.keep = keep  # --save-total-limit, applied here once the new checkpoint is complete
        self._start = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        faults.point("step", state.global_step)
        if control.should_save:
            control.should_log = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            checkpoints.rotate(args.output_dir, self.keep, protect=state.best_model_checkpoint)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"runtime_s": self.runtime_s + time.perf_counter() - self._start}}
