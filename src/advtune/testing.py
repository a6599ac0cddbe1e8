"""advtune's public testing API: tiny random models and tokenizers (no download, milliseconds).

This module is meant for tests (advtune's own and those of code built on it): the library never
imports it, so nothing here runs in a training. It is public and kept stable on purpose, rather than
hidden under ``tests/``, so a user's new method can be checked on every family the way advtune's
contract tests check the built-in ones.

* :func:`tiny_tokenizer` and :func:`tiny_model`: a WordPiece tokenizer over :data:`TINY_VOCAB` and a
  BERT classifier (hidden 32, 2 layers) that fits it.
* :data:`FAMILIES`: each :class:`Family` knows how to build a config of its model type (hidden 32,
  2 layers, the vocabulary of :func:`tiny_tokenizer`) and which inputs its tokenizer would hand
  over, so tests feed each family exactly what its real tokenizer produces: DistilBERT and the
  RoBERTa-style models get no ``token_type_ids`` (RoBERTa's single token type would make index 1 out
  of range), decoders are padded on the side their tokenizer uses. ALBERT and ELECTRA get factorised
  embeddings (``embedding_size`` != ``hidden_size``), so a perturbation must live in the embedding
  space, not the hidden space.

Usage::

    from advtune.testing import FAMILIES, tiny_family_model, tiny_family_batch
    model = tiny_family_model("albert", num_labels=2)
    batch = tiny_family_batch("albert", texts, labels)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

TINY_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + "the a an is was not very good bad great awful movie film plot acting it this that and but "
    "i you we they love hate like boring fun funny sad happy best worst ok fine story actor actors "
    "terrible excellent wonderful dull poor nice cat dog sat on mat what who where when how why "
    "card money bank transfer account balance lost stolen pin top up cash yes no maybe".split()
)


def tiny_tokenizer(vocab: list[str] | tuple[str, ...] = TINY_VOCAB, model_max_length: int = 64):
    """A small WordPiece tokenizer built in memory with ``tokenizers`` (BERT conventions)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab_map = {tok: i for i, tok in enumerate(dict.fromkeys(vocab))}
    tok = Tokenizer(models.WordPiece(vocab=vocab_map, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab_map["[CLS]"]), ("[SEP]", vocab_map["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def tiny_model(
    num_labels: int = 2,
    regression: bool = False,
    vocab_size: int | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    dropout: float = 0.1,
    seed: int = 0,
):
    """A randomly initialised BERT classifier (hidden 32, 2 layers) matching :func:`tiny_tokenizer`."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size or len(dict.fromkeys(TINY_VOCAB)),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=1 if regression else num_labels,
        problem_type="regression" if regression else "single_label_classification",
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


HIDDEN = 32
LAYERS = 2
HEADS = 4


def _common(vocab_size: int, dropout: float) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": HIDDEN * 2,
        "max_position_embeddings": 160,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        "pad_token_id": 0,
    }


def _bert(v: int, d: float):
    from transformers import BertConfig

    return BertConfig(**_common(v, d))


def _roberta(v: int, d: float):
    from transformers import RobertaConfig

    return RobertaConfig(**_common(v, d), type_vocab_size=1, bos_token_id=2, eos_token_id=3)


def _xlmr(v: int, d: float):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(**_common(v, d), type_vocab_size=1, bos_token_id=2, eos_token_id=3)


def _albert(v: int, d: float):
    from transformers import AlbertConfig

    return AlbertConfig(**_common(v, d), embedding_size=16, classifier_dropout_prob=d)


def _electra(v: int, d: float):
    from transformers import ElectraConfig

    return ElectraConfig(**_common(v, d), embedding_size=16)


def _deberta_v2(v: int, d: float):
    from transformers import DebertaV2Config

    # DeBERTa-v3 layout: no token-type embeddings, relative attention with position buckets.
    return DebertaV2Config(
        **_common(v, d),
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=16,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        pooler_hidden_size=HIDDEN,
        pooler_dropout=d,
    )


def _distilbert(v: int, d: float):
    from transformers import DistilBertConfig

    return DistilBertConfig(
        vocab_size=v,
        dim=HIDDEN,
        n_layers=LAYERS,
        n_heads=HEADS,
        hidden_dim=HIDDEN * 2,
        max_position_embeddings=160,
        dropout=d,
        attention_dropout=d,
        seq_classif_dropout=d,
        pad_token_id=0,
    )


def _decoder(config_name: str):
    """Tiny Llama-style decoder config (Llama and Qwen2 take the same arguments)."""

    def build(v: int, d: float):
        import transformers

        return getattr(transformers, config_name)(
            vocab_size=v,
            hidden_size=HIDDEN,
            intermediate_size=HIDDEN * 2,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=2,
            max_position_embeddings=160,
            attention_dropout=d,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            tie_word_embeddings=False,
        )

    return build


_llama = _decoder("LlamaConfig")
_qwen2 = _decoder("Qwen2Config")


@dataclass(frozen=True)
class Family:
    """One model family: how to build its tiny config and what its tokenizer would return."""

    name: str
    make_config: Callable[[int, float], Any]
    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    padding_side: str = "right"
    decoder: bool = False
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_NO_TT = ("input_ids", "attention_mask")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("bert", _bert),
        Family("roberta", _roberta, _NO_TT, notes="single token type; positions offset by padding_idx"),
        Family("albert", _albert, notes="factorised embeddings: embedding_size 16 != hidden 32"),
        Family("electra", _electra, notes="factorised embeddings: embedding_size 16 != hidden 32"),
        Family("deberta-v2", _deberta_v2, notes="v3 layout: relative attention, no token-type embeddings"),
        Family("xlm-roberta", _xlmr, _NO_TT),
        Family("distilbert", _distilbert, _NO_TT, notes="no token_type_ids input at all"),
        Family("llama-right", _llama, _NO_TT, "right", decoder=True, notes="sequence head on the last real token"),
        Family("llama-left", _llama, _NO_TT, "left", decoder=True, notes="left padding, as most decoder tokenizers"),
        Family("qwen2-left", _qwen2, _NO_TT, "left", decoder=True),
    )
}
"""Every family the contract matrix covers, by name."""


def tiny_family_config(family: str | Family, num_labels: int = 2, dropout: float = 0.1, vocab_size: int | None = None):
    fam = FAMILIES[family] if isinstance(family, str) else family
    config = fam.make_config(vocab_size or len(dict.fromkeys(TINY_VOCAB)), dropout)
    config.num_labels = num_labels
    config.problem_type = "single_label_classification"
    return config


def tiny_family_model(
    family: str | Family,
    num_labels: int = 2,
    dropout: float = 0.1,
    seed: int = 0,
    head: str = "sequence",
    vocab_size: int | None = None,
):
    """A random model of ``family`` with a sequence-classification (or ``head="multiple_choice"``) head."""
    from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification

    config = tiny_family_config(family, num_labels=num_labels, dropout=dropout, vocab_size=vocab_size)
    torch.manual_seed(seed)
    auto = AutoModelForMultipleChoice if head == "multiple_choice" else AutoModelForSequenceClassification
    return auto.from_config(config)


def tiny_family_tokenizer(family: str | Family, vocab: Sequence[str] | None = None):
    """The tiny WordPiece tokenizer, padding on the family's side."""
    fam = FAMILIES[family] if isinstance(family, str) else family
    tok = tiny_tokenizer(vocab) if vocab is not None else tiny_tokenizer()
    tok.padding_side = fam.padding_side
    tok.model_input_names = list(fam.input_names)
    return tok


def tiny_family_batch(
    family: str | Family,
    texts: Sequence[str],
    labels: Sequence[int],
    pairs: Sequence[str] | None = None,
    tokenizer: Any = None,
) -> dict[str, torch.Tensor]:
    """A padded batch with exactly the inputs the family's own tokenizer would return."""
    fam = FAMILIES[family] if isinstance(family, str) else family
    tok = tokenizer or tiny_family_tokenizer(fam)
    args = (list(texts), list(pairs)) if pairs is not None else (list(texts),)
    enc = tok(*args, padding=True, return_tensors="pt")
    batch = {k: v for k, v in enc.items() if k in fam.input_names}
    batch["labels"] = torch.as_tensor(list(labels), dtype=torch.long)
    return batch


__all__ = [
    "FAMILIES",
    "Family",
    "tiny_family_batch",
    "tiny_family_config",
    "tiny_family_model",
    "tiny_family_tokenizer",
]
