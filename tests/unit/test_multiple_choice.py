"""Multiple choice: layouts, (B, k, L) batches, δ over all k pairs, and training that learns a toy file."""

from __future__ import annotations

import json
import random

import pytest
import torch

from advtune.embeddings import forward_with_delta
from advtune.errors import UsageError
from advtune.methods import get_method
from advtune.perturbation import init_delta, masked_norm
from advtune.tasks import get_task
from advtune.tasks import multiple_choice as mc
from advtune.testing import tiny_family_model, tiny_family_tokenizer

GOOD = "good great excellent wonderful fun best nice".split()
BAD = "bad awful terrible boring dull worst poor".split()
FILL = "the a is was very and it this that".split()


def toy_rows(n: int, k: int = 3, seed: int = 0) -> list[dict]:
    """The right choice carries a positive word, the others negative ones: each pair's score decides."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        answer = rng.randrange(k)
        question = " ".join(["what", *rng.sample(FILL, 2), "is", "good"])
        choices = [
            " ".join([*rng.sample(FILL, rng.randint(0, 2)), rng.choice(GOOD if j == answer else BAD)])
            for j in range(k)
        ]
        rows.append({"question": question, "choices": choices, "answer": answer})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------ layouts
def test_every_layout_normalises_to_the_same_record():
    want = {"question": "Which is a mammal?", "context": "", "choices": ["cat", "fish", "ant"], "label": 0}
    hub = {
        "question": "Which is a mammal?",
        "choices": {"text": ["cat", "fish", "ant"], "label": ["A", "B", "C"]},
        "answerKey": "A",
    }
    original = {
        "question": {
            "stem": "Which is a mammal?",
            "choices": [{"text": "cat", "label": "1"}, {"text": "fish", "label": "2"}, {"text": "ant", "label": "3"}],
        },
        "answerKey": "1",
    }
    for rec in (
        hub,
        original,
        {"question": "Which is a mammal?", "choices": ["cat", "fish", "ant"], "answer": 0},
        {"question": "Which is a mammal?", "choices": ["cat", "fish", "ant"], "answer": "cat"},
    ):
        assert mc.normalize_record(rec) == want
    race = mc.normalize_record(
        {"article": "A cat sat.", "question": "Who sat?", "options": ["dog", "cat"], "answer": "B"}
    )
    assert race == {"question": "Who sat?", "context": "A cat sat.", "choices": ["dog", "cat"], "label": 1}


@pytest.mark.parametrize(
    "rec",
    [
        {"question": "q", "choices": ["a", "b"], "answer": 2},
        {"question": "q", "choices": ["a", "b"], "answer": "z"},
        {"question": "q", "choices": ["a"], "answer": 0},
        {"question": "q", "answer": 0},
    ],
)
def test_bad_records_are_usage_errors(rec):
    with pytest.raises(UsageError):
        mc.normalize_record(rec)


def test_registered_tasks_and_local_arc_file(tmp_path):
    for name in ("arc_easy", "arc_challenge", "commonsense_qa", "race"):
        assert mc.is_multiple_choice(get_task(name))
    (tmp_path / "arc_easy").mkdir()
    rows = [
        {
            "id": "x",
            "question": {"stem": "q one", "choices": [{"text": t, "label": lab} for t, lab in zip("abc", "ABC")]},
            "answerKey": "C",
        }
    ]
    write_jsonl(tmp_path / "arc_easy" / "ARC-Easy-Dev.jsonl", rows)
    ds = get_task("arc_easy").load("validation", data_dir=tmp_path)
    assert ds[0]["choices"] == ["a", "b", "c", "", ""] and ds[0]["num_real_choices"] == 3 and ds[0]["label"] == 2
    with pytest.raises(UsageError, match="offline|not found"):
        get_task("commonsense_qa").load("validation", data_dir=tmp_path)


# ------------------------------------------------------------------ batches and the perturbation
@pytest.fixture
def mc_batch():
    tok = tiny_family_tokenizer("bert")  # BERT conventions: token_type_ids included
    ds = mc._rows_to_dataset(toy_rows(4, k=3) + [{"question": "the cat", "choices": ["cat", "dog"], "answer": 0}])
    enc = mc.encode(ds, tok, 32)
    feats = [{k: v for k, v in enc[i].items() if k not in ("idx", "num_real_choices")} for i in range(len(enc))]
    return mc.collator(tok)(feats)


def test_batch_is_b_k_l(mc_batch):
    b, k, length = mc_batch["input_ids"].shape
    assert (b, k) == (5, 3)
    for name in ("attention_mask", "token_type_ids"):
        assert mc_batch[name].shape == (b, k, length)
    assert mc_batch["labels"].shape == (b,)
    assert (mc_batch["attention_mask"].sum(-1) < length).any(), "some pair must be padded for the tests below"


def test_delta_covers_all_pairs_zero_at_padding(mc_batch):
    """δ lives in (B, k, L, H); per-example norms run over the concatenation of the k pairs (FreeLB A.1)."""
    model = tiny_family_model("bert", head="multiple_choice", dropout=0.0).eval()
    from advtune.methods.embedding_space import delta_frame

    like, mask = delta_frame(model, mc_batch)
    b, k, length = mc_batch["input_ids"].shape
    assert like.shape == (b, k, length, model.config.hidden_size) and mask.shape == (b, k, length)
    delta = init_delta(like, mask, "uniform", 1.0, "l2")
    assert delta.shape == (b, k, length, model.config.hidden_size)
    assert delta[mask == 0].abs().max() == 0
    per_pair = delta.flatten(2).norm(dim=-1)  # (B, k)
    torch.testing.assert_close(masked_norm(delta, mask), per_pair.norm(dim=1))  # one norm over all k pairs
    # the hook adds pair (b, j)'s δ to row b * k + j: same logits as feeding the perturbed embeddings directly
    inputs = {n: v for n, v in mc_batch.items() if n != "labels"}
    hooked = forward_with_delta(model, inputs, delta).logits
    emb = model.get_input_embeddings()(inputs["input_ids"]) + delta
    direct = model(
        inputs_embeds=emb, attention_mask=inputs["attention_mask"], token_type_ids=inputs["token_type_ids"]
    ).logits
    torch.testing.assert_close(hooked, direct)
    assert hooked.shape == (b, k)
    shuffled = forward_with_delta(model, inputs, delta.flip(1)).logits
    assert not torch.allclose(hooked, shuffled), "δ of one pair must not land on another pair"


@pytest.mark.parametrize("name", ["standard", "freelb", "pgd", "fgm", "smart"])
def test_methods_step_on_multiple_choice(mc_batch, name):
    from advtune.methods import METHODS

    if name not in METHODS:
        pytest.skip(f"{name} is not registered")
    model = tiny_family_model("bert", head="multiple_choice", dropout=0.1)
    method = get_method(name)
    model = method.setup(model)
    model.train()
    out = method.step(model, dict(mc_batch), lambda loss: loss.backward())
    assert torch.isfinite(out.loss)
    assert model.classifier.weight.grad is not None and torch.isfinite(model.classifier.weight.grad).all()
    eps = getattr(method.config, "adv_epsilon", 0)
    if eps and "adv/delta_norm" in out.metrics:
        assert out.metrics["adv/delta_norm"] <= eps * 1.001


# ------------------------------------------------------------------ training through the pipeline
@pytest.fixture
def tiny_mc_model_dir(tmp_path):
    folder = tmp_path / "tiny-bert"
    tiny_family_model("bert", dropout=0.0).save_pretrained(folder)
    tiny_family_tokenizer("bert").save_pretrained(folder)
    return str(folder)


TINY_FREELB = {"adv_epsilon": 2e-3, "adv_step_size": 1e-3, "adv_init_scale": 2e-3}


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and CI machines are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["standard", "freelb"])
def test_toy_file_is_learned_above_chance(method, one_thread):
    """The method's own step (δ on all k pairs for FreeLB) learns the keyword-matching toy task."""
    from advtune.methods import METHODS

    if method not in METHODS:
        pytest.skip(f"{method} is not registered")
    torch.manual_seed(0)
    tok = tiny_family_tokenizer("bert")
    train = mc.encode(mc._rows_to_dataset(toy_rows(160, seed=0)), tok, 32)
    dev = mc._rows_to_dataset(toy_rows(60, seed=1))
    feats = [{k: v for k, v in train[i].items() if k not in ("idx", "num_real_choices")} for i in range(len(train))]
    model = tiny_family_model("bert", head="multiple_choice", dropout=0.0)
    # ε scaled to the tiny model: its word embeddings have norm ~0.1 per token (std 0.02, hidden 32)
    algo = get_method(method, **(TINY_FREELB if method == "freelb" else {}))
    model = algo.setup(model)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    collate = mc.collator(tok)
    for epoch in range(2):
        random.Random(epoch).shuffle(feats)
        model.train()
        for i in range(0, len(feats), 8):
            algo.step(model, collate(feats[i : i + 8]), lambda loss: loss.backward())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            optim.zero_grad()
    acc = float((mc.predict(model, tok, dev, 32).argmax(-1) == torch.tensor(dev["label"]).numpy()).mean())
    # chance is 1/3: 42 of 60 right is 6 standard deviations above it
    assert acc >= 0.7, f"{method}: accuracy {acc:.3f} is not above chance (1/3)"


def test_pipeline_trains_saves_reloads_and_evaluates(tmp_path, tiny_mc_model_dir):
    from advtune.pipeline import evaluate, load_run, train
    from advtune.runs import read_json, read_jsonl

    train_file = write_jsonl(tmp_path / "train.jsonl", toy_rows(32, seed=0))
    eval_file = write_jsonl(
        tmp_path / "dev.jsonl",
        toy_rows(12, seed=1) + [{"question": "the cat", "choices": ["cat", "dog"], "answer": "cat"}],
    )  # 2 real choices + 1 filler
    run = train(
        task="multiple_choice",
        method="freelb" if "freelb" in __import__("advtune.methods").methods.METHODS else "standard",
        output_dir=tmp_path / "run",
        model=tiny_mc_model_dir,
        train_file=train_file,
        eval_file=eval_file,
        max_length=32,
        num_train_epochs=1,
        per_device_train_batch_size=8,
        save_strategy="no",
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    metrics = read_json(run / "metrics.json")["splits"]["validation"]
    rows = read_jsonl(run / "eval" / "multiple_choice.validation" / "predictions.jsonl")
    assert len(rows) == 13 and len(rows[0]["probs"]) == 3
    assert rows[-1]["probs"][2] == 0.0 and rows[-1]["pred"] != 2, "a filler choice can never be predicted"
    assert metrics["accuracy"] == pytest.approx(sum(r["gold"] == r["pred"] for r in rows) / 13)
    config = read_json(run / "run_config.json")
    assert config["task"]["kind"] == "multiple_choice" and config["task"]["num_choices"] == 3
    loaded = load_run(run)
    assert type(loaded.model).__name__ == "BertForMultipleChoice"
    again = evaluate(run, data_file=eval_file, split="validation")
    assert again["multiple_choice.validation"]["accuracy"] == pytest.approx(metrics["accuracy"])
