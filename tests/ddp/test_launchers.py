"""The command line under both launchers: ``torchrun`` and ``accelerate launch``, 2 CPU processes (gloo).

A tiny saved model trains on a small labelled file for one epoch with every method under torchrun and
with FreeLB (multi-pass, ``no_sync``), TAT (tally all-reduce) and CAT (V-row FGSM + NT-Xent, the
cross-process gathers) under ``accelerate launch``; each run must write one finished run folder whose
global step count is the examples divided by (per-device batch x 2 processes), and whose
``train_stats.json`` records the 2-process world.

Cost: each launch spends most of its time importing torch and transformers in both processes, so the runs of
one launcher share one launch (``cli_runs_worker.py`` calls ``advtune.cli.main`` once per run); one true
``python -m advtune.cli`` launch per launcher keeps the console entry point covered.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from advtune.methods import METHODS
from advtune.testing import tiny_model, tiny_tokenizer

from . import SRC

pytestmark = pytest.mark.ddp

N_TRAIN, BATCH = 48, 4
WORKER = Path(__file__).with_name("cli_runs_worker.py")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    model = root / "tiny"
    tiny_model(dropout=0.1).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    words = ["good", "great", "fine", "bad", "awful", "poor"]
    for name, n in (("train.csv", N_TRAIN), ("dev.csv", 16)):
        with open(root / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            for i in range(n):
                w.writerow([f"the film was {words[i % 6]} and {words[(i * 5) % 6]}", int(i % 6 < 3)])
    return root, model


def _launcher(name: str) -> list[str]:
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("accelerate is not installed")
    # --multi_gpu selects accelerate's torch.distributed launcher; --use_cpu on the Trainer makes it gloo
    return [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
        *("--main_process_port", str(_free_port())),  # a fixed or "0" port collided now and then between launches
    ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CASES = [("torchrun", m) for m in METHODS] + [("accelerate", m) for m in ("freelb", "tat", "cat")]
"""Every registered method under torchrun (derived from the registry, so a new method is launched too)."""


def _train_argv(root: Path, model: Path, out: Path, method: str) -> list[str]:
    argv = [
        "train", "--model", str(model), "--method", method,
        "--train-file", str(root / "train.csv"), "--eval-file", str(root / "dev.csv"), "--text-fields", "text",
        "--label-field", "label", "--max-length", "16", "--per-device-train-batch-size", str(BATCH),
        "--num-train-epochs", "1", "--save-strategy", "no", "--use-cpu", "--output-dir", str(out),
        "--report-to", "none", "--disable-tqdm", "true",
    ]  # fmt: skip
    return argv + (["--adv_proj_dim", "8"] if method == "cat" else [])


def _launch(launcher: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run([*_launcher(launcher), *args], env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


def _output(proc: subprocess.CompletedProcess) -> str:
    """The launch's exit status and output tails, as plain text (a tuple message would be cut short by pytest)."""
    return f"exit status {proc.returncode}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def _check_run(out: Path, method: str) -> None:
    assert (out / "metrics.json").is_file() and not list(out.glob("checkpoint-*"))
    stats = json.loads((out / "train_stats.json").read_text())
    replays = 3 if method == "freeat" else 1  # FreeAT: m optimizer steps per mini-batch
    assert stats["global_step"] == replays * N_TRAIN // (BATCH * 2), stats
    assert stats["world_size"] == 2


@pytest.fixture(scope="module")
def launched(setup, tmp_path_factory):
    """``launched(launcher)``: the folder and process of the one launch that trains that launcher's CASES."""
    root, model = setup
    done: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}

    def launch(launcher: str) -> tuple[Path, subprocess.CompletedProcess]:
        if launcher not in done:
            out = tmp_path_factory.mktemp(f"{launcher}-runs")
            plan = [{"name": m, "argv": _train_argv(root, model, out / m, m)} for lau, m in CASES if lau == launcher]
            (out / "plan.json").write_text(json.dumps(plan))
            done[launcher] = out, _launch(launcher, [str(WORKER), str(out / "plan.json")], out)
        return done[launcher]

    return launch


@pytest.mark.parametrize(("launcher", "method"), CASES)
def test_cli_trains_under_the_launcher(launched, launcher, method):
    out, proc = launched(launcher)
    codes = [(out / f"{method}.rc.{rank}").read_text() if (out / f"{method}.rc.{rank}").exists() else None
             for rank in range(2)]  # fmt: skip
    assert codes == ["0", "0"], f"exit codes of the run on each rank: {codes}\n{_output(proc)}"
    _check_run(out / method, method)


@pytest.mark.parametrize("launcher", sorted({lau for lau, _ in CASES}))
def test_launch_of_several_runs_exits_cleanly(launched, launcher):
    _out, proc = launched(launcher)
    assert proc.returncode == 0, _output(proc)


@pytest.mark.parametrize("launcher", sorted({lau for lau, _ in CASES}))
def test_console_module_under_the_launcher(setup, launcher, tmp_path):
    """``<launcher> -m advtune.cli train ...``: the entry point users launch, one multi-pass method."""
    root, model = setup
    proc = _launch(launcher, ["-m", "advtune.cli", *_train_argv(root, model, tmp_path / "run", "freelb")], tmp_path)
    assert proc.returncode == 0, _output(proc)
    _check_run(tmp_path / "run", "freelb")
