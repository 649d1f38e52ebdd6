"""VIST3A text-to-3D: Blender side (bpy + numpy only; all model work runs in the engine worker)."""

import bpy

from . import generate_ui, operators, panel, preferences

_classes = (*preferences.classes, *operators.classes, *panel.classes, *generate_ui.classes)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)
    panel.register_properties()
    generate_ui.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    generate_ui.unregister_properties()
    panel.unregister_properties()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
