"""Real MiniLM checkpoint + shared data: standard fine-tuning learns; regression and intent paths load."""

from __future__ import annotations

import json

import pytest

from tests.conftest import requires_data

pytestmark = [pytest.mark.integration, requires_data]


def test_sst2_standard_reaches_78(tmp_path):
    """4,000 SST-2 training examples, 1 epoch, full 872-example dev set: >= 78% (chance ~51%)."""
    from advtune.pipeline import train

    run = train(
        "sst2",
        "standard",
        tmp_path / "sst2",
        max_train_samples=4000,
        num_train_epochs=1,
        max_length=64,
        save_strategy="no",
        logging_steps=25,
        seed=42,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    acc = metrics["splits"]["validation"]["accuracy"]
    print(f"SST-2 dev accuracy (4k train, 1 epoch): {acc:.4f}")
    assert acc >= 0.78
    preds = (run / "eval" / "sst2.validation" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 872
    assert (run / "model.safetensors").is_file()
    cfg = json.loads((run / "run_config.json").read_text())
    assert cfg["num_train_examples"] == 4000 and cfg["method"]["name"] == "standard"


def test_stsb_regression_path(tmp_path):
    from advtune.pipeline import evaluate, train

    run = train(
        "stsb",
        "standard",
        tmp_path / "stsb",
        max_train_samples=2000,
        num_train_epochs=1,
        max_length=64,
        save_strategy="no",
        max_eval_samples=500,
        learning_rate=2e-4,
        per_device_train_batch_size=16,
    )
    m = json.loads((run / "metrics.json").read_text())["splits"]["validation"]
    print(f"STS-B (2k train, batch 16, 1 epoch, 500 dev): pearson {m['pearson']:.4f} spearman {m['spearman']:.4f}")
    assert m["pearson"] > 0.3 and m["spearman"] > 0.3
    again = evaluate(run, max_samples=500)
    assert again["stsb.validation"]["pearson"] == pytest.approx(m["pearson"], abs=1e-5)


def test_banking77_has_77_labels():
    from advtune.tasks import get_task, resolve_data_dir

    task = get_task("banking77")
    assert task.num_labels == 77
    ds = task.load("test", data_dir=resolve_data_dir(None))
    assert len(ds) == 3080 and set(ds["label"]) == set(range(77))
