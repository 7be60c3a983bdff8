"""The package's structure: data flows one way (files -> models -> arrays -> kernel -> tables -> exporters),
calibration and validation stand beside that path, and no import cycle exists anywhere in simulator/.

Imports inside functions count: a cycle hidden in a function is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).parent.parent / "simulator"

# Each layer may import its own and the layers before it, never one after it.
LAYERS = (
    ("simulator.collector", "simulator.days", "simulator.errors", "simulator.files", "simulator.version"),
    ("simulator.model",),
    ("simulator.engine",),
    ("simulator.tables",),
    ("simulator.export",),
    # teaching, audit: read a run; cluster: writes one on a Dask cluster; scenario: conditions one
    (
        "simulator.fit",
        "simulator.load",
        "simulator.teaching",
        "simulator.audit",
        "simulator.cluster",
        "simulator.scenario",
    ),
    ("simulator.api",),
    ("simulator.cli", "simulator.__main__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every simulator module `path` imports, at any depth of the file (functions, TYPE_CHECKING blocks)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("simulator")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("simulator"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def import_graph() -> nx.DiGraph:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p): p for p in paths}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for target in imports_of(path):
            if target in modules and target != name:
                graph.add_edge(name, target)
    return graph


def layer_of(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_the_import_graph_is_read() -> None:
    graph = import_graph()
    assert ("simulator.engine.kernel", "simulator.engine.rng") in graph.edges
    assert ("simulator.cli", "simulator.api") in graph.edges  # an import inside a function
    assert graph.number_of_edges() > 50


def test_no_import_cycle() -> None:
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"import cycles: {cycles}"


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in import_graph() if m != "simulator" and layer_of(m) is None]
    assert unplaced == []


def test_no_module_imports_a_later_layer() -> None:
    upward = [
        f"{a} -> {b}"
        for a, b in import_graph().edges
        if a != "simulator" and layer_of(b) is not None and layer_of(b) > layer_of(a)  # type: ignore[operator]
    ]
    assert upward == []


def test_only_the_engine_imports_numba() -> None:
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "numba" or n.startswith("numba.") for n in names):
                importers.append(module_name(path))
    assert importers and all(m.startswith("simulator.engine.") for m in importers), importers
