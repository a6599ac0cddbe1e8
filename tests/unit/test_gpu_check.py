"""The GPU check's refusal without a GPU and the overhead suite's ``--dtype`` (its dry run end to end:
``tests/integration/test_gpu_check_dry_run.py``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from advtune.bench.overhead import measure_overhead
from advtune.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from advtune.testing import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model(num_labels=2, seed=0).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.mark.skipif(
    torch.cuda.is_available() or shutil.which("nvidia-smi") is not None, reason="checks the refusal without a GPU"
)
def test_without_cuda_the_full_check_is_refused_in_one_line(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["gpu_check.py: no CUDA device is visible; --cpu-dry-run runs the check shrunk on CPU"]
    assert not any(tmp_path.iterdir())


def test_overhead_dtype_runs_the_steps_under_autocast(tiny_dir, monkeypatch):
    from advtune.methods import get_method_class

    seen: list[tuple[bool, torch.dtype]] = []
    cls = get_method_class("standard")
    step = cls.step

    def spy(self, model, batch, backward):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return step(self, model, batch, backward)

    monkeypatch.setattr(cls, "step", spy)
    kwargs = {"model": str(tiny_dir), "batch_size": 2, "seq_len": 8, "warmup": 0, "steps": 1, "isolate": False}
    measure_overhead([], dtype="bf16", device="cpu", **kwargs)
    measure_overhead([], device="cpu", **kwargs)
    assert seen == [(True, torch.bfloat16), (False, seen[1][1])]
    with pytest.raises(UsageError, match=r"^--dtype fp16 needs a CUDA device \(on CPU use bf16 or fp32\)$"):
        measure_overhead([], dtype="fp16", device="cpu", **kwargs)
    with pytest.raises(UsageError, match="--dtype must be one of fp32, bf16, fp16, got 'int8'"):
        measure_overhead([], dtype="int8", device="cpu", **kwargs)
