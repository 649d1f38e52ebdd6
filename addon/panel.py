"""The "VIST3A" tab of the 3D View sidebar: the Generate, Import and Render panels.

One panel per task, all in the same tab and ordered by ``bl_order``: Generate (prompt, settings,
progress, history) first, then Import and Render. Panels only draw: they read the settings, the
session state (``state``) and call operators.
"""

import bpy

from . import blender_data, generate_operators, generation, generation_request, operators, preferences
from .state import PREVIEWS, SESSION, STATUS
from .ui_text import wrapped_label

HISTORY_ROWS = 8


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
        imported = [obj for obj in context.scene.objects if obj.get(blender_data.KIND_PROPERTY) in ("splats", "points")]
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
            reason = (
                "Choose a camera above to render from"
                if blender_data.generated_cameras(context.scene)
                else "Import a result with cameras first (Import Result… or Generate)"
            )
            wrapped_label(layout, context, reason, icon="INFO")


class VIST3A_PT_generate(_VIST3APanel, bpy.types.Panel):
    bl_idname = "VIST3A_PT_generate"
    bl_label = "Generate"
    bl_order = 0

    def draw(self, context):
        settings = context.scene.vist3a_generate
        layout = self.layout
        column = layout.column()
        column.enabled = not SESSION.busy
        column.prop(settings, "prompt")
        column.prop(settings, "negative_prompt")
        row = column.row(align=True)
        row.prop(settings, "seed")
        row.prop(settings, "random_seed", text="", icon="FILE_REFRESH")
        row.operator(generate_operators.VIST3A_OT_random_seed.bl_idname, text="", icon="MOD_NOISE")
        self.draw_model_values(context, column, settings)
        column.prop(settings, "output_kind")
        column.prop(settings, "splat_mode")

        reason = generation.why_not_generate(context)
        row = layout.row()
        row.scale_y = 1.4
        row.enabled = not reason
        row.operator(generate_operators.VIST3A_OT_generate.bl_idname, icon="PLAY")
        if reason and not SESSION.busy:
            wrapped_label(layout, context, reason, icon="INFO")

        job = SESSION.job
        if job is not None:
            layout.progress(factor=job.fraction, type="BAR", text=job.label)
            if PREVIEWS.icon_id:
                layout.template_icon(icon_value=PREVIEWS.icon_id, scale=8.0)
            layout.operator(generate_operators.VIST3A_OT_cancel_generation.bl_idname, icon="CANCEL")
        STATUS.refresh(context)
        if STATUS.message:
            box = layout.box()
            wrapped_label(box, context, STATUS.message, icon="ERROR" if STATUS.level == "ERROR" else "INFO")
            if STATUS.hint:
                wrapped_label(box, context, STATUS.hint)
        if SESSION.worker_running and not SESSION.busy:
            layout.operator(generate_operators.VIST3A_OT_release_engine.bl_idname, icon="UNLINKED")

        layout.prop(settings, "show_history", icon="TRIA_DOWN" if settings.show_history else "TRIA_RIGHT", emboss=False)
        if settings.show_history:
            self.draw_history(context, layout)

    def draw_model_values(self, context, layout, settings):
        """ "Model Defaults" and either the model's values (read from its manifest) or the fields to set."""
        layout.prop(settings, "use_model_defaults")
        if settings.use_model_defaults:
            try:
                defaults = preferences.get(context).model_defaults()
            except preferences.ModelConfigError:
                wrapped_label(layout, context, "The model's own resolution, frames and steps", icon="INFO")
                return
            text = generation_request.summary(generation_request.model_panel_values(defaults))
            wrapped_label(layout, context, text, icon="INFO")
            return
        layout.prop(settings, "steps")
        layout.prop(settings, "guidance")
        layout.prop(settings, "frames")
        row = layout.row(align=True)
        row.prop(settings, "width")
        row.prop(settings, "height")

    def draw_history(self, context, layout):
        if STATUS.history_root is None:
            generation.refresh_history(context)  # first look: the scan is cheap (one metadata file per run)
        box = layout.box()
        row = box.row()
        row.label(text=f"{len(STATUS.runs)} generation(s)")
        row.operator(generate_operators.VIST3A_OT_refresh_history.bl_idname, text="", icon="FILE_REFRESH")
        for run in STATUS.runs[:HISTORY_ROWS]:
            row = box.row()
            row.label(text=run.label)
            op = row.operator(generate_operators.VIST3A_OT_import_run.bl_idname, text="", icon="IMPORT")
            op.directory = run.path
        for problem in STATUS.history_problems[:3]:
            wrapped_label(box, context, problem, icon="ERROR")
