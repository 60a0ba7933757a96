"""The import graph of ``benchmark/`` and ``plugins/`` has no cycles.

Read with ``ast``, nothing is imported. An edge A → B is an ``import``/``from`` of B in A; a string
constant naming a module (``"poisonbench.cli.run:run_command"``, lazy re-export tables) counts as
an import where it is used. Edges at module level must form no cycle at all (such a cycle breaks
depending on which module is imported first). Counting imports inside functions too, the cycles
that exist are listed in ``KNOWN`` — each one is a lazy back-reference of a module being split —
and the test fails on any new one; remove an entry once its cycle is gone.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (("benchmark", "poisonbench"), ("plugins", "poisonbench.plugins"))
KNOWN: list[set[str]] = [  # function-level cycles present when this test was written
    {"poisonbench.api", "poisonbench.catalog", "poisonbench.crafting.surrogate",
     "poisonbench.crafting.surrogate_params", "poisonbench.crafting.surrogate_pool",
     "poisonbench.data", "poisonbench.training.defended", "poisonbench.training.trainer"},
    {"poisonbench.suite", "poisonbench.suite.defense_checks"},
    {"poisonbench.results", "poisonbench.results.speed"},
]


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _owner(name: str, mods: dict[str, Path]) -> str | None:
    """The project module ``name`` is (or lies in); None outside the project."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, mods: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(modules ``module`` imports at module level, those it imports inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top: set[str] = set()
    lazy: set[str] = set()
    todo: list[tuple[ast.AST, bool]] = [(ast.parse(path.read_text(), filename=str(path)), False)]
    while todo:
        node, inside = todo.pop()
        for child in ast.iter_child_nodes(node):
            deeper = inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.If) and getattr(child.test, "id", "") == "TYPE_CHECKING":
                continue
            targets: list[str] = []
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                named = child.value.split(":")[0]
                if named in mods:
                    lazy.add(named)
            elif isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package
                    for _ in range(child.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                subs = [f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in mods]
                # `from pkg import sub` imports the submodule; the parents are implied everywhere
                targets = subs + ([base] if len(subs) < len(child.names) else [])
            for target in targets:
                found = _owner(target, mods) if target.startswith("poisonbench") else None
                if found:
                    (lazy if deeper else top).add(found)
            todo.append((child, deeper))
    return top - {module}, lazy - {module}


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level edges, edges inside functions) between the project's modules."""
    mods = modules()
    top: dict[str, set[str]] = {}
    lazy: dict[str, set[str]] = {}
    for module, path in mods.items():
        top[module], lazy[module] = _imports(module, path, mods)
    return top, lazy


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_graph_is_read():
    top, _ = import_graph()
    assert "poisonbench.runner" in top["poisonbench.executors.local"]


def test_no_module_level_import_cycle():
    top, _ = import_graph()
    assert cycles(top) == []


def test_no_new_cycle_through_function_level_imports():
    top, lazy = import_graph()
    both = {m: top[m] | lazy[m] for m in top}
    new = [sorted(c) for c in cycles(both) if not any(c <= known for known in KNOWN)]
    assert new == [], f"import cycles (counting imports inside functions): {new}"


def test_the_detector_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
