"""Real MiniLM + BANKING77: CAT trains, the difficult subset is drawn from the test set, `compare` works on real runs.

Budget: a standard and a CAT run of four steps on one fixed batch of 32, max length 64, each evaluated on the
first 128 examples of the test set and of its difficult subset. The learning claims (after 1,600 examples:
CAT test accuracy > 0.2, chance 1/77; the standard model scores more than 3 standard errors lower on the 770
difficult examples than on the rest of the test set) are benchmarks, reported in docs/intent.md.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import requires_data
from tests.integration import assert_learns_its_batch

pytestmark = [pytest.mark.integration, requires_data]

BUDGET = dict(
    max_train_samples=32,
    per_device_train_batch_size=32,
    num_train_epochs=4,
    warmup_steps=0,
    max_length=64,
    learning_rate=2e-4,
    eval_splits="test,test-difficult",
    max_eval_samples=128,
    save_strategy="no",
    logging_steps=1,
    seed=42,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from advtune.pipeline import train

    root = tmp_path_factory.mktemp("cat_real")
    return {
        "standard": train("banking77", "standard", root / "standard", **BUDGET),
        "cat": train("banking77", "cat", root / "cat", **BUDGET),
    }


def test_difficult_subset_is_770_examples_of_the_test_set():
    from advtune.tasks import get_task, resolve_data_dir

    task = get_task("banking77")
    test = task.load("test", data_dir=resolve_data_dir(None))
    hard = task.load("test-difficult", data_dir=resolve_data_dir(None))
    assert len(hard) == 770 and set(hard["idx"]) <= set(test["idx"])
    by_idx = dict(zip(test["idx"], test["text_a"], strict=True))
    assert all(by_idx[i] == t for i, t in zip(hard["idx"], hard["text_a"], strict=True))


def test_cat_trains_minilm_on_banking77(runs):
    run = runs["cat"]
    assert_learns_its_batch(run)
    logs = json.loads((run / "log_history.json").read_text())
    assert any("adv/ctr_loss" in entry for entry in logs) and any("adv/loss" in entry for entry in logs)
    from safetensors.torch import load_file

    assert not any("advtune_cat_head" in k for k in load_file(str(run / "model.safetensors")))
    stats = json.loads((run / "train_stats.json").read_text())
    assert stats["global_step"] == 4 and stats["step_time_median_s"] > 0


def test_compare_real_runs(runs):
    from advtune.evaluation.significance import compare_runs

    rows = compare_runs(runs["standard"], runs["cat"])
    assert [r["split"] for r in rows] == ["banking77.test", "banking77.test-difficult"]
    for r in rows:
        print(f"{r['split']}: standard {r['a']:.4f} cat {r['b']:.4f} p={r['p_value']:.3g} ({r['test']})")
        assert 0 < r["p_value"] <= 1 and r["test"].startswith("McNemar")
