"""The TextAttack bridge, against a stand-in ``textattack`` package with the same surface (TextAttack itself
is optional and never installed for the tests): results are converted, re-checked against advtune's
budget (an over-budget "success" becomes a violation), pairs keep the premise, errors are one line."""

from __future__ import annotations

import sys
import types
from collections import OrderedDict

import numpy as np
import pytest

from advtune.attacks.substitution import Victim, run_attack
from advtune.attacks.synonyms import SynonymTable
from advtune.attacks.textattack_adapter import TextAttackRecipe, check_recipe
from advtune.errors import UsageError
from advtune.testing import tiny_tokenizer

from .test_attack import BUDGET, Bow, _ds

SWAPS = {"good": "bad", "fun": "dull", "nice": "poor"}


def _fake_textattack(greedy_all: bool = False) -> types.ModuleType:
    """A minimal ``textattack``: a recipe that swaps words from ``SWAPS`` left to right until the label
    flips (``greedy_all``: swaps every word it can, ignoring any budget, like a recipe without a cap)."""
    ta = types.ModuleType("textattack")
    wrappers = types.ModuleType("textattack.models.wrappers")
    results = types.ModuleType("textattack.attack_results")
    recipes = types.ModuleType("textattack.attack_recipes")

    class ModelWrapper:
        pass

    class AttackedText:
        def __init__(self, inputs):
            self._text_input = OrderedDict(inputs)

        @property
        def text(self):
            return "\n".join(self._text_input.values())

    class GoalResult:
        def __init__(self, text, output, num_queries):
            self.attacked_text, self.output, self.num_queries = text, output, num_queries

    class AttackResult:
        def __init__(self, original, perturbed):
            self.original_result, self.perturbed_result = original, perturbed

    class SuccessfulAttackResult(AttackResult): ...

    class FailedAttackResult(AttackResult): ...

    class SkippedAttackResult(AttackResult): ...

    class Recipe:
        def __init__(self, wrapper):
            self.wrapper = wrapper

        def _predict(self, inputs):
            values = list(inputs.values())
            x = values[0] if len(values) == 1 else tuple(values)
            return int(np.asarray(self.wrapper([x]))[0].argmax())

        def attack(self, example, label):
            col = list(example)[-1]  # the recipes' InputColumnModification: only the last column changes
            queries = 1
            pred = self._predict(example)
            orig = GoalResult(AttackedText(example), pred, 1)
            if pred != label:
                return SkippedAttackResult(orig, orig)
            words = example[col].split()
            current = dict(example)
            for i, w in enumerate(words):
                if w in SWAPS:
                    words[i] = SWAPS[w]
                    current[col] = " ".join(words)
                    queries += 1
                    pred = self._predict(current)
                    if pred != label and not greedy_all:
                        break
            pert = GoalResult(AttackedText(current), pred, queries)
            return (SuccessfulAttackResult if pred != label else FailedAttackResult)(orig, pert)

    class TextFoolerJin2019:
        @staticmethod
        def build(wrapper):
            assert isinstance(wrapper, ModelWrapper)
            return Recipe(wrapper)

    wrappers.ModelWrapper = ModelWrapper
    results.SuccessfulAttackResult, results.FailedAttackResult = SuccessfulAttackResult, FailedAttackResult
    results.SkippedAttackResult = SkippedAttackResult
    recipes.TextFoolerJin2019 = TextFoolerJin2019
    models = types.ModuleType("textattack.models")
    models.wrappers = wrappers
    ta.models, ta.attack_results, ta.attack_recipes = models, results, recipes
    return ta


@pytest.fixture
def fake(monkeypatch):
    def install(greedy_all=False):
        ta = _fake_textattack(greedy_all)
        for name, mod in {
            "textattack": ta,
            "textattack.models": ta.models,
            "textattack.models.wrappers": ta.models.wrappers,
            "textattack.attack_results": ta.attack_results,
            "textattack.attack_recipes": ta.attack_recipes,
        }.items():
            monkeypatch.setitem(sys.modules, name, mod)

    return install


def _recipe(weights):
    victim = Victim(Bow(weights), tiny_tokenizer(), max_length=64)
    sim = lambda orig, cands: np.full(len(cands), 0.99)  # noqa: E731
    return TextAttackRecipe("textfooler", victim, SynonymTable([]), sim, BUDGET)


def test_results_are_converted_and_rechecked(fake):
    fake()
    weights = {"good": 1, "fun": 1, "nice": 1, "bad": -3, "dull": -3, "poor": -3}
    texts = ["good movie overall with a plot", "bad movie", "good fun nice film"]  # success, skipped, success
    metrics, rows = run_attack(_recipe(weights), _ds(texts, [1, 1, 1]), progress=False)
    assert [r["status"] for r in rows] == ["success", "skipped", "success"]
    assert rows[0]["perturbed"] == "bad movie overall with a plot" and rows[0]["changed"] == [
        {"position": 0, "from": "good", "to": "bad"}
    ]
    assert metrics["acc"] == pytest.approx(2 / 3) and metrics["aua"] == 0.0 and metrics["num_violations"] == 0
    assert rows[0]["queries"] == 2  # the recipe's own count (original + one swap)


def test_over_budget_success_counts_as_a_failed_attack(fake):
    fake(greedy_all=True)  # swaps all 3 of 4 words: 75% > the 30% budget
    weights = {"good": 1, "fun": 1, "nice": 1, "bad": -3, "dull": -3, "poor": -3}
    metrics, rows = run_attack(_recipe(weights), _ds(["good fun nice film"], [1]), progress=False)
    assert rows[0]["status"] == "violation" and "word_budget" in rows[0]["violations"]
    assert metrics["aua"] == 1.0 and metrics["violations"] == {"word_budget": 1}


def test_pairs_keep_the_premise(fake):
    fake()
    weights = {"good": 1, "bad": -3}
    ds = _ds(["the premise is good"], [1], texts_b=["a good film"])
    _, rows = run_attack(_recipe(weights), ds, attack_b=True, progress=False)
    assert rows[0]["status"] == "success" and rows[0]["fixed_text"] == "the premise is good"
    assert rows[0]["perturbed"] == "a bad film"
    with pytest.raises(UsageError, match="second text"):
        run_attack(_recipe(weights), ds, attack_b=False, progress=False)


def test_clear_errors(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "textattack", None)  # not installed
    with pytest.raises(UsageError, match="pip install textattack"):
        check_recipe("textfooler")
    fake()
    with pytest.raises(UsageError, match="unknown TextAttack recipe 'nosuch'"):
        check_recipe("nosuch")
