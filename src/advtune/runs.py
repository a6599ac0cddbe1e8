"""Run folders: atomic JSON writes, finished-run detection, safe replacement, damage checks.

A run is finished when its ``metrics.json`` exists and is readable: that file is always written
last and atomically (temporary name in the same folder, then ``os.replace``), so an interrupted run
is never mistaken for a finished one, and a damaged one is not either.

Every writer (train, bench, attack, report) goes through :func:`check_output` before it loads
anything and through :func:`replacing` when it replaces an earlier result: ``--overwrite`` only ever
touches folders advtune wrote (recognised by :data:`MARKERS`), and the old folder is moved aside,
not deleted, until the new one is complete, so a failing or interrupted replacement loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import DamagedFileError, UsageError

RUN_CONFIG = "run_config.json"
METRICS = "metrics.json"
#: Files only advtune writes: a folder holding one of them is an advtune folder that ``--overwrite`` may replace.
MARKERS = (
    RUN_CONFIG,
    METRICS,
    "train_stats.json",
    "log_history.json",
    "cell.json",
    "bench.json",
    "overhead.json",
    "adversarial.jsonl",
    "attack_config.json",
    "records.json",  # advtune export
)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
            fh.write("\n")
        _fault_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=_json_default) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_temporaries(folder: str | Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left behind (``.name.json.XXXX``)."""
    for path in Path(folder).rglob(".*.json*.*"):
        if path.is_file():
            path.unlink(missing_ok=True)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file advtune wrote; a missing, unreadable or damaged file is a UsageError naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UsageError(f"{path} is missing") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a JSON file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedFileError(path, _first_line(exc)) from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file advtune wrote; damage is a UsageError naming the file and the line."""
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise DamagedFileError(path, f"line {number}: {_first_line(exc)}") from None
    except FileNotFoundError:
        raise UsageError(f"{path} is missing") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a JSON-lines file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedFileError(path, _first_line(exc)) from None
    return rows


def is_finished(run_dir: str | Path) -> bool:
    """``metrics.json`` is there: the run got to its end (whether its files are intact is another question)."""
    return (Path(run_dir) / METRICS).is_file()


def is_complete(run_dir: str | Path) -> bool:
    """Finished, and ``metrics.json`` parses as a JSON object: a damaged one does not finish a run.

    The writers (train, bench) go by this: a run whose ``metrics.json`` is damaged is redone or resumed.
    Readers that report damage (the report) look for finished runs and name what is broken.
    """
    if not is_finished(run_dir):
        return False
    try:
        return isinstance(read_json(Path(run_dir) / METRICS), dict)
    except UsageError:
        return False


def eval_dir(run_dir: str | Path, task: str, split: str) -> Path:
    return Path(run_dir) / "eval" / f"{task}.{split}"


def require_run(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not run.exists():
        raise UsageError(f"run folder {run_dir} does not exist")
    if not run.is_dir():
        raise UsageError(f"{run_dir} is a file, not a run folder")
    if not (run / RUN_CONFIG).is_file():
        raise UsageError(f"{run_dir} is not an advtune run folder (no {RUN_CONFIG})")
    if is_finished(run) and not is_complete(run):
        raise UsageError(f"run {run_dir} is damaged: {run / METRICS} is not readable; train it again with --overwrite")
    if not is_finished(run):
        raise UsageError(f"run {run_dir} has not finished (no {METRICS}); finish it with advtune train --resume")
    return run


# ------------------------------------------------------------------------------------------ safe overwrite
def is_advtune_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a file only advtune writes (run, cell, results or attack folder)."""
    p = Path(path)
    return p.is_dir() and any((p / name).is_file() for name in MARKERS)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_output(
    out: str | Path,
    overwrite: bool = False,
    resume: bool = False,
    what: str = "run folder",
    flag: str = "--output-dir",
) -> str:
    """Check an output folder before anything is loaded; returns ``"new"``, ``"resume"`` or ``"replace"``.

    Refuses (UsageError): a path that is a file or lies under a file, a non-empty folder advtune did
    not write (whatever the flags: ``--overwrite`` never deletes a user's folder), a finished run
    without ``--overwrite`` and an unfinished one without ``--resume`` or ``--overwrite``.
    """
    out = Path(out)
    _refuse_file(out, flag)
    if not out.exists() or _is_empty_dir(out):
        return "new"
    if not is_advtune_folder(out):
        raise UsageError(
            f"{flag} {out} is a non-empty folder that advtune did not write; refusing to use it"
            + (" (--overwrite only replaces advtune folders)" if overwrite else "")
        )
    if overwrite:
        return "replace"
    if is_complete(out):
        raise UsageError(f"{what} {out} holds a finished run; pass --overwrite to replace it")
    if not resume:
        raise UsageError(f"{what} {out} holds an unfinished run; pass --resume to continue it or --overwrite")
    return "resume"


def check_writable(out: str | Path, flag: str) -> None:
    """For writers that add to an advtune folder and resume in it (``bench --out``, ``attack --out``).

    A file, a path under a file and a non-empty folder advtune did not write are refused.
    """
    out = Path(out)
    _refuse_file(out, flag)
    if out.exists() and not _is_empty_dir(out) and not is_advtune_folder(out):
        raise UsageError(f"{flag} {out} is a non-empty folder that advtune did not write; refusing to use it")


def _refuse_file(out: Path, flag: str) -> None:
    """A path that is a file, lies under a file, or under a folder this user cannot write to, is refused."""
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"lies under {parent}, which is a file"
            raise UsageError(f"{flag} {out} {where}; give a folder path")
        if parent.is_dir():
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{flag} {out}: no permission to write in {parent}")
            return


def _replaced_path(out: Path) -> Path:
    return out.parent / f".{out.name}.replaced"


def recover(out: str | Path) -> None:
    """Finish or undo a replacement that was killed (``kill -9``, power loss) before it could clean up.

    If the new folder finished, the old one is removed; otherwise the old one is put back, so a
    killed ``--overwrite`` never costs the previous result.
    """
    out = Path(out)
    old = _replaced_path(out)
    if not old.is_dir():
        return
    if is_complete(out):
        shutil.rmtree(old, ignore_errors=True)
        return
    if out.exists():
        if not (is_advtune_folder(out) or _is_empty_dir(out) or _only_checkpoints(out)):
            raise UsageError(f"{out} and {old} both exist; move one of them away")
        shutil.rmtree(out)
    os.replace(old, out)
    warn(f"restored {out} from an interrupted --overwrite")


def _only_checkpoints(path: Path) -> bool:
    return path.is_dir() and all(p.name.startswith(("checkpoint-", ".")) for p in path.iterdir())


@contextlib.contextmanager
def replacing(out: str | Path, replace: bool) -> Iterator[Path]:
    """Move an earlier result at ``out`` aside while a new one is written; restore it on any failure.

    The old folder goes to a hidden sibling (same filesystem: ``os.replace`` is atomic) and is deleted
    only once the block finishes. A UsageError, an exception or Ctrl-C inside the block removes the
    partial new folder and puts the old one back. ``replace=False`` (nothing to replace, or a DDP
    process other than the main one) runs the block unchanged.
    """
    out = Path(out)
    old = _replaced_path(out)
    if not replace or not out.exists():
        yield out
        return
    if old.exists():
        shutil.rmtree(old)
    os.replace(out, old)
    try:
        yield out
    except BaseException:
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def warn(message: str) -> None:
    """One warning line on stderr (the CLI's format)."""
    print(f"advtune: warning: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ damage checks
def check_safetensors(path: str | Path) -> None:
    """A ``.safetensors`` file whose header parses and whose size matches it (a truncated copy does not)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n <= 0 or n > size - 8:
                raise ValueError("truncated header")
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if size != 8 + n + end:
            raise ValueError(f"{size} bytes, the header describes {8 + n + end}")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DamagedFileError(path, f"not a complete safetensors file ({_first_line(exc)})") from None


def check_torch_file(path: str | Path) -> None:
    """A ``torch.save`` file (zip format) whose every member passes its CRC check."""
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise ValueError(f"member {bad} is corrupt")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DamagedFileError(path, _first_line(exc)) from None


def check_file(path: str | Path) -> None:
    """Check one file of a run folder by its kind (JSON, JSON lines, safetensors, torch); others are skipped."""
    path = Path(path)
    name = path.name
    if name.endswith(".safetensors"):
        check_safetensors(path)
    elif name.endswith((".pt", ".pth", ".bin")):
        check_torch_file(path)
    elif name.endswith(".jsonl"):
        read_jsonl(path)
    elif name.endswith(".json"):
        read_json(path)


def check_run_files(run_dir: str | Path) -> None:
    """Check every file a finished run folder's model is loaded from (weights, tokenizer, configs, method state)."""
    run = Path(run_dir)
    for path in sorted(run.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            check_file(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _fault_point(name: str) -> None:
    from .faults import point

    point(name)


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
