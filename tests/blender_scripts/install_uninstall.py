"""Install, register, disable and uninstall the extension. Parameters: ``zip``. tests/test_addon_blender.py."""

import os

import bpy
from script_io import EXTENSION_MODULE as MODULE
from script_io import emit_result, install_extension, params


def import_menu_has_entry():
    return any(
        getattr(f, "__name__", "") == "menu_import" for f in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
    )


install_extension(params()["zip"])
out = {"enabled": MODULE in bpy.context.preferences.addons}
out["panels"] = [name for name in ("VIST3A_PT_import", "VIST3A_PT_render") if hasattr(bpy.types, name)]
out["operators"] = [name for name in ("import_result", "render_camera") if hasattr(bpy.types, "VIST3A_OT_" + name)]
prefs = bpy.context.preferences.addons[MODULE].preferences
out["preferences"] = [type(prefs).__name__, prefs.engine_python]
out["import_menu"] = import_menu_has_entry()
out["scene_settings"] = hasattr(bpy.context.scene, "vist3a")

bpy.ops.preferences.addon_disable(module=MODULE)
out["after_disable"] = {
    "enabled": MODULE in bpy.context.preferences.addons,
    "panel": hasattr(bpy.types, "VIST3A_PT_import"),
    "operator": hasattr(bpy.types, "VIST3A_OT_import_result"),
    "scene_settings": hasattr(bpy.types.Scene, "vist3a"),
    "import_menu": import_menu_has_entry(),
}
repo = next(r for r in bpy.context.preferences.extensions.repos if r.module == "user_default")
outcome = bpy.ops.extensions.package_uninstall(repo_directory=repo.directory, pkg_id="vist3a")
out["uninstall"] = sorted(outcome)
out["files_left"] = os.path.exists(os.path.join(repo.directory, "vist3a"))
emit_result(out)
