"""The package's architecture: subsystems in layers, imports only downward, no cycles."""

from __future__ import annotations

import ast
from functools import cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import dampen

ROOT = Path(dampen.__file__).parent

# Each unit (a top-level module or a subpackage) with its layer; a module may import only from
# its own unit or from a unit of a lower layer. The facade modules sit above the methods.
LAYERS: dict[str, int] = {
    "_version": 0,
    "core": 0,
    "data": 0,
    "models": 0,
    "functional": 0,
    "importances": 1,
    "registry": 2,
    "eval": 2,
    "methods": 3,
    "api": 4,
    "recipe": 5,
    "integrations": 5,
    "bench": 6,
    "proofs": 7,
    "cli": 8,
    "__main__": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every ``dampen`` module imported anywhere in ``path``, function bodies included
    (``from dampen.pkg import sub`` counts as an import of ``dampen.pkg.sub``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dampen")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] == "dampen"
        ):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found.update(subs or {node.module})
    return found


@cache
def _graph() -> dict[str, frozenset[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): frozenset(_imports(p, modules)) for p in paths}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" is the package's own __init__


def _layer(unit: str) -> int:
    return LAYERS["api"] if unit == "" else LAYERS[unit]  # the facade stands beside api.py


def test_every_unit_has_a_layer() -> None:
    units = {_unit(m) for m in _graph()} - {""}
    assert units == set(LAYERS), f"units without a layer: {units - set(LAYERS)}"


@pytest.mark.parametrize("module", sorted(_graph()))
def test_imports_point_downward(module: str) -> None:
    here = _unit(module)
    if here == "":
        return  # dampen/__init__.py is the facade over everything below it
    upward = sorted(
        target
        for target in _graph()[module]
        if _unit(target) != here and _layer(_unit(target)) >= _layer(here)
    )
    assert not upward, f"{module} (layer {_layer(here)}) imports upward: {upward}"


def test_no_import_cycles() -> None:
    graph = {m: {t for t in targets if t in _graph()} for m, targets in _graph().items()}
    graph.pop("dampen")  # importing any submodule runs the package's __init__ first
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the message is the evidence
        pytest.fail(f"import cycle: {exc.args[1]}")
