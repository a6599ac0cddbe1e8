"""Tokenisation of the standard task columns (``text_a``, ``text_b``, ``label``) with ``datasets``."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def encode(dataset: Dataset, tokenizer: Any, max_length: int = 128, desc: str | None = None) -> Dataset:
    """Tokenise (truncating to ``max_length``, no padding: the collator pads dynamically)."""
    pair = "text_b" in dataset.column_names

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        args = (batch["text_a"], batch["text_b"]) if pair else (batch["text_a"],)
        enc = tokenizer(*args, truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        return enc

    keep = [c for c in dataset.column_names if c == "idx"]
    drop = [c for c in dataset.column_names if c not in keep]
    return dataset.map(
        tokenize, batched=True, remove_columns=drop, desc=desc or "Tokenizing", load_from_cache_file=False
    )


def collator(tokenizer: Any):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)
