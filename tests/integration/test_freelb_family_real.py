"""Real MiniLM + shared data: every embedding-space method learns SST-2 from a small subset, and runs on RTE.

Settings: SST-2 with a seeded subset of 1,024 train examples, length 64, batch 32, 1 epoch (32
steps), learning rate 3e-4, evaluated on the first 200 dev examples; two ascent steps instead of
three for the multi-pass methods. The point is that each method learns (accuracy clearly above the
~51% majority rate), not a tuned number: fewer than ~30 steps leave MiniLM's loss at ln 2 (a
512-example / 16-step run stayed at 49.5%). RTE (pairs) runs on 128 examples and only its accuracy
is printed: with this budget it is near chance for every method, standard fine-tuning included.

Budget (an estimate from standard fine-tuning's ~1.7 s per step at batch 32 x 64 on an idle 2-core
machine): 32 steps of 2-3 forward/backward passes per method, so all five methods take ~7 minutes.
By default only ``freelb`` runs (SST-2 and RTE, ~2 minutes); set ``ADVTUNE_INTEGRATION_ALL=1`` to run every method.
"""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from tests.conftest import requires_data

pytestmark = [pytest.mark.integration, requires_data]

OVERRIDES = {  # fewer passes than the paper's K = 3 to fit the CI budget
    "fgm": {},
    "pgd": {"adv_steps": 2},
    "freeat": {"adv_replays": 2},
    "freelb": {"adv_steps": 2},
    "yopo": {"adv_steps": 2, "adv_inner_steps": 2},
}
COMMON = dict(
    num_train_epochs=1, max_length=64, save_strategy="no", logging_steps=4, seed=42, learning_rate=3e-4,
    per_device_train_batch_size=32,
)  # fmt: skip
SST2_TRAIN, SST2_EVAL, SST2_MIN_ACC = 1024, 200, 0.65
RTE_TRAIN, RTE_EVAL = 128, 100
ALL = os.environ.get("ADVTUNE_INTEGRATION_ALL") == "1"
METHODS = [
    pytest.param(m, marks=pytest.mark.skipif(m != "freelb" and not ALL, reason="set ADVTUNE_INTEGRATION_ALL=1"))
    for m in sorted(OVERRIDES)
]


def _run(tmp_path, task: str, method: str, n_train: int, n_eval: int) -> tuple[float, list[dict]]:
    from advtune.pipeline import train

    start = time.perf_counter()
    run = train(
        task, method, tmp_path / f"{task}-{method}", max_train_samples=n_train, max_eval_samples=n_eval,
        method_overrides=OVERRIDES[method], **COMMON,
    )  # fmt: skip
    acc = json.loads((run / "metrics.json").read_text())["splits"]["validation"]["accuracy"]
    logs = json.loads((run / "log_history.json").read_text())
    print(
        f"{task} {method}: dev accuracy {acc:.3f} ({n_train} train, {n_eval} dev, {time.perf_counter() - start:.0f}s)"
    )
    return acc, logs


@pytest.mark.parametrize("method", METHODS)
def test_method_learns_sst2_subset(tmp_path, method):
    acc, logs = _run(tmp_path, "sst2", method, SST2_TRAIN, SST2_EVAL)
    adv = [h for h in logs if "adv/delta_norm" in h]
    assert adv, f"{method}: no adv/* metrics in the log history"
    assert all(math.isfinite(h["loss"]) for h in logs if "loss" in h)
    assert acc >= SST2_MIN_ACC, f"{method}: SST-2 dev accuracy {acc:.3f} < {SST2_MIN_ACC}"


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_on_rte(tmp_path, method):
    acc, logs = _run(tmp_path, "rte", method, RTE_TRAIN, RTE_EVAL)
    assert 0.0 <= acc <= 1.0 and all(math.isfinite(h["loss"]) for h in logs if "loss" in h)
