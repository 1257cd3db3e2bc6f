"""No import cycle inside ``skmoe/``: every ``import`` (module level or inside a function) is an
edge, and the module graph must be acyclic, so that lower layers never need higher ones.

Imports under ``if TYPE_CHECKING:`` are no edges: they never run (``skmoe/__init__.py`` names
its lazily imported exports there for type checkers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skmoe"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those inside an ``if TYPE_CHECKING:`` block."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                  "typing.TYPE_CHECKING"):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return out


def module_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> modules of the package it imports`` (absolute and relative imports, at any
    depth of the file: function-level imports count)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module
                           for a in node.names]
            for target in targets:
                while target and target not in files:  # `import skmoe.x.y` -> deepest module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """One concrete cycle through the component, for the message: a -> b -> ... -> a."""
    start = min(members)
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        back = [n for n in nxt if n == start]
        if back and len(path) > 1:
            return [*path, start]
        fresh = [n for n in nxt if n not in seen]
        if not fresh:
            loop_to = next(n for n in nxt if n in seen)
            return [*path[path.index(loop_to):], loop_to]
        path.append(fresh[0])
        seen.add(fresh[0])


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(module_graph())
    assert not cycles, "import cycles inside skmoe/:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_finds_a_function_level_cycle(tmp_path):
    pkg = tmp_path / "skmoe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import thing\n")
    (pkg / "c.py").write_text("import skmoe.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from .a import thing\nelse:\n    from .c import other\n")
    graph = module_graph(pkg)
    assert graph["skmoe.a"] == {"skmoe.sub.b"} and graph["skmoe.sub.b"] == {"skmoe.a"}
    assert graph["skmoe.c"] == {"skmoe.a"}
    assert graph["skmoe.d"] == {"skmoe.c"}  # the TYPE_CHECKING import is no edge
    assert find_cycles(graph) == [["skmoe.a", "skmoe.sub.b", "skmoe.a"]]


@pytest.mark.parametrize("edge", [("skmoe.estimator", "skmoe.similarity"),
                                  ("skmoe.engine.runner", "skmoe.embedding")])
def test_lower_layers_do_not_import_higher_ones(edge):
    low, high = edge
    assert high not in module_graph()[low]
