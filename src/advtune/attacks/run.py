"""``advtune attack`` on a run folder: load the run, attack a split, write results as it goes, resume.

Each attacked example is appended to ``adversarial.jsonl`` and flushed at once, so a killed attack
keeps what it did: run again with the same settings and it continues at the first missing example
(a truncated last line is dropped). ``attack_config.json`` (written first) holds the settings; rows
from other settings are never mixed in (``--overwrite`` replaces them). When every example is done,
all of them are re-checked (:func:`~advtune.attacks.substitution.recheck`), ``adversarial.jsonl`` is
rewritten with the final statuses and ``metrics.json`` is written last, atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .. import faults, runs
from ..errors import UsageError
from .substitution import (
    ATTACKS,
    AttackResult,
    SentenceEncoder,
    TextFooler,
    Victim,
    get_budget,
    nltk_pos_tagger,
    recheck,
    result_row,
    summarize,
)
from .textattack_adapter import RECIPES, TextAttackRecipe, check_recipe, recipe_name

ROWS = "adversarial.jsonl"
SETTINGS = "attack_config.json"


def _check_attack(attack: str, n: int | None) -> str | None:
    """The TextAttack recipe name (``None`` for the built-in attack); UsageError for unknown ones."""
    recipe = recipe_name(attack)
    if attack not in ATTACKS and recipe is None:
        choices = [*ATTACKS, *(f"textattack:{r}" for r in RECIPES)]
        raise UsageError(f"unknown attack '{attack}' (choose from: {', '.join(choices)})")
    if recipe is not None:
        check_recipe(recipe)  # before any model is loaded: unknown recipe, TextAttack missing
    if n is not None and n <= 0:
        raise UsageError(f"invalid --n {n}: must be positive")
    return recipe


def _target_split(run_task, label_names: list[str] | None, task: str | None, split: str | None):
    from ..tasks import get_task

    target = get_task(task) if task else run_task
    if target.is_regression or not target.label_names:
        raise UsageError(f"the word-substitution attack needs a classification task; '{target.name}' is regression")
    if list(target.label_names) != list(label_names or []):
        raise UsageError(f"task '{target.name}' labels {list(target.label_names)} differ from the run's {label_names}")
    return target, target.canonical_split(split or target.eval_splits[0])


def attack_run(
    run_dir: str | Any,
    task: str | None = None,
    split: str | None = None,
    n: int | None = 500,
    attack: str = "textfooler",
    budget: str = "textdefender-v1",
    out: str | Any | None = None,
    data_dir: str | None = None,
    data_file: str | None = None,
    synonyms: str | None = None,
    word_vectors: str | None = None,
    similarity_model: str = "minilm",
    attack_first: bool = False,
    pos: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
    sample_seed: int | None = None,
) -> dict[str, Any]:
    """Attack the first ``n`` examples of a split (with ``sample_seed``: a seeded random sample of ``n``, the
    same examples for every run) with a finished run's model; writes
    ``<run>/attack/<task>.<split>/{attack_config.json, adversarial.jsonl, metrics.json}`` (metrics last)."""
    from ..modeling import resolve_model_path
    from ..pipeline import load_run, read_run
    from ..tasks import resolve_data_dir
    from ..threads import MachineProbe
    from .synonyms import load_candidates

    recipe = _check_attack(attack, n)
    plan = get_budget(budget)
    if batch_size <= 0:
        raise UsageError(f"invalid --batch-size {batch_size}: must be positive")
    if out:
        runs.check_writable(out, "--out")
    # everything that can be wrong is checked before the model is loaded
    run, config, run_task = read_run(run_dir)
    target, split = _target_split(run_task, config.get("label_names"), task, split)
    out_dir = Path(out) if out else run / "attack" / f"{target.name}.{split}"
    runs.recover(out_dir)  # an --overwrite that was killed: the earlier attack comes back first
    settings = {
        "run": str(Path(run_dir).resolve()),
        **{"task": target.name, "split": split, "attack": attack, "budget": plan.name, "data_file": data_file},
        **{"synonyms": synonyms, "word_vectors": word_vectors, "similarity_model": similarity_model},
        **{"attack_first": attack_first, "pos": pos},
        **({"sample_seed": sample_seed} if sample_seed is not None else {}),  # earlier attacks had no such key
    }
    ddir = resolve_data_dir(data_dir)
    ds = _attack_set(target, split, ddir, data_file, n, sample_seed)
    table = load_candidates(synonyms, word_vectors, ddir)
    resolve_model_path(similarity_model)
    if not overwrite:
        _previous_rows(out_dir, settings, ds)
    loaded = load_run(run)
    with runs.replacing(out_dir, replace=overwrite and out_dir.exists()):
        done = _previous_rows(out_dir, settings, ds)
        if not (out_dir / SETTINGS).is_file():
            runs.write_json_atomic(out_dir / SETTINGS, settings)
        fooler, encoder, tagger = _build(loaded, table, plan, recipe, similarity_model, batch_size, pos)
        attack_b = target.pair and not attack_first
        probe = MachineProbe.start()  # threads and load of this part of the attack, recorded beside its timings
        metrics = _attack_and_write(fooler, ds, attack_b, out_dir, done, progress)
        metrics = {
            **{"task": target.name, "split": split, "run": str(run_dir), "attack": attack},
            "budget": dataclasses.asdict(plan),
            **metrics,
            "attacked_field": ("text_b" if attack_b else "text_a") if target.pair else "text_a",
            **{"candidates": table.name, "similarity_model": encoder.name, "candidate_check": recipe is None},
            "pos_check": tagger is not None and plan.pos_consistency,
            "resumed_examples": len(done),
            "device": str(next(loaded.model.parameters()).device),
            "machine": probe.finish(),
        }
        runs.write_json_atomic(out_dir / runs.METRICS, metrics)
    metrics["out_dir"] = str(out_dir)
    return metrics


def _build(loaded, table, plan, recipe: str | None, similarity_model: str, batch_size: int, pos: bool):
    """The attack object, its sentence encoder and its part-of-speech tagger (``None`` when unavailable)."""
    victim = Victim(loaded.model, loaded.tokenizer, loaded.max_length, batch_size)
    encoder = SentenceEncoder(similarity_model, batch_size, device=next(loaded.model.parameters()).device)
    tagger = nltk_pos_tagger() if pos and recipe is None else None
    if recipe is None:
        return TextFooler(victim, table, encoder, plan, tagger), encoder, tagger
    return TextAttackRecipe(recipe, victim, table, encoder, plan), encoder, tagger


def _attack_set(target, split: str, ddir, data_file: str | None, n: int | None, sample_seed: int | None = None):
    """The first ``n`` labelled examples of the split (unlabelled rows cannot be attacked), or with
    ``sample_seed`` a seeded random sample of ``n``. A split sorted by label (the intent test sets) would
    give the first ``n`` of one or two labels: that is said on stderr, once, with the option that fixes it."""
    ds = target.load(split, data_dir=ddir, data_file=data_file) if data_file else target.load(split, data_dir=ddir)
    ds = ds.filter(lambda y: y >= 0, input_columns="label")
    if n is None or n >= len(ds):
        return ds
    if sample_seed is not None:
        return ds.shuffle(seed=sample_seed).select(range(n))
    first = ds.select(range(n))
    held, total = len(set(first["label"])), len(set(ds["label"]))
    if held < max(min(total, 2), min(total, n) / 4):  # a random sample of n would hold far more labels
        print(
            f"note: the first {n} examples of {target.name}.{split} hold {held} of its {total} labels "
            "(the split is sorted); --sample-seed 0 attacks a seeded random sample instead",
            file=sys.stderr,
        )
    return first


def _attack_and_write(fooler, ds, attack_b: bool, out_dir: Path, done: list[dict], progress: bool) -> dict:
    """Attack the examples not yet done, re-check all of them, rewrite the rows with their final statuses."""
    rows = _attack_rest(fooler, ds, attack_b, out_dir / ROWS, done, progress)
    metrics = _finish(fooler, rows, attack_b)
    runs.write_jsonl_atomic(out_dir / ROWS, rows)
    return metrics


def _previous_rows(out_dir: Path, settings: dict[str, Any], ds) -> list[dict[str, Any]]:
    """Rows of an earlier, interrupted (or finished) attack with the same settings; other settings are refused."""
    path = out_dir / ROWS
    config = out_dir / SETTINGS
    if config.is_file():
        old = runs.read_json(config)
        if old != settings:
            changed = sorted(k for k in settings if not isinstance(old, dict) or old.get(k) != settings[k])
            raise UsageError(
                f"{out_dir} holds an attack with other settings ({', '.join(changed)}); "
                "pass --overwrite to replace it or choose another --out"
            )
    elif path.exists():
        raise UsageError(f"{out_dir} holds an attack without {SETTINGS}; pass --overwrite to replace it")
    rows = _read_rows(path) if path.exists() else []
    rows = rows[: len(ds)]
    ids = list(ds["idx"]) if "idx" in ds.column_names else list(range(len(ds)))
    for i, row in enumerate(rows):
        if row.get("idx") != int(ids[i]):
            raise UsageError(f"{path} line {i + 1}: example {row.get('idx')} is not example {ids[i]} of the split; "
                             "pass --overwrite to start over")  # fmt: skip
    return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows written so far; a last line cut short by a kill is dropped (and cut from the file)."""
    data = path.read_bytes()
    keep = data if data.endswith(b"\n") or not data else data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(len(keep))
        runs.warn(f"dropped a half-written last line of {path}")
    return runs.read_jsonl(path)


def _examples(ds, attack_b: bool):
    pair = "text_b" in ds.column_names
    ids = list(ds["idx"]) if "idx" in ds.column_names else list(range(len(ds)))
    texts_b = list(ds["text_b"]) if pair else [None] * len(ds)
    for i, (a, b, y) in enumerate(zip(ds["text_a"], texts_b, ds["label"])):
        target, other = ((b, a) if attack_b else (a, b)) if pair else (a, None)
        yield i, int(ids[i]), target, other, int(y)


def _attack_rest(fooler, ds, attack_b: bool, path: Path, done: list[dict], progress: bool) -> list[dict]:
    """Attack the examples after ``done``, appending each row to ``path`` (flushed) as soon as it exists."""
    from tqdm.auto import tqdm

    rows = list(done)
    todo = [e for e in _examples(ds, attack_b) if e[0] >= len(done)]
    with open(path, "a", encoding="utf-8") as fh:
        for _, idx, target, other, label in tqdm(todo, desc="Attacking", disable=not progress):
            fooler.victim.queries = 0
            forwards, start = fooler.victim.forwards, time.perf_counter()
            res = fooler.attack(idx, target, label, other, attack_b)
            row = result_row(res, other, attack_b)
            row["seconds"] = time.perf_counter() - start
            row["forwards"] = fooler.victim.forwards - forwards
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            rows.append(row)
            faults.point("attack_example")
    return rows


def _result(row: dict[str, Any]) -> AttackResult:
    """An :class:`AttackResult` back from its row; a re-check verdict is undone so it is re-checked afresh."""
    fields = {f.name for f in dataclasses.fields(AttackResult)}
    res = AttackResult(**{k: v for k, v in row.items() if k in fields})
    res.changed = [(c["position"], c["from"], c["to"]) for c in row.get("changed", [])]
    if res.status == "violation":
        res.status, res.violations = "success", []
    return res


def _finish(fooler, rows: list[dict[str, Any]], attack_b: bool) -> dict[str, Any]:
    """Re-check every example (also those of earlier parts) and summarise; ``rows`` get the final statuses."""
    results = [_result(r) for r in rows]
    fixed = [r.get("fixed_text") for r in rows]
    violations = recheck(results, fooler, fixed, attack_b)
    seconds = sum(float(r.get("seconds", 0.0)) for r in rows)
    metrics = summarize(results, seconds, violations)
    metrics["mean_forwards"] = sum(int(r.get("forwards", 0)) for r in rows) / len(rows) if rows else 0.0
    for i, (res, other) in enumerate(zip(results, fixed)):
        cost = {"seconds": rows[i].get("seconds"), "forwards": rows[i].get("forwards")}
        rows[i] = {**result_row(res, other, attack_b), **cost}
    return metrics
