"""Real MiniLM checkpoint + shared data: standard fine-tuning runs end to end; regression and intent paths load.

Six steps on one fixed batch each. The learning claims these tests used to check over minutes of training
(SST-2 dev accuracy >= 78% after 4,000 examples; STS-B Pearson and Spearman > 0.3 after 2,000) are benchmarks.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import requires_data
from tests.integration import FIXED_BATCH, assert_learns_its_batch

pytestmark = [pytest.mark.integration, requires_data]


def test_sst2_standard_run_is_complete_and_learns_its_batch(tmp_path):
    """The full 872-example dev set is scored, the model is saved, the run config records the budget."""
    from advtune.pipeline import train

    run = train(
        "sst2", "standard", tmp_path / "sst2", max_length=64, save_strategy="no", seed=42, learning_rate=1e-4,
        **FIXED_BATCH,
    )  # fmt: skip
    assert_learns_its_batch(run)
    preds = (run / "eval" / "sst2.validation" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 872
    acc = json.loads((run / "metrics.json").read_text())["splits"]["validation"]["accuracy"]
    assert 0 <= acc <= 1
    assert (run / "model.safetensors").is_file()
    cfg = json.loads((run / "run_config.json").read_text())
    assert cfg["num_train_examples"] == 16 and cfg["method"]["name"] == "standard"


def test_stsb_regression_path(tmp_path):
    from advtune.pipeline import evaluate, train

    run = train(
        "stsb", "standard", tmp_path / "stsb", max_length=64, save_strategy="no", max_eval_samples=100,
        learning_rate=2e-4, seed=42, **FIXED_BATCH,
    )  # fmt: skip
    assert_learns_its_batch(run)
    m = json.loads((run / "metrics.json").read_text())["splits"]["validation"]
    print(f"STS-B (6 steps on 16 examples, 100 dev): pearson {m['pearson']:.4f} spearman {m['spearman']:.4f}")
    assert math.isfinite(m["pearson"]) and math.isfinite(m["spearman"])
    again = evaluate(run, max_samples=100)
    assert again["stsb.validation"]["pearson"] == pytest.approx(m["pearson"], abs=1e-5)


def test_banking77_has_77_labels():
    from advtune.tasks import get_task, resolve_data_dir

    task = get_task("banking77")
    assert task.num_labels == 77
    ds = task.load("test", data_dir=resolve_data_dir(None))
    assert len(ds) == 3080 and set(ds["label"]) == set(range(77))
