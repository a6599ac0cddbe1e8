"""The process tier: real ``advtune`` processes (killed at named points, or refusing bad input)."""

from __future__ import annotations

import os
from pathlib import Path

SRC = str(Path(__file__).parents[2] / "src")


def environment(w: Path) -> dict[str, str]:
    """The CLI's environment: this checkout, the toy data, no hub, and the test process's torch thread count
    (a different count changes float sums, and the comparison with the in-process reference is exact)."""
    threads = os.environ.get("ADVTUNE_TEST_THREADS", "1")
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "ADVTUNE_DATA_DIR": str(w / "data")}
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    env.pop("ADVTUNE_FAULT", None)
    return env
