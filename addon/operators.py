"""Import and render operators: thin wrappers that call the reading layer, blender_data and rendering,
and report the outcome to the user.

Paths are resolved here, at the operator boundary (Blender's ``//`` via ``blender_data.absolute_path``),
before the reading layer sees them. No operator lets an exception through to the user: an unexpected one
becomes a one-line error report (``reporting.unexpected_error``), and ``blender_data.build_result`` has
removed whatever it had created by then, so the scene is as before.
"""

import os

import bpy
from bpy_extras.io_utils import ImportHelper

from . import blender_data, reading, rendering
from .properties import splat_mode_items
from .reporting import unexpected_error


class VIST3A_OT_import_result(bpy.types.Operator, ImportHelper):
    """Import a VIST3A result folder (scene.ply + cameras.json), Gaussian splats (standard or compressed PLY, .splat, .spz), a point PLY, or a cameras JSON"""

    bl_idname = "vist3a.import_result"
    bl_label = "Import VIST3A Result"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".ply"
    filter_glob: bpy.props.StringProperty(default="*.ply;*.splat;*.spz;*.json", options={"HIDDEN"})
    directory: bpy.props.StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})

    splat_mode: bpy.props.EnumProperty(name="Splats As", items=splat_mode_items)
    z_up: bpy.props.BoolProperty(
        name="Z Up",
        description="Turn the engine's OpenCV world (y down, z forward) upright, with Blender's Z up",
        default=True,
    )
    set_scene_camera: bpy.props.BoolProperty(
        name="Use First Camera",
        description="Make the first imported camera the scene camera, with its resolution",
        default=True,
    )
    skip_invalid: bpy.props.BoolProperty(
        name=reading.SKIP_INVALID_LABEL,
        description=(
            "Leave out splats or points whose values are not numbers or are out of range, and say how many; "
            "when off, such a file is not imported"
        ),
        default=True,
    )
    point_radius: bpy.props.FloatProperty(
        name="Point Radius",
        description="Radius of imported coloured points (0: from the point spacing)",
        default=0.0,
        min=0.0,
        subtype="DISTANCE",
    )

    def source_path(self) -> str:
        """The chosen file, or the folder when no file name was given (a result folder)."""
        if self.filepath and not os.path.isdir(self.filepath) and os.path.basename(self.filepath):
            return self.filepath
        return self.directory or self.filepath

    def execute(self, context):
        path = self.source_path()
        if not path:
            self.report({"ERROR"}, "Choose a VIST3A result folder or a .ply / .json file")
            return {"CANCELLED"}
        try:
            loaded = reading.load_result(blender_data.absolute_path(path), skip_invalid=self.skip_invalid)
            result = blender_data.build_result(
                context,
                loaded,
                splat_mode=blender_data.SplatMode(self.splat_mode),
                z_up=self.z_up,
                set_scene_camera=self.set_scene_camera,
                point_radius=self.point_radius,
            )
        except (reading.ResultImportError, ValueError, RuntimeError, OSError) as exc:
            self.report({"ERROR"}, f"VIST3A import failed: {exc}")
            return {"CANCELLED"}
        except Exception as exc:  # never a traceback for the user
            return unexpected_error(self, "import", exc)
        blender_data.preselect_render_camera(context, result)
        if result.warning:
            self.report({"WARNING"}, result.warning)
        parts = []
        if result.geometry is not None:
            kind = "splats" if loaded.gaussians is not None else "points"
            parts.append(f"{len(result.geometry.data.points)} {kind}")
        parts.append(f"{len(result.cameras)} camera(s)")
        message = f"Imported {', '.join(parts)} into '{result.collection.name}'"
        notes = reading.import_notes(loaded)
        self.report({"WARNING"} if notes else {"INFO"}, "; ".join([message, *notes]))
        return {"FINISHED"}


class VIST3A_OT_render_camera(bpy.types.Operator):
    """Render the scene with Cycles from a generated camera and save the image as PNG"""

    bl_idname = "vist3a.render_camera"
    bl_label = "Render from Camera"
    bl_options = {"REGISTER"}

    camera_name: bpy.props.StringProperty(
        name="Camera", description="Camera object to render from (empty: the one chosen in the VIST3A panel)"
    )
    samples: bpy.props.IntProperty(name="Samples", default=rendering.DEFAULT_SAMPLES, min=1, soft_max=1024)
    filepath: bpy.props.StringProperty(
        name="Output", description="PNG to write (empty: renders/<camera>.png)", subtype="FILE_PATH"
    )
    show: bpy.props.BoolProperty(name="Show Result", description="Open the render in a window", default=True)
    denoise: bpy.props.BoolProperty(
        name="Denoise", description="Use Cycles' denoiser (it smooths splat detail away)", default=False
    )

    def execute(self, context):
        scene = context.scene
        if self.camera_name:
            camera = bpy.data.objects.get(self.camera_name)
        else:
            camera = scene.vist3a.render_camera or scene.camera
        if camera is None or camera.type != "CAMERA":
            self.report({"ERROR"}, f"No camera to render from ({self.camera_name or 'none chosen'})")
            return {"CANCELLED"}
        try:
            path = rendering.render_from_camera(scene, camera, self.filepath, self.samples, self.denoise)
        except (ValueError, RuntimeError, OSError) as exc:
            self.report({"ERROR"}, f"VIST3A render failed: {exc}")
            return {"CANCELLED"}
        except Exception as exc:  # never a traceback for the user
            return unexpected_error(self, "render", exc)
        if self.show and not bpy.app.background:
            bpy.ops.render.view_show("INVOKE_DEFAULT")
        self.report({"INFO"}, f"Rendered {camera.name} to {path}")
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(VIST3A_OT_import_result.bl_idname, text="VIST3A Result (.ply, .splat, .spz, folder)")
