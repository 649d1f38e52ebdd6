"""Imports a splat stack deeper than Cycles allows through ``blender_data.import_result``: its warning.

Parameters: ``zip``, ``folder``. Used by tests/test_addon_render_fidelity.py.
"""

import importlib

import bpy
from script_io import EXTENSION_MODULE, emit_result, install_extension, params

p = params()
install_extension(p["zip"])
blender_data = importlib.import_module(f"{EXTENSION_MODULE}.blender_data")
result = blender_data.import_result(bpy.context, p["folder"], splat_mode=blender_data.SplatMode.POINTS)
emit_result({"warning": result.warning, "bounces": bpy.context.scene.cycles.transparent_max_bounces})
