"""Every method on a PEFT adapter, and radii relative to the embedding scale.

The matrix is read from the registry (no hand-kept method list) and sized to stay fast: every method x
LoRA on BERT, and every adapter kind x one method per config base (the registry's first method of each
shared base: ascent, single-step embedding, smoothness, other radius methods, no radius) x the three
families with different layouts (BERT; Llama and Qwen2 left-padded decoders). Each cell checks: finite
loss, gradients only on adapter and head parameters (and a method's own training head), δ inside its
ball, and save -> load -> identical predictions.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from advtune import adapters
from advtune.errors import UsageError
from advtune.methods import METHODS, get_method
from advtune.methods.base import RadiusConfig
from advtune.methods.embedding_space import AscentConfig, EmbeddingFamilyConfig
from advtune.methods.smoothness import SmoothnessConfig
from advtune.testing import tiny_family_batch, tiny_family_model, tiny_family_tokenizer

TEXTS = ["the movie was very good", "bad", "i love this film and the acting is great", "the story was boring"]
LABELS = [1, 0, 1, 0]
FAMILIES = ("bert", "llama-left", "qwen2-left")
LABEL_NAMES = ["negative", "positive"]
TRAINABLE = re.compile(r"lora_|ia3_|prompt_encoder|modules_to_save|advtune_cat_head")
"""Parameters allowed to train: the adapter's, the head's copy (peft's ``modules_to_save``), CAT's projection head."""


def _base(config_cls) -> str:
    for base in (AscentConfig, EmbeddingFamilyConfig, SmoothnessConfig, RadiusConfig):
        if issubclass(config_cls, base):
            return base.__name__
    return "none"


def _one_per_base() -> list[str]:
    firsts: dict[str, str] = {}
    for name in sorted(METHODS):
        firsts.setdefault(_base(METHODS[name].config_class), name)
    return sorted(firsts.values())


CELLS = [(m, "lora", "bert") for m in sorted(METHODS)]
CELLS += [
    (m, k, f) for k in adapters.ADAPTER_KINDS for f in FAMILIES for m in _one_per_base() if (m, k, f) not in CELLS
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory):
    """Each family's tiny model and tokenizer saved once, as a run's ``--model`` folder."""
    root = tmp_path_factory.mktemp("bases")
    for family in FAMILIES:
        tiny_family_model(family, dropout=0.0).save_pretrained(root / family)
        tiny_family_tokenizer(family).save_pretrained(root / family)
    return root


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.parametrize("method_name,kind,family", CELLS, ids=["-".join(c) for c in CELLS])
def test_method_trains_and_round_trips_an_adapter(method_name, kind, family, base_dirs, tmp_path):
    from advtune.modeling import load_model

    torch.manual_seed(0)
    base = load_model(str(base_dirs / family), num_labels=2, label_names=LABEL_NAMES)
    model = adapters.wrap(base, adapters.AdapterArguments(peft=kind, peft_num_virtual_tokens=3))
    method = get_method(method_name)
    model = method.setup(model)
    batch = tiny_family_batch(family, TEXTS, LABELS)
    model.train()
    out = method.step(model, dict(batch), lambda loss: loss.backward())
    assert math.isfinite(float(out.loss))

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(TRAINABLE.search(n) for n in trainable), [n for n in trainable if not TRAINABLE.search(n)]
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad <= set(trainable)
    assert any("modules_to_save" in n for n in with_grad), "the head got no gradient"
    if family == "bert":  # MiniLM's pooler is untrained: it belongs to the head
        assert any("pooler.modules_to_save" in n for n in trainable), "the pooler does not train"
    assert any(re.search(r"lora_|ia3_|prompt_encoder", n) for n in with_grad), "the adapter got no gradient"

    eps = getattr(method.config, "adv_epsilon", 0) or 0
    if "adv/delta_norm" in out.metrics and eps > 0:
        assert out.metrics["adv/delta_norm"] <= eps * (1 + 1e-4) + 1e-12

    with torch.no_grad():  # move adapter and head away from their initialisation, as training would
        for p in model.parameters():
            if p.requires_grad and p.grad is not None:
                p.add_(p.grad, alpha=-0.5)
    inference = method.inference_model(model)
    tokenizer = tiny_family_tokenizer(family)
    method.save_inference_model(inference, tokenizer, tmp_path)
    assert (tmp_path / adapters.ADAPTER_DIR / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "model.safetensors").exists(), "an adapter run must not store the base model"
    run_config = {"model": {"model": str(base_dirs / family)}, "label_names": LABEL_NAMES}
    loaded, _ = type(method).load_inference_model(tmp_path, run_config)
    torch.testing.assert_close(_logits(loaded, batch), _logits(inference, batch), rtol=1e-5, atol=1e-6)


def test_merged_lora_predicts_what_the_adapter_does(tmp_path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = adapters.wrap(tiny_family_model("llama-left", dropout=0.0), adapters.AdapterArguments(peft="lora"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B = 0 at initialisation would make the merge trivially right
    batch = tiny_family_batch("llama-left", TEXTS, LABELS)
    before = _logits(model, batch)
    target = adapters.write_merged(model, tiny_family_tokenizer("llama-left"), tmp_path)
    merged = AutoModelForSequenceClassification.from_pretrained(target)
    torch.testing.assert_close(_logits(merged, batch), before, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_logits(model, batch), before)  # the trained model itself is left as it was
    assert not any("lora" in n for n, _ in merged.named_parameters())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"peft": "adalora"}, "invalid peft='adalora': choose from lora, ia3, prompt, prefix"),
        ({"peft": "lora", "peft_rank": 0}, "invalid peft_rank=0: must be positive"),
        ({"peft": "lora", "peft_dropout": 1.0}, "invalid peft_dropout=1.0: must be in [0, 1)"),
        ({"peft": "prefix", "peft_num_virtual_tokens": 0}, "invalid peft_num_virtual_tokens=0: must be positive"),
        (
            {"peft": "prompt", "peft_target_modules": "query"},
            "--peft_target_modules applies to --peft lora or ia3 only",
        ),
        (
            {"peft": "prompt", "merge_adapter": True},
            "--merge_adapter needs --peft lora or ia3 (prompt and prefix adapters cannot be merged)",
        ),
    ],
)
def test_adapter_arguments_are_validated(kwargs, message):
    with pytest.raises(UsageError) as err:
        adapters.AdapterArguments(**kwargs)
    assert str(err.value) == message


def test_unknown_target_module_is_a_usage_error():
    args = adapters.AdapterArguments(peft="lora", peft_target_modules="nosuch_proj")
    with pytest.raises(UsageError, match="cannot add a lora adapter to BertForSequenceClassification: "):
        adapters.wrap(tiny_family_model("bert"), args)


def test_target_modules_and_rank_reach_peft():
    args = adapters.AdapterArguments(peft="lora", peft_rank=3, peft_target_modules="q_proj,o_proj")
    model = adapters.wrap(tiny_family_model("qwen2-left"), args)
    wrapped = {n.rsplit(".lora_A", 1)[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert wrapped == {"q_proj", "o_proj"}
    assert {p.shape[0] for n, p in model.named_parameters() if ".lora_A." in n} == {3}


# ---------------------------------------------------------------------------------------------- radii


def _scaled_pair():
    """Two tiny BERTs, identical except that the second's word embeddings are three times larger."""
    small = tiny_family_model("bert", dropout=0.0)
    large = tiny_family_model("bert", dropout=0.0)
    with torch.no_grad():
        large.get_input_embeddings().weight.mul_(3.0)
    return small, large


RADIUS_METHODS = sorted(n for n, cls in METHODS.items() if issubclass(cls.config_class, RadiusConfig))


@pytest.mark.parametrize("name", RADIUS_METHODS)
def test_relative_radii_scale_with_the_embeddings(name):
    small, large = _scaled_pair()
    on_small, on_large = get_method(name, adv_radius_unit="relative"), get_method(name, adv_radius_unit="relative")
    on_small.setup(small)
    on_large.setup(large)
    key = on_small.config.radius_scale_key()
    assert on_large.embedding_scale[key] == pytest.approx(3 * on_small.embedding_scale[key], rel=1e-5)
    fields = [f for f in RadiusConfig.radius_fields if isinstance(getattr(on_small.given_config, f, None), float)]
    assert fields, f"{name} declares no radius"
    for f in fields:
        given = getattr(on_small.given_config, f)
        assert getattr(on_small.config, f) == pytest.approx(given * on_small.embedding_scale[key], rel=1e-6)
        assert getattr(on_large.config, f) == pytest.approx(3 * getattr(on_small.config, f), rel=1e-5)
    on_small.setup(small)  # a second setup converts from the given values again: no compounding
    assert getattr(on_small.config, fields[0]) == pytest.approx(getattr(on_large.config, fields[0]) / 3, rel=1e-5)


@pytest.mark.parametrize("name,overrides", [("fgm", {"adv_norm": "l2"}), ("peaft", {})])
@pytest.mark.parametrize("unit", ["absolute", "relative"])
def test_same_relative_preset_gives_delta_of_the_same_relative_size(name, overrides, unit, batch):
    sizes = []
    for model in _scaled_pair():
        method = get_method(name, adv_radius_unit=unit, **overrides)
        model = method.setup(model)
        out = method.step(model, dict(batch), lambda loss: loss.backward())
        scale = method.embedding_scale[method.config.radius_scale_key()]
        sizes.append((out.metrics["adv/delta_norm"], scale))
    (small, s_small), (large, s_large) = sizes
    if unit == "relative":  # δ / scale is the same on both models, δ itself three times larger
        assert large / s_large == pytest.approx(small / s_small, rel=1e-3)
        assert large == pytest.approx(3 * small, rel=1e-3)
    else:  # the papers' absolute radius: the same δ, three times weaker relative to the larger embeddings
        assert large == pytest.approx(small, rel=1e-3)


def test_absolute_is_the_default_and_bad_units_are_refused():
    method = get_method("freelb")
    method.setup(tiny_family_model("bert"))
    assert method.config is method.given_config and method.embedding_scale["factor"] == 1.0
    with pytest.raises(UsageError) as err:
        get_method("pgd", adv_radius_unit="percent")
    assert str(err.value) == "invalid adv_radius_unit='percent': choose from absolute, relative"


# ---------------------------------------------------------------------------------------------- pipeline


@pytest.mark.skipif(not __import__("os").environ.get("ADVTUNE_DATA_DIR"), reason="needs SST-2 in ADVTUNE_DATA_DIR")
def test_adapter_run_end_to_end(tmp_path, monkeypatch):
    """train --peft lora --merge_adapter with relative radii: the run folder holds the adapter, not the base
    model, records the base model and the embedding scale, and reloads (eval) to the predictions it wrote."""
    import json

    from transformers import AutoModelForSequenceClassification

    from advtune.pipeline import evaluate, load_run, train

    tiny_family_model("bert", dropout=0.0).save_pretrained(tmp_path / "tiny")
    tiny_family_tokenizer("bert").save_pretrained(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    run = train(
        task="sst2",
        method="fgm",
        output_dir=tmp_path / "run",
        model="tiny",  # relative: the run must still find it from another working directory
        method_overrides={"adv_radius_unit": "relative", "adv_epsilon": 0.5},
        peft="lora",
        merge_adapter=True,
        max_train_samples=32,
        max_eval_samples=16,
        max_length=24,
        num_train_epochs=1,
        learning_rate=1e-2,
        per_device_train_batch_size=16,
        save_strategy="no",
        use_cpu=True,
        seed=1,
        disable_tqdm=True,
    )
    config = json.loads((run / "run_config.json").read_text())
    assert config["adapter"]["peft"] == "lora" and config["adapter"]["base_model"] == str(tmp_path / "tiny")
    scale = config["method"]["embedding_scale"]
    assert scale["unit"] == "relative" and scale["factor"] == scale["l2"] > 0
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "tiny")
    adapter = adapters.wrap(base, adapters.AdapterArguments(peft="lora"))
    assert config["parameters"] == {  # what trained: the LoRA matrices and the head, of the whole model
        "trainable": adapters.trainable_parameters(adapter),
        "total": sum(t.numel() for t in adapter.parameters()),
    }
    assert 0 < config["parameters"]["trainable"] < config["parameters"]["total"] / 4
    assert (run / "peft_adapter" / "adapter_model.safetensors").is_file() and not (run / "model.safetensors").exists()
    written = [json.loads(line)["probs"] for line in (run / "eval" / "sst2.validation" / "predictions.jsonl").open()]

    monkeypatch.chdir(tmp_path.parent)
    loaded = load_run(run)
    assert adapters.adapter_kind(loaded.model) == "lora"
    evaluate(run, max_samples=16)
    again = [json.loads(line)["probs"] for line in (run / "eval" / "sst2.validation" / "predictions.jsonl").open()]
    assert len(again) == len(written) == 16
    assert sum(again, []) == pytest.approx(sum(written, []), abs=2e-6)
    merged = AutoModelForSequenceClassification.from_pretrained(run / "merged")
    batch = tiny_family_batch("bert", TEXTS, LABELS, tokenizer=loaded.tokenizer)
    torch.testing.assert_close(_logits(merged, batch), _logits(loaded.model, batch), rtol=1e-4, atol=1e-5)

    from advtune.cli import main  # the commands that reload a run's model work on an adapter run

    assert main(["robustness", "--run", str(run), "--n", "8", "--steps", "2"]) == 0
    assert main(["surface", "--run", str(run), "--grid", "2", "--batches", "1", "--batch-size", "8"]) == 0
    assert next((run / "robustness").glob("sst2.*.json")).is_file()


def test_cli_refuses_a_bad_adapter_in_one_line(tmp_path, capsys):
    from advtune.cli import main

    code = main(["train", "--task", "sst2", "--peft", "qlora", "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "invalid peft='qlora': choose from lora, ia3, prompt, prefix" in err
    assert not (tmp_path / "run").exists()


def test_overhead_benchmark_on_an_adapter(base_dirs):
    """``bench.overhead --peft lora``: every row trains the same LoRA adapter + head, standard included."""
    from advtune.bench.overhead import measure_overhead

    rows = measure_overhead(
        ["fgm"], model=str(base_dirs / "llama-left"), batch_size=2, seq_len=6, warmup=0, steps=1, isolate=False,
        peft="lora",
    )  # fmt: skip
    full = measure_overhead([], model=str(base_dirs / "llama-left"), batch_size=2, seq_len=6, warmup=0, steps=1,
                            isolate=False)  # fmt: skip
    assert [r["method"] for r in rows] == ["standard", "fgm"] and [r["passes"] for r in rows] == [1.0, 2.0]
    assert rows[0]["trainable"] == rows[1]["trainable"] < full[0]["trainable"] / 4


def test_adapter_options_from_yaml_and_flags(tmp_path):
    from advtune.commands.train import parse_all

    preset = tmp_path / "lora.yaml"
    preset.write_text(
        "method: freelb\npeft: lora\npeft_rank: 4\npeft_target_modules: query,value\nadv_radius_unit: relative\n"
    )
    *_, method, _, adapter = parse_all(["--config", str(preset), "--peft_rank", "2", "--output_dir", "unused"])
    assert (adapter.peft, adapter.peft_rank, adapter.target_modules()) == ("lora", 2, ["query", "value"])
    assert method.config.adv_radius_unit == "relative"


def test_a_prompt_on_a_decoder_pads_on_the_left():
    """Fed embeddings (a prompt adapter, PEAFT), a decoder's head reads the last position: the pipeline pads
    such runs on the left so that it is the last real token; LoRA runs and encoders keep their side."""
    from advtune.methods import get_method
    from advtune.pipeline.prepare import _pad_left_under_a_prompt

    cases = [("llama-right", "prompt", "standard", "left"), ("llama-right", None, "peaft", "left"),
             ("llama-right", "lora", "standard", "right"), ("llama-right", None, "freelb", "right"),
             ("bert", "prompt", "standard", "right")]  # fmt: skip
    for family, kind, method, side in cases:
        tok = tiny_family_tokenizer(family)
        tok.padding_side = "right"
        model = adapters.wrap(tiny_family_model(family), adapters.AdapterArguments(peft=kind))
        _pad_left_under_a_prompt(tok, model, adapters.AdapterArguments(peft=kind), get_method(method))
        assert tok.padding_side == side, (family, kind, method)
