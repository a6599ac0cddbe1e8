"""``scripts/gpu_check.py --cpu-dry-run`` end to end: every step of the GPU check, shrunk, on CPU (CI).

A tiny model and a toy SST-2 folder keep it well under a minute on two cores; on a GPU the same script
runs MiniLM on the real data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advtune.methods import METHODS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    from advtune.testing import tiny_model, tiny_tokenizer

    tiny_model(num_labels=2, seed=0).save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def _toy_sst2(root: Path, n_train: int = 80, n_dev: int = 70) -> Path:
    words = ["good", "bad", "great", "awful", "the", "movie", "film", "plot"]
    (root / "sst2").mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = [f"{words[i % 8]} {words[(i * 5) % 8]} {words[i % 2]}\t{(i % 2) ^ 1}" for i in range(n)]
        (root / "sst2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "synonyms").mkdir()
    (root / "synonyms" / "ppdb_synonyms.txt").write_text("good great\nbad awful\nmovie film\nplot movie\n")
    return root


def test_cpu_dry_run_writes_every_step_into_one_folder(tiny_dir, tmp_path):
    data = _toy_sst2(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(SCRIPT), "--cpu-dry-run", "--out", str(tmp_path / "gc"), "--model", str(tiny_dir),
           "--data-dir", str(data)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "gc" / "cpu-dry-run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gpu_tests"]["skipped"] == "no CUDA device (--cpu-dry-run)"
    rows = summary["overhead"]["rows"]
    assert [r["method"] for r in rows][0] == "standard" and {r["method"] for r in rows} == set(METHODS)
    assert rows[0]["time_ratio"] == 1.0 and all(r["step_s"] > 0 for r in rows)
    overhead = json.loads((out / "overhead.json").read_text())
    assert overhead["dtype"] == "bf16" and overhead["steps"] == 2 and overhead["batch_size"] == 4
    for method in ("standard", "freelb"):
        run = summary["sst2"][method]
        assert run["train_examples"] == 64 and run["steps"] == 2  # 64 of the 80 examples, batch 32
        assert 0.0 <= run["dev_accuracy"] <= 1.0 and run["wall_s"] > 0
        assert (out / "sst2" / method / "metrics.json").is_file()
    attack = summary["attack"]["runs"]
    assert set(attack) >= {"victim-first", "before-length-batching"}
    assert all(r["num_attacked"] >= 1 and r["num_violations"] == 0 for r in attack.values())
    assert json.loads((out / "attack.json").read_text())["identical_texts_across_orders"]  # same choices
    md = (out / "summary.md").read_text()
    assert "## Attack (textdefender-v1, first 10 SST-2 dev examples" in md
    assert "# advtune GPU check: cpu-dry-run" in md and "All steps passed." in md
    assert all(f"| {m} |" in md for m in METHODS) and "| freelb | " in md.split("## SST-2")[1]
