"""The package's import structure: layers, no circles, and every module importable on its own.

:data:`LAYERS` is the order the modules depend on each other in (docs/DESIGN.md quotes it): a module imports
modules of its own layer or of layers below it, never above. Every import counts, a deferred one inside a
function too (as ``../shared/scripts/import_cycles.py`` counts them): a deferred import still ties the
modules together, it only hides the tie until it runs.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import textwrap

import pytest
from fresh_interpreters import run_fresh

PACKAGE = "pykeen_momok"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

#: The layers, lowest first. An entry names a module, or a package and everything in it; the package's own
#: ``__init__`` (``pykeen_momok``, which runs ``registration.install``) is matched by its exact name only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pykeen_momok.version",),  # the version string
    ("pykeen_momok.triples",),  # per-entity features on PyKEEN's triples factories
    ("pykeen_momok.features",),  # feature files read and aligned to entity ids
    ("pykeen_momok.text_features",),  # optional: entity names encoded locally
    ("pykeen_momok.datasets",),  # files to datasets (download, archives, cache, benchmarks, synthetic)
    ("pykeen_momok.nn",),  # tensors in, tensors out (adapters, experts, fusion, tucker, club, interaction)
    # how the model is trained: MoMoKLoss, the CLUB term, the batched LCWA loop
    ("pykeen_momok.losses", "pykeen_momok.training", "pykeen_momok.lcwa"),
    ("pykeen_momok.model",),  # MoMoK(ERModel)
    ("pykeen_momok.registration",),  # talks to PyKEEN's resolvers; imports what it registers
    # entry points (lightning: multi-GPU training, next to cli and predict, whose helpers it uses; analysis: what a
    # trained model learned, read through predict)
    (
        "pykeen_momok",
        "pykeen_momok.cli",
        "pykeen_momok.lightning",
        "pykeen_momok.predict",
        "pykeen_momok.recipes",
        "pykeen_momok.analysis",
    ),
)


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    matches = [
        (len(entry), index)
        for index, layer in enumerate(LAYERS)
        for entry in layer
        if module == entry or (entry != PACKAGE and module.startswith(entry + "."))
    ]
    if not matches:
        raise LookupError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return max(matches)[1]


def _imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its file (``if TYPE_CHECKING:`` aside)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            if name in MODULES and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_module_is_in_a_layer():
    missing = []
    for module in MODULES:
        try:
            _layer(module)
        except LookupError:
            missing.append(module)
    assert not missing, f"modules in no layer of LAYERS: {missing}"


def test_imports_point_down_the_layers():
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_scan_sees_deferred_and_relative_imports():
    """The scan is what the two tests above rely on: check it on imports this package is known to have."""
    assert "pykeen_momok.model" in GRAPH["pykeen_momok.registration"]  # deferred, inside a function
    assert "pykeen_momok.nn.club" in GRAPH["pykeen_momok.training"]  # relative, module level
    assert {"pykeen_momok.registration", "pykeen_momok.version"} <= GRAPH["pykeen_momok"]
    assert _layer("pykeen_momok.datasets.cache") == _layer("pykeen_momok.datasets") < _layer("pykeen_momok.nn.tucker")
    with pytest.raises(LookupError, match="in no layer"):
        _layer("pykeen_momok_other")


# every module alone in a fresh interpreter --------------------------------------------------------------

CHECK = """
import {module}
from pykeen.models import model_resolver
from pykeen.losses import loss_resolver
from pykeen.datasets import dataset_resolver
assert model_resolver.lookup("MoMoK").__module__ == "pykeen_momok.model"
assert loss_resolver.lookup("MoMoKLoss").__module__ == "pykeen_momok.losses"
assert dataset_resolver.lookup("SyntheticMMKG").__module__ == "pykeen_momok.datasets.synthetic"
assert dataset_resolver.lookup("MKG-Y").__name__ == "MKGY"
import pykeen.datasets.utils
assert getattr(pykeen.datasets.utils._cached_get_dataset, "_momok_wrapped", False), "dataset cache not routed"
print("ok")
"""


@pytest.fixture(scope="module")
def alone() -> dict[str, subprocess.CompletedProcess]:
    # forked from a server that imported torch and the like, never pykeen or pykeen_momok: see fresh_interpreters
    return run_fresh({module: textwrap.dedent(CHECK.format(module=module)) for module in MODULES})


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_alone_and_momok_resolves(alone, module: str):
    result = alone[module]
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    assert "could not load" not in result.stderr, result.stderr[-3000:]  # PyKEEN skipped an entry point
