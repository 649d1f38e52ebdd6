"""The add-on's module structure, checked statically (ast; nothing is imported, so no Blender needed).

* Dependencies between the add-on's modules point one way: no import cycles, counting imports inside
  functions too.
* The bpy-free layers stay bpy-free (they are unit-tested without Blender).
* Every operator the UI names by its ``bl_idname`` string exists.
"""

import ast
from pathlib import Path

ADDON = Path(__file__).resolve().parents[1] / "addon"
PACKAGE = "addon"

# Modules that must never import bpy (directly or through another add-on module).
BPY_FREE = {"conversions", "ui_text", "history", "reading", "reporting", "client", "setup_env", "generation_request"}


def _module_name(path: Path) -> str:
    return "__init__" if path.name == "__init__.py" else path.stem


def _imports(path: Path) -> tuple[set, set]:
    """(add-on modules, other top-level modules) imported anywhere in ``path``, functions included."""
    own, other = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            other.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                other.add(node.module.split(".")[0])
            elif node.module is None:  # from . import a, b
                own.update(alias.name for alias in node.names)
            else:  # from .a import x / from .engine.io import y
                head = node.module.split(".")[0]
                (own if (ADDON / f"{head}.py").is_file() else other).add(head)
    return own, other


def _graph() -> dict:
    return {_module_name(path): _imports(path) for path in sorted(ADDON.glob("*.py"))}


def _cycle(graph: dict):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, stack):
        state[module] = "active"
        for target in sorted(graph[module][0]):
            if target not in graph:
                continue
            if state.get(target) == "active":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                found = visit(target, stack + [target])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in graph:
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_addon_modules_have_no_import_cycles():
    graph = _graph()
    assert {"reading", "blender_data", "state", "properties", "operators", "panel"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("def late():\n    from .c import thing\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    global ADDON
    real, ADDON = ADDON, tmp_path
    try:
        cycle = _cycle({_module_name(p): _imports(p) for p in tmp_path.glob("*.py")})
    finally:
        ADDON = real
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_bpy_free_layers_import_no_bpy_even_indirectly():
    graph = _graph()
    for module in BPY_FREE:
        seen, todo = set(), [module]
        while todo:
            current = todo.pop()
            if current in seen or current not in graph:
                continue
            seen.add(current)
            own, other = graph[current]
            assert not {"bpy", "bpy_extras", "mathutils"} & other, f"{module} reaches Blender through {current}"
            todo.extend(own)


def test_operators_named_by_the_ui_exist():
    defined, named = set(), set()
    for path in ADDON.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "bl_idname" for t in node.targets):
                if isinstance(node.value, ast.Constant):
                    defined.add(node.value.value)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "operator" and node.args:
                if isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("vist3a."):
                    named.add(node.args[0].value)
    assert {"vist3a.setup_engine", "vist3a.check_engine"} <= named
    assert named <= defined, sorted(named - defined)


def _top_level_names(tree: ast.Module) -> set:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def test_names_used_across_addon_modules_exist():
    """``module.name`` for an add-on module imported with ``from . import module``: ``name`` is defined there
    (drawing code, which no headless test runs, names operators and helpers this way)."""
    trees = {_module_name(path): ast.parse(path.read_text()) for path in ADDON.glob("*.py")}
    defined = {module: _top_level_names(tree) for module, tree in trees.items()}
    missing, checked = [], 0
    for module, tree in trees.items():
        siblings = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
            for alias in node.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in siblings:
                if node.value.id in defined:
                    checked += 1
                    if node.attr not in defined[node.value.id]:
                        missing.append(f"{module}:{node.lineno}: {node.value.id}.{node.attr}")
    assert checked > 50
    assert not missing, missing
