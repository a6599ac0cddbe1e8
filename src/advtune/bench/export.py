"""Keep a results tree's findings without its models: ``advtune export RESULTS DEST``.

A CPU grid takes longer than one working session and a results folder holds ~90 MB of weights per run,
so results are kept as *records*: every finished run's JSON files (configuration, metrics, log history,
train statistics, cell record, attack and evaluation metrics) and per-example predictions (gold and
predicted labels, without the probability vectors), without model weights, tokenizers, adversarial texts
and logs. ``advtune report`` reads a records tree like the
results tree it came from, and ``advtune bench --out DEST`` over it skips the finished cells, so a grid
exported at the end of one session is continued in the next (the runs that need weights,
``robustness``, ``surface``, a late transfer evaluation, need the original tree).

Absolute paths inside the JSON files (the model's folder, the data files, the run folder) would name
one machine's layout: paths under RESULTS become relative to it, any other absolute path keeps its last
two parts behind ``<local>/``.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import UsageError

RECORDS_FILE = "records.json"
LEFT_OUT = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.ckpt", "tokenizer*", "vocab*", "merges.txt",
    "special_tokens_map.json", "added_tokens.json", "*.model", "*.jinja", "adversarial.jsonl", "*.log", "*.md",
)  # fmt: skip
"""File names left out: weights, tokenizers (and chat templates), adversarial texts (derived from the datasets),
logs, and Markdown (peft's model card names the base model's local path; a report is rebuilt by ``report``)."""
PREDICTIONS = "predictions.jsonl"
DROPPED_FIELDS = ("probs",)
"""Per-example fields left out of the predictions: the report and ``compare`` read gold and predicted labels."""
SKIPPED_DIRS = ("checkpoint-*", ".partial-*", ".*")


@dataclass
class ExportSummary:
    runs: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0


def _left_out(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in LEFT_OUT)


def _scrub(value: Any, root: Path) -> Any:
    """Absolute paths in a JSON value: relative to ``root`` when under it, else ``<local>/PARENT/NAME``."""
    if isinstance(value, dict):
        return {k: _scrub(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value and len(value) < 4096:
        path = Path(value)
        try:
            return str(path.relative_to(root)) or "."
        except ValueError:
            return "<local>/" + "/".join(path.parts[-2:])
    return value


def _run_folders(src: Path) -> list[Path]:
    return sorted(p.parent for p in src.rglob(runs.RUN_CONFIG) if not _in_skipped_dir(p.relative_to(src)))


def _in_skipped_dir(rel: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in rel.parts[:-1] for pattern in SKIPPED_DIRS)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_export(src: str | Path, dest: str | Path) -> tuple[Path, Path]:
    """Refuse a RESULTS that holds no advtune run and a DEST advtune did not write, before anything is copied."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise UsageError(f"results folder {src} {'is a file' if src.exists() else 'does not exist'}")
    if not _run_folders(src):
        raise UsageError(f"{src} holds no advtune run folder (no {runs.RUN_CONFIG} under it)")
    runs.check_writable(dest, "DEST")
    src_r, dest_r = src.resolve(), dest.resolve()
    if dest_r == src_r or src_r in dest_r.parents or dest_r in src_r.parents:
        raise UsageError(f"DEST {dest} and RESULTS {src} overlap; choose a folder outside the results tree")
    return src, dest


def export_results(src: str | Path, dest: str | Path) -> ExportSummary:
    """Copy the finished runs of ``src`` (and its top-level bench/overhead records) into ``dest``.

    Files already in ``dest`` are replaced one by one (each written atomically), so exporting a grid again
    after more cells finished adds them; unfinished runs (no valid ``metrics.json``) are left out: a
    bench over ``dest`` runs them again.
    """
    src, dest = check_export(src, dest)
    root = src.resolve()
    summary = ExportSummary()
    run_dirs = _run_folders(src)
    finished = [r for r in run_dirs if runs.is_complete(r)]
    summary.unfinished = [str(r.relative_to(src)) for r in run_dirs if r not in finished]
    unfinished = {src / u for u in summary.unfinished}

    def copy(path: Path) -> None:
        target = dest / path.relative_to(src)
        if path.suffix == ".json":
            runs.write_json_atomic(target, _scrub(runs.read_json(path), root))
        elif path.name == PREDICTIONS:  # the paired tests need the labels; a 77-way probability row is 800 bytes
            rows = runs.read_jsonl(path)
            runs.write_jsonl_atomic(target, [{k: v for k, v in r.items() if k not in DROPPED_FIELDS} for r in rows])
        else:
            _write_bytes_atomic(target, path.read_bytes())
        summary.files += 1
        summary.bytes += target.stat().st_size

    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or _left_out(path.name) or _in_skipped_dir(rel) or path.name.startswith("."):
            continue
        if any(u == path.parent or u in path.parents for u in unfinished):
            continue
        copy(path)
    summary.runs = [str(r.relative_to(src)) for r in finished]
    runs.write_json_atomic(
        dest / RECORDS_FILE,
        {
            "exported": time.strftime("%Y-%m-%d %H:%M:%S"),
            "from": src.resolve().name,
            "runs": summary.runs,
            "left_out": list(LEFT_OUT),
            "note": "records of finished runs: no model weights, tokenizers or adversarial texts",
        },
    )
    return summary
