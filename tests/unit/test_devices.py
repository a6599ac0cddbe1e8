"""``--device``: auto picks a CUDA GPU when there is one, a missing GPU is refused, runs load where chosen."""

from __future__ import annotations

import pytest
import torch

from advtune import devices
from advtune.errors import UsageError


def test_auto_and_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve(None) == devices.resolve("auto") == devices.resolve(" CPU ") == torch.device("cpu")
    with pytest.raises(
        UsageError, match=r"^--device cuda: no CUDA GPU is available on this machine \(use --device cpu\)$"
    ):
        devices.resolve("cuda")
    with pytest.raises(UsageError, match=r"^--device cuda:0: no CUDA GPU"):
        devices.resolve("cuda:0")
    with pytest.raises(UsageError, match=r"^invalid --device 'xpu0' \(choose from: auto, cpu, cuda, cuda:N\)$"):
        devices.resolve("xpu0")


def test_auto_picks_the_gpu_and_a_missing_index_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.resolve("auto") == torch.device("cuda")
    assert devices.resolve("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UsageError, match=r"^--device cuda:2: this machine has 2 CUDA GPU\(s\), numbered from 0$"):
        devices.resolve("cuda:2")


def test_the_choice_holds_for_the_process_and_batches_follow_the_model(monkeypatch):
    monkeypatch.setattr(devices, "_chosen", "auto")
    assert devices.choose("cpu") == torch.device("cpu") and devices.current() == torch.device("cpu")
    with pytest.raises(UsageError):
        devices.choose("nosuch")
    assert devices._chosen == "cpu"  # a refused value leaves the earlier choice in force
    model = torch.nn.Linear(2, 2).to(torch.float64)
    moved = devices.batch_to({"x": torch.ones(1), "name": "keep"}, model)
    assert moved["name"] == "keep" and moved["x"].device == next(model.parameters()).device
