"""Adding a method = one file + one registry line: everything else a method needs is checked over METHODS."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from advtune.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_has_a_docs_page(name):
    page = ROOT / "docs" / "methods" / f"{name}.md"
    assert page.is_file(), f"registered method '{name}' has no docs/methods/{name}.md"
    first = page.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# `{name}`"), f"docs/methods/{name}.md must open with '# `{name}` — ...'"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_has_a_preset_that_parses(name):
    from advtune.commands.train import parse

    presets = sorted((ROOT / "configs").glob(f"{name}_*.yaml"))
    assert presets, f"registered method '{name}' has no configs/{name}_*.yaml preset"
    for preset in presets:
        task_args, _, _, method, _ = parse(["--config", str(preset), "--output_dir", "unused"])
        assert method.name == name, f"{preset.name} trains '{method.name}'"
        assert task_args.task and task_args.task in preset.stem, preset.name


def test_docs_pages_and_presets_belong_to_registered_methods():
    pages = {p.stem for p in (ROOT / "docs" / "methods").glob("*.md")}
    assert pages <= set(METHODS), f"docs pages without a method: {sorted(pages - set(METHODS))}"
    presets = {re.sub(r"_.*", "", p.stem) for p in (ROOT / "configs").glob("*.yaml")}
    assert presets <= set(METHODS), f"presets without a method: {sorted(presets - set(METHODS))}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_setup_accepts_the_tokenizer_and_the_task(name):
    """The pipeline calls ``setup(model, tokenizer=..., task=...)``; an override taking only the model breaks it."""
    setup = METHODS[name].setup
    inspect.signature(setup).bind(METHODS[name](), None, tokenizer=None, task=None)


def test_register_method_refuses_a_setup_without_tokenizer_and_task(monkeypatch):
    from advtune.errors import UsageError
    from advtune.methods import register_method
    from advtune.methods.standard import Standard

    class Old(Standard):
        name = "old-setup"

        def setup(self, model):
            return model

    class New(Standard):
        name = "new-setup"

        def setup(self, model, **kwargs):
            return model

    monkeypatch.setattr("advtune.methods.METHODS", dict(METHODS))
    with pytest.raises(UsageError, match=r"^Old.setup must accept tokenizer=None and task=None keywords$"):
        register_method(Old)
    assert register_method(New) is New


@pytest.mark.parametrize("name", sorted(METHODS))
def test_train_help_prints_for_every_method(name, capsys):
    """argparse %-formats every help string: a stray '%' in a method field's help breaks ``--help``."""
    from advtune.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--method", name, "--help"])
    assert exc.value.code == 0
    assert "--adv_" in capsys.readouterr().out or name == "standard"
