"""VIST3A text-to-3D: Blender side (bpy + numpy only; all model work runs in the engine worker)."""

import bpy

from . import operators, panel


class VIST3AAddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_python: bpy.props.StringProperty(
        name="Engine Python",
        description="Python interpreter of an environment that has the VIST3A engine's packages (torch, diffusers)",
        subtype="FILE_PATH",
        default="",
    )

    def draw(self, context):
        self.layout.prop(self, "engine_python")


_classes = (VIST3AAddonPreferences, *operators.classes, *panel.classes)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)
    panel.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    panel.unregister_properties()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
