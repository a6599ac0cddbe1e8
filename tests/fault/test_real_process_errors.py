"""The corpus's subprocess cases as real ``advtune`` processes: the error must be the first and only stderr line.

In-process runs (the unit tier's corpus) cannot see what a real process prints before a check that comes
too late: model-loading reports, progress bars, warnings. These start a Python process each (~5 s of
imports), so they live in this process tier, beside the kill tests, and run side by side.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fault import environment
from tests.unit import test_reliability_corpus as corpus

SUBPROCESS_CASES, _argv, tree_hash = corpus.SUBPROCESS_CASES, corpus._argv, corpus.tree_hash
world = corpus.world  # the corpus's module fixture: a tiny model, a finished run, damaged copies, bad data

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def real_processes(world) -> tuple[dict[str, subprocess.CompletedProcess], dict[str, str], dict[str, str]]:
    """Every subprocess case at once (they are independent refusals: each process spends its ~5 s importing
    torch, so side by side they take the time of about two); the world hashed before and after all of them."""
    before = tree_hash(world)
    procs = {
        case: subprocess.Popen(
            [sys.executable, "-m", "advtune.cli", *_argv(case, world)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(world),
        )
        for case in SUBPROCESS_CASES
    }
    done = {}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[case] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done, before, tree_hash(world)


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_real_process_prints_the_error_first(case, real_processes):
    done, before, after = real_processes
    proc = done[case]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("advtune "), proc.stderr
    assert after == before, "a refused command changed files"
