"""Family contract matrix: every registered method x every model family, two steps each.

Families (``advtune.testing.FAMILIES``): BERT, RoBERTa, ALBERT (factorised embeddings), ELECTRA
(factorised), DeBERTa-v2/v3, XLM-R, DistilBERT (no token_type_ids), and decoders with a
sequence-classification head (Llama right- and left-padded, Qwen2 left-padded). The methods are read
from ``METHODS`` at collection time, so a newly registered method is covered with no edit here.

Per cell: two training steps through ``method.step`` with a plain SGD optimizer in between, then
finite loss, a finite gradient on every trainable parameter, ``step()`` not touching the parameters,
no hook left behind, and the perturbation inside its ε-ball (read from ``adv/delta_norm`` when the
method logs it; the spy below also measures the δ the embedding hook really added when the method
goes through ``get_input_embeddings()`` forward hooks).

Every cell is kept (about 40 ms each on one thread: the whole matrix costs ~6 s of the unit tier); the
one-thread setting that made it cheap under load now applies to every test (``tests/conftest.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

from advtune.errors import UsageError
from advtune.methods import METHODS, get_method
from advtune.pooling import pooling_for, sentence_representation
from advtune.testing import FAMILIES, tiny_family_batch, tiny_family_model

TEXTS = [
    "the movie was very good",
    "bad",
    "i love this film and the acting is great but the plot is dull",
    "the story was boring",
]
PAIRS = ["it is good", "the plot", "we like it", "no"]
LABELS = [1, 0, 1, 0]

CELLS = [(m, f) for m in sorted(METHODS) for f in FAMILIES]
KNOWN_FAILURES = {}
"""Cells that fail for a diagnosed reason (strict xfail: a fix makes the test fail until the entry is removed)."""
REFUSED = {("yopo", "albert"): "distinct Transformer blocks"}
"""Combinations a method refuses with a clear error (ALBERT shares one block: YOPO's f0 is undefined)."""
SELECTIVE = {"rose"}
"""Methods that drop the update of some parameter tensors on purpose (ROSE's selective fine-tuning)."""


def _hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


class _DeltaSpy:
    """Records what the input-embedding module's forward hooks added to its clean output.

    A hook registered on the embedding module *after* the method's own (the method registers inside
    ``step``) sees the perturbed output; the clean lookup is recomputed from the input ids. Methods that
    do not perturb through forward hooks leave ``deltas`` empty, and then only ``adv/delta_norm`` is checked.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.emb = model.get_input_embeddings()
        self.deltas: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._orig = self.emb.register_forward_hook
        self._handles: list = []

        def register(hook, *args, **kwargs):
            handle = self._orig(hook, *args, **kwargs)
            self._handles.append(self._orig(self._record))  # runs right after the method's hook
            return handle

        self.emb.register_forward_hook = register  # instance attribute shadows the bound method

    def _record(self, module, args, output):
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor) and not ids.is_floating_point() and isinstance(output, torch.Tensor):
            clean = torch.nn.functional.embedding(ids, module.weight)
            self.deltas.append(((output - clean).detach().float(), ids.detach()))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        del self.emb.register_forward_hook


def _epsilon(method) -> tuple[float, str]:
    cfg = method.config
    return float(getattr(cfg, "adv_epsilon", 0.0) or 0.0), str(getattr(cfg, "adv_norm", "l2"))


def _check_delta(name: str, family: str, method, spy: _DeltaSpy, metrics: dict, pad_mask: torch.Tensor) -> None:
    eps, norm = _epsilon(method)
    if eps <= 0:
        return  # 0 = unbounded (FreeLB's released settings); nothing to check
    tol = eps * 1e-3 + 1e-6
    if "adv/delta_norm" in metrics:
        assert metrics["adv/delta_norm"] <= eps + tol, (
            f"{name}/{family}: adv/delta_norm {metrics['adv/delta_norm']} > ε"
        )
    for delta, _ids in spy.deltas:
        if delta.dim() != 3 or delta.shape[:2] != pad_mask.shape:
            continue  # e.g. a soft prompt changed the length; only per-token δ of the batch is checked
        if norm == "linf":
            per_example = delta.abs().amax(dim=(1, 2))
        else:
            per_example = delta.flatten(1).norm(dim=1)
        assert (per_example <= eps + tol).all(), f"{name}/{family}: |δ| {per_example.max():.4g} > ε={eps}"
        at_pad = delta[pad_mask == 0]
        assert at_pad.numel() == 0 or at_pad.abs().max() < 1e-6, f"{name}/{family}: δ non-zero at padding"


@pytest.mark.parametrize(("name", "family"), CELLS, ids=[f"{m}-{f}" for m, f in CELLS])
def test_method_on_family(name: str, family: str, request: pytest.FixtureRequest) -> None:
    if (name, family) in KNOWN_FAILURES:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_FAILURES[name, family], strict=True))
    torch.manual_seed(0)
    pairs = PAIRS if family in ("bert", "albert") else None  # token-type pairs where token types exist
    model = tiny_family_model(family, num_labels=2, dropout=0.1, seed=0)
    batch = tiny_family_batch(family, TEXTS, LABELS, pairs=pairs)
    method = get_method(name)
    if (name, family) in REFUSED:
        with pytest.raises(UsageError, match=REFUSED[name, family]):
            method.setup(model)
        return
    model = method.setup(model)
    model.train()
    hooks_before = _hooks(model)
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(2):
        optim.zero_grad(set_to_none=True)
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        spy = _DeltaSpy(model)
        try:
            out = method.step(model, dict(batch), lambda loss: loss.backward())
        finally:
            spy.close()
        assert torch.isfinite(out.loss), f"{name}/{family} step {step}: loss {out.loss}"
        assert not out.loss.requires_grad, f"{name}/{family}: step() must return a detached loss"
        assert all(math.isfinite(v) for v in out.metrics.values()), f"{name}/{family}: metrics {out.metrics}"
        for n, p in model.named_parameters():
            assert torch.equal(p.detach(), before[n]), f"{name}/{family}: step() changed parameter {n}"
        _check_delta(name, family, method, spy, out.metrics, batch["attention_mask"])
        assert _hooks(model) == hooks_before, f"{name}/{family}: hooks left behind"
        optim.step()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, f"{name}/{family}: nothing trains"
    missing = [n for n, p in trainable if p.grad is None]
    if name in SELECTIVE:  # keeps only a band of parameter tensors by design: the head and some others
        assert len(missing) < len(trainable), f"{name}/{family}: no parameter kept a gradient"
    else:
        assert not missing, f"{name}/{family}: no gradient on trainable {missing[:5]}"
    bad = [n for n, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}/{family}: non-finite gradient on {bad[:5]}"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable), (
        f"{name}/{family}: all gradients are zero"
    )


# ---------------------------------------------------------------- families themselves


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_inputs_match_tokenizer_conventions(family: str) -> None:
    fam = FAMILIES[family]
    batch = tiny_family_batch(family, TEXTS, LABELS)
    assert set(batch) == {*fam.input_names, "labels"}
    mask = batch["attention_mask"]
    short = int(mask.sum(1).argmin())
    if fam.padding_side == "left":
        assert mask[short, 0] == 0 and mask[short, -1] == 1
    else:
        assert mask[short, 0] == 1 and mask[short, -1] == 0
    model = tiny_family_model(family)
    emb = model.get_input_embeddings()
    if family in ("albert", "electra"):
        assert emb.embedding_dim != model.config.hidden_size, "factorised embeddings expected"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sentence_representation_is_the_token_the_head_reads(family: str) -> None:
    """First token for encoders; for decoders the last real token, i.e. what the score head pools."""
    model = tiny_family_model(family, dropout=0.0).eval()
    batch = tiny_family_batch(family, TEXTS, LABELS)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    rep = sentence_representation(model, out.hidden_states[-1], batch["attention_mask"])
    assert rep.shape == (len(TEXTS), out.hidden_states[-1].shape[-1])
    if FAMILIES[family].decoder:
        assert pooling_for(model) == "last"
        # the decoder's own head: score(norm(h)) at the last non-padding token; hidden_states[-1] is post-norm
        torch.testing.assert_close(model.score(rep), out.logits, rtol=1e-5, atol=1e-5)
        wrong = out.hidden_states[-1][:, -1 if FAMILIES[family].padding_side == "right" else 0]
        assert not torch.allclose(model.score(wrong), out.logits), "test is vacuous: padding side has no effect"
    else:
        assert pooling_for(model) == "first"
        torch.testing.assert_close(rep, out.hidden_states[-1][:, 0])


def test_sentence_representation_flattens_multiple_choice_masks() -> None:
    hidden = torch.randn(6, 5, 4)  # (B*k, L, H) with B=2, k=3
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 6).view(2, 3, 5)
    rep = sentence_representation(torch.nn.Linear(1, 1), hidden, mask, pooling="last")
    torch.testing.assert_close(rep, hidden[:, 2])


MULTI_PASS = [m for m in ("freelb", "pgd", "fgm", "smart", "tat", "cat", "yopo") if m in METHODS]


@pytest.mark.parametrize("name", MULTI_PASS)
def test_gradient_checkpointing_gives_the_same_gradients(name: str) -> None:
    """Multi-pass methods under ``gradient_checkpointing_enable()`` (recomputed blocks, same δ hook)."""
    grads = []
    for checkpointing in (False, True):
        model = tiny_family_model("bert", dropout=0.0, seed=0)
        method = get_method(name)
        model = method.setup(model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        torch.manual_seed(0)
        method.step(model, dict(tiny_family_batch("bert", TEXTS, LABELS)), lambda loss: loss.backward())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=f"{name}: {n}")
