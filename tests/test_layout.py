"""The package's layering: each folder is one stage and nothing imports upward.

    errors  <  atomic, resources  <  ko/  <  kernel/  <  intercept/, checks/  <  vm/  <  faults/  <  packs/  <  entry points

A module may import its own folder and any lower layer, never a higher one or a
sibling of its own height; no two modules import each other, directly or round
a longer circle. Imports inside functions count too: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "kedr_build"
# Height of each folder (or top-level module) of kedr_build.
LAYERS = {
    "errors": 0, "atomic": 1, "resources": 1, "interrupt": 1, "filelock": 1, "buildlock": 2,
    "ko": 3,
    "kernel": 4,
    "intercept": 5, "checks": 5, "devices": 5,
    "vm": 6,
    "targets": 7,
    "faults": 7,
    "packs": 8,
    "config": 9, "cli": 10, "commands": 10, "checkjob": 10, "__main__": 11, "__init__": 11,
}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(REPO).with_suffix("").parts): p
            for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str) -> set[str]:
    out: set[str] = set()
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.startswith("kedr_build"):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("kedr_build"))
    return out


def _unit(module: str) -> str:
    """The folder (or top-level module) a kedr_build module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: {i for i in _imports(path, name) if i in mods and i != name}
            for name, path in mods.items()}


def test_every_folder_has_a_layer() -> None:
    assert {_unit(m) for m in _modules()} <= set(LAYERS), \
        "a new folder or top-level module of kedr_build needs a place in LAYERS"


def test_nothing_imports_upward() -> None:
    wrong = []
    for name, deps in _graph().items():
        for dep in deps:
            a, b = _unit(name), _unit(dep)
            if a != b and LAYERS[b] >= LAYERS[a]:
                wrong.append(f"{name} imports {dep} ({b} is not below {a})")
    assert not wrong, "\n".join(sorted(wrong))


def test_lower_layers_never_import_intercept_or_vm() -> None:
    graph = _graph()
    for name, deps in graph.items():
        if _unit(name) in ("kernel", "ko"):
            assert not {d for d in deps if _unit(d) in ("intercept", "vm")}, name


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
