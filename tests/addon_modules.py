"""Loading the add-on's bpy-free modules in plain pytest, as Blender would load them but without bpy.

The modules are loaded as part of a stand-in for the installed extension package: ``addon/`` with the
project's ``engine`` as its bundled ``engine`` subpackage (the same module objects, aliased, so no second
copy replaces ``engine.io`` for other tests), without running the add-on's ``__init__`` (which needs bpy).
"""

import importlib
import sys
import types
from pathlib import Path

import engine
import engine.io
import engine.io.run_format

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vist3a_addon_without_blender"


def load_addon_module(name: str) -> types.ModuleType:
    """The add-on module ``addon/<name>.py`` (bpy-free ones only), imported inside the stand-in package."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(ROOT / "addon")]
        sys.modules[PACKAGE] = package
        sys.modules[f"{PACKAGE}.engine"] = engine
        sys.modules[f"{PACKAGE}.engine.io"] = engine.io
        sys.modules[f"{PACKAGE}.engine.io.run_format"] = engine.io.run_format
    return importlib.import_module(f"{PACKAGE}.{name}")
