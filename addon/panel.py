"""The "VIST3A" tab of the 3D View sidebar.

One panel per task, all in the same tab and ordered by ``bl_order``: import and render now; the
generation panel (prompt, Generate, progress) takes order 0 and goes above them.
"""

import bpy

from . import importer, operators, rendering


def _is_generated_camera(_settings, obj):
    return obj.type == "CAMERA" and obj.get(importer.KIND_PROPERTY) == "camera"


class VIST3ASceneSettings(bpy.types.PropertyGroup):
    """Per-scene panel state (stored in the .blend as ``scene.vist3a``)."""

    render_camera: bpy.props.PointerProperty(
        name="Camera",
        description="Generated camera to render from",
        type=bpy.types.Object,
        poll=_is_generated_camera,
    )
    render_samples: bpy.props.IntProperty(
        name="Samples", default=rendering.DEFAULT_SAMPLES, min=1, soft_max=1024, description="Cycles samples"
    )
    render_path: bpy.props.StringProperty(
        name="Output",
        description="PNG to write (empty: renders/<camera>.png next to the .blend)",
        subtype="FILE_PATH",
    )


class _VIST3APanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "VIST3A"


class VIST3A_PT_import(_VIST3APanel, bpy.types.Panel):
    bl_idname = "VIST3A_PT_import"
    bl_label = "Import"
    bl_order = 10

    def draw(self, context):
        layout = self.layout
        layout.operator(operators.VIST3A_OT_import_result.bl_idname, text="Import Result…", icon="IMPORT")
        imported = [obj for obj in context.scene.objects if obj.get(importer.KIND_PROPERTY) in ("splats", "points")]
        if imported:
            column = layout.column(align=True)
            for obj in imported:
                column.label(text=f"{obj.name}: {len(obj.data.points)} points", icon="OUTLINER_OB_POINTCLOUD")


class VIST3A_PT_render(_VIST3APanel, bpy.types.Panel):
    bl_idname = "VIST3A_PT_render"
    bl_label = "Render"
    bl_order = 20

    def draw(self, context):
        settings = context.scene.vist3a
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "render_camera")
        layout.prop(settings, "render_samples")
        layout.prop(settings, "render_path")
        camera = settings.render_camera
        row = layout.row()
        row.enabled = camera is not None
        op = row.operator(operators.VIST3A_OT_render_camera.bl_idname, icon="RENDER_STILL")
        op.camera_name = camera.name if camera else ""
        op.samples = settings.render_samples
        op.filepath = settings.render_path
        if camera is None:
            from .generate_ui import wrapped_label  # late: generate_ui imports this module's neighbours

            reason = (
                "Choose a camera above to render from"
                if importer.generated_cameras(context.scene)
                else "Import a result with cameras first (Import Result… or Generate)"
            )
            wrapped_label(layout, context, reason, icon="INFO")


classes = (VIST3ASceneSettings, VIST3A_PT_import, VIST3A_PT_render)


def register_properties():
    bpy.types.Scene.vist3a = bpy.props.PointerProperty(type=VIST3ASceneSettings)


def unregister_properties():
    del bpy.types.Scene.vist3a
