"""The layers contract of the architecture, checked on the import graph of the source.

Top to bottom: commands and the CLI; bench, report and plots (grids and readers of run folders);
one run end to end (pipeline, attack run); trainer, evaluation and attack algorithms; methods and
tasks; foundations (run folders and their records, modeling, embeddings, perturbation, errors, ...).

Each module of ``advtune`` belongs to one layer of :data:`LAYERS` and imports only from its own layer or
the layers below it, and the import graph has no cycle. Imports are read from the source with ``ast``,
at module level and inside functions alike (a deferred import is still a dependency; it only hides a
cycle until the day both modules are imported in the other order), ``TYPE_CHECKING`` blocks included.

An entry names a module or a package; a package's entry places its submodules too, the most specific
entry winning, so a new method or task file is placed by its package while a new top-level module fails
:func:`test_every_module_has_a_layer` until it is written into the table.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

import advtune

SRC = Path(advtune.__file__).parent
ROOT = "advtune"

LAYERS: list[tuple[str, tuple[str, ...]]] = [  # top to bottom
    ("entry points", ("advtune.cli", "advtune.commands", "advtune.testing")),  # testing: the library never imports it
    (
        "grids and readers of run folders",
        (
            "advtune.bench",
            "advtune.report",
            "advtune.plots",
            "advtune.surface",  # loads a run and draws its surface with plots
        ),
    ),
    (
        "one run end to end",
        (
            "advtune.pipeline",
            "advtune.attacks.run",  # attack_run, in its own module (reliability work)
            "advtune.attacks.embedding",  # evaluate_robustness loads runs through the pipeline
        ),
    ),
    (
        "training, evaluation, attack algorithms",
        ("advtune.trainer", "advtune.evaluation", "advtune.attacks"),
    ),
    (
        "methods and tasks",
        (
            "advtune.methods",
            "advtune.tasks",
            "advtune.data",  # encoding and collation of a task's examples
            "advtune.evaluation.difficult",  # builds the intent tasks' "difficult" test subsets
        ),
    ),
    (
        "foundations",
        (
            "advtune",  # the package itself (its version); placed alone, it does not place its submodules
            "advtune.runs",
            "advtune.checkpoints",  # which checkpoint --resume may use; whole-run statistics
            "advtune.faults",  # the ADVTUNE_FAULT kill hook of the fault tests
            "advtune.records",
            "advtune.config",
            "advtune.modeling",
            "advtune.gguf_models",  # GGUF files as --model: converted once into a cached model folder
            "advtune.adapters",  # the one way to wrap, save and load a PEFT adapter
            "advtune.embeddings",
            # pooling: sentence representations as the head reads them; dropout_replay: RNG replay of
            # dropout masks across passes.
            "advtune.pooling",
            "advtune.dropout_replay",
            "advtune.perturbation",
            "advtune.distributed",
            "advtune.wrappers",  # the one unwrap (DDP / compile / PEFT)
            "advtune.errors",
            "advtune.threads",  # --threads and the machine-load record of every run
            "advtune.devices",  # --device of the commands that load a finished run
            "advtune.evaluation.metrics",  # metric functions, needed by records to pick a headline metric
        ),
    ),
]

KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


# ------------------------------------------------------------------------------------------ the graph
def module_files(src: Path, root: str) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package at ``src``."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = [root, *path.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (``from pkg import module`` too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_graph(src: Path = SRC, root: str = ROOT) -> dict[str, set[str]]:
    modules = module_files(src, root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of the module's layer (0 = top): its own entry, else its closest package's; the root only itself."""
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for index, (_, entries) in enumerate(layers):
        for entry in entries:
            covers = module == entry or (entry != ROOT and module.startswith(entry + "."))
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def layer_violations(graph: Mapping[str, set[str]], layers=LAYERS, allowed=KNOWN_EXCEPTIONS) -> list[str]:
    """``a (layer) imports b (higher layer)`` for every import that goes up the table."""
    out = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            low, high = layer_of(module, layers), layer_of(dep, layers)
            if (module, dep) not in allowed and None not in (low, high) and high < low:
                out.append(f"{module} ({layers[low][0]}) imports {dep} ({layers[high][0]})")
    return out


def without(graph: Mapping[str, set[str]], edges) -> dict[str, set[str]]:
    return {m: {d for d in deps if (m, d) not in edges} for m, deps in graph.items()}


# ------------------------------------------------------------------------------------------ the contract
@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_has_a_layer(graph):
    unplaced = [m for m in graph if layer_of(m) is None]
    assert not unplaced, f"place these modules in LAYERS of {Path(__file__).name}: {unplaced}"


def test_no_import_cycles(graph):
    cycle = find_cycle(without(graph, KNOWN_EXCEPTIONS))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_go_down_the_layers(graph):
    assert layer_violations(graph) == []


def test_the_library_never_imports_its_testing_api(graph):
    """``advtune.testing`` is for tests: placing it on top keeps the layers below off it, this keeps the rest off."""
    assert sorted(m for m, deps in graph.items() if "advtune.testing" in deps) == []


def test_known_exceptions_are_still_needed(graph):
    """An exception whose import is gone must be deleted, so the table never hides a new one."""
    stale = [edge for edge in KNOWN_EXCEPTIONS if edge[1] not in graph.get(edge[0], set())]
    assert not stale, f"delete these entries from KNOWN_EXCEPTIONS, the imports are gone: {stale}"


# ------------------------------------------------------------------------------------------ the checker itself
def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / rel).write_text(text, encoding="utf-8")
    return tmp_path / "pkg"


def test_the_graph_sees_deferred_relative_and_type_checking_imports(tmp_path):
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "low.py": "import os\n",
            "mid.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .top import X\n",
            "top.py": "def f():\n    from . import low\n    from .sub import deep\n",
            "sub/__init__.py": "from ..low import *\n",
            "sub/deep.py": "import pkg.mid\nfrom .. import sub\n",
        },
    )
    assert import_graph(src, "pkg") == {
        "pkg": set(),
        "pkg.low": set(),
        "pkg.mid": {"pkg.top"},
        "pkg.top": {"pkg.low", "pkg.sub.deep"},
        "pkg.sub": {"pkg.low"},
        "pkg.sub.deep": {"pkg.mid", "pkg.sub"},
    }
    graph = import_graph(src, "pkg")
    assert find_cycle(graph) == ["pkg.mid", "pkg.top", "pkg.sub.deep", "pkg.mid"]
    assert find_cycle(without(graph, {("pkg.mid", "pkg.top")})) is None


def test_a_module_importing_upwards_is_reported():
    layers = [("top", ("advtune.cli",)), ("middle", ("advtune.methods",)), ("bottom", ("advtune", "advtune.errors"))]
    graph = {"advtune.errors": {"advtune.methods.fgm"}, "advtune.methods.fgm": {"advtune.errors"}}
    assert layer_violations(graph, layers, allowed={}) == [
        "advtune.errors (bottom) imports advtune.methods.fgm (middle)"
    ]
    assert layer_violations(graph, layers, allowed={("advtune.errors", "advtune.methods.fgm"): ""}) == []
    assert layer_of("advtune.methods.fgm", layers) == 1 and layer_of("advtune.nowhere", layers) is None


def test_the_real_graph_has_the_edges_it_should():
    """Guards the reader against reading too little: known imports of the source, deferred ones included."""
    graph = import_graph()
    assert "advtune.records" in graph["advtune.plots"] and "advtune.report" not in graph["advtune.plots"]
    assert "advtune.pipeline" in graph["advtune.bench.crosslingual"]  # a deferred import inside a function
    assert "advtune.runs" in graph["advtune.report"]  # ``from . import runs``
