"""CPU threads of a run and the machine load it ran under.

Why this exists: torch starts one intra-op thread per core. On cores that other jobs keep busy, those
threads wait on each other at every operator (the demo's standard cell took 12 minutes on two shared
cores against 1.2 minutes idle), so a run must be able to ask for fewer (``--threads N``). And a time
measured on a shared machine means little without the load it was measured under, so every run
records its thread count, the load average at its start and end, and its process CPU time beside its
wall time (CPU time follows the work done much more than the other jobs' load).

**Default** when ``--threads`` is not given: ``OMP_NUM_THREADS`` when set, capped at the cores this
process may use (more threads than cores never speeds up compute-bound operators, it only adds waits);
otherwise torch's own default (one thread per core), which is the fastest choice on idle cores. An
explicit ``--threads`` is applied as given. A setting applied explicitly stays in force for later runs
in the same process (a bench grid applies it once; each cell's ``train`` call keeps it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

ENV_VAR = "OMP_NUM_THREADS"
HELP = "CPU threads for torch (default: $OMP_NUM_THREADS capped at the usable cores, else torch's one per core)"
_explicit: int | None = None  # the last --threads applied in this process


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def parse_threads(value: Any, name: str = "--threads") -> int | None:
    """A thread count from a flag or a config value: a positive integer, or None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    if isinstance(value, (bool, float)) or not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise UsageError(f"invalid {name} {value!r}: must be a positive integer")
    return int(text)


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` (its first entry, as OpenMP reads a nested list such as ``4,2``), or None."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    return parse_threads(raw.split(",")[0], name=ENV_VAR)


def default_threads() -> int | None:
    """The count used without ``--threads``: min(usable cores, OMP_NUM_THREADS), or None (torch's default)."""
    env = env_threads()
    return None if env is None else min(env, usable_cpus())


def apply(threads: Any = None) -> dict[str, Any]:
    """Set torch's intra-op (and, while still allowed, inter-op) threads; returns :func:`in_effect`.

    ``threads``: the ``--threads`` value (validated here); None keeps an earlier explicit setting of this
    process, else applies :func:`default_threads`, else leaves torch's default alone.
    """
    global _explicit
    import torch

    n = parse_threads(threads)
    source = "--threads"
    if n is not None:
        _explicit = n
    elif _explicit is not None:
        n, source = _explicit, "--threads (earlier in this process)"
    else:
        n, source = default_threads(), ENV_VAR
    if n is None:
        return in_effect("torch default (one per core)")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:  # only allowed before the first inter-op parallel work of the process
        if torch.get_num_interop_threads() != n:
            torch.set_num_interop_threads(n)
    except RuntimeError:
        pass
    return in_effect(source)


def in_effect(source: str | None = None) -> dict[str, Any]:
    """What this process runs with now: intra-op and inter-op threads, cores, and where the count came from."""
    import torch

    out: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        ENV_VAR: os.environ.get(ENV_VAR),
    }
    if source:
        out["threads_source"] = source
    return out


def loadavg() -> list[float] | None:
    """1-, 5- and 15-minute load averages (runnable tasks, all processes), or None where unsupported."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


@dataclass
class MachineProbe:
    """Load average, wall and process CPU time between :meth:`start` and :meth:`finish` of one phase."""

    load_start: list[float] | None = None
    wall0: float = 0.0
    cpu0: float = 0.0
    setting: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, setting: dict[str, Any] | None = None) -> MachineProbe:
        return cls(loadavg(), time.perf_counter(), time.process_time(), dict(setting or in_effect()))

    def finish(self) -> dict[str, Any]:
        """The record: thread setting, load at start and end, wall and CPU seconds and their ratio.

        ``cpu_per_wall`` is the mean number of cores the process kept busy: well below its thread
        count means it waited for cores (or for I/O).
        """
        wall = time.perf_counter() - self.wall0
        cpu = time.process_time() - self.cpu0
        return {
            **self.setting,
            "load_start": self.load_start,
            "load_end": loadavg(),
            "wall_s": round(wall, 4),
            "cpu_s": round(cpu, 4),
            "cpu_per_wall": round(cpu / wall, 3) if wall > 0 else None,
        }


def mean_load(record: dict[str, Any] | None) -> float | None:
    """The 1-minute load average over a recorded phase: the mean of its start and end values."""
    if not record:
        return None
    values = [r[0] for r in (record.get("load_start"), record.get("load_end")) if r]
    return sum(values) / len(values) if values else None
