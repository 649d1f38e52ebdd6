"""Dependencies point one way: the module graph of engine/ and addon/ has no cycles.

Every module is parsed with ``ast`` (nothing is imported), and every import counts, including those inside
functions: a function-level import only hides a cycle, it does not remove it. ``from package import name``
is an edge to ``package.name`` when that is a module, else to ``package``. The add-on's bundled copy of the
engine (``from .engine.x import y``) is the engine's own module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_names(package: str) -> dict[str, Path]:
    """Dotted module name -> file for every module of a top-level package of the repository."""
    modules = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) import ``from <level dots><target>``."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    name = ".".join(base + ([target] if target else []))
    # the add-on bundles the engine as its subpackage: addon.engine.x is engine.x
    return name.removeprefix("addon.") if name.startswith("addon.engine") else name


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            # ``import a.b.c`` loads a.b.c; the longest known prefix is the module meant
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {**module_names("engine"), **module_names("addon")}
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """One cycle through ``nodes`` (as a list of modules, first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in nodes:
                continue
            if state.get(succ) == 1:
                return path[path.index(succ) :] + [succ]
            if succ not in state and (cycle := visit(succ)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(nodes):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    # a function-level import (engine.cli imports its commands lazily by name, so take a real one)
    assert "engine.pipeline.vist3a" in graph["engine.pipeline.cli"]
    # a relative import inside the engine, and the add-on's imports of its bundled engine
    assert "engine.worker.protocol" in graph["engine.worker.client"]
    assert "engine.worker.protocol" in graph["addon.client"]
    # the cycle finder finds a planted cycle and prints it in order
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, {"a", "b", "c"}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}, {"a", "b", "c"}) is None


def test_engine_has_no_import_cycles():
    graph = import_graph()
    engine = {name for name in graph if name.split(".")[0] == "engine"}
    cycle = find_cycle(graph, engine)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_addon_has_no_import_cycles():
    graph = import_graph()
    addon = {name for name in graph if name.split(".")[0] == "addon"}
    cycle = find_cycle(graph, addon)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_engine_modules_the_addon_imports_use_relative_imports():
    """Inside Blender the engine is the add-on's subpackage (``<extension>.engine``): every engine module the
    add-on reaches must import its siblings relatively, or it fails there with "No module named 'engine'"."""
    graph = import_graph()
    reached: set[str] = set()
    todo = [m for name, targets in graph.items() if name.split(".")[0] == "addon" for m in targets]
    while todo:
        module = todo.pop()
        if module.split(".")[0] == "engine" and module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert {"engine.pipeline.settings", "engine.worker.protocol", "engine.io"} <= reached
    modules = {**module_names("engine")}
    absolute = []
    for name in sorted(reached):
        tree = ast.parse(modules[name].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "engine":
                absolute.append(f"{name}: from {node.module} import ...")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "engine" for a in node.names):
                absolute.append(f"{name}: import {', '.join(a.name for a in node.names)}")
    assert not absolute, "absolute engine imports in modules the add-on loads: " + "; ".join(absolute)
