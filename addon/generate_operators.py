"""Generate-panel operators: Generate, Cancel, Release Engine, Random Seed, Import Generation, Refresh History.

They call the generation flow (``generation``) and report to the panel (``state.STATUS``) and the user.
``vist3a.import_run`` resolves its folder (Blender's ``//``) before the reading layer sees it.
"""

import random

import bpy

from . import blender_data, client, generation
from .engine.pipeline.settings import MAX_SEED
from .properties import MAX_SEED_UI
from .reporting import first_line, unexpected_error
from .state import PREVIEWS, SESSION, STATUS


class VIST3A_OT_generate(bpy.types.Operator):
    """Generate a 3D scene from the prompt with the VIST3A engine"""

    bl_idname = "vist3a.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        reason = generation.why_not_generate(context)
        if reason:
            cls.poll_message_set(reason)
        return not reason

    def execute(self, context):
        try:
            generation.start_generation(context)
        except generation.ModelMissing as exc:
            STATUS.report("ERROR", str(exc), still_true=generation.model_still_missing)
            self.report({"ERROR"}, f"VIST3A: {exc}")
            return {"CANCELLED"}
        except (ValueError, client.EngineUnavailable, RuntimeError, OSError) as exc:
            STATUS.report("ERROR", str(exc))
            self.report({"ERROR"}, f"VIST3A: {exc}")
            return {"CANCELLED"}
        except Exception as exc:  # never a traceback for the user
            STATUS.report("ERROR", first_line(exc))
            return unexpected_error(self, "Generate", exc)
        if not bpy.app.background:
            bpy.app.timers.register(generation.timer, first_interval=generation.TIMER_INTERVAL)
        return {"FINISHED"}


class VIST3A_OT_cancel_generation(bpy.types.Operator):
    """Stop the running generation (the scene stays as it is)"""

    bl_idname = "vist3a.cancel_generation"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return SESSION.busy

    def execute(self, context):
        SESSION.cancel()
        return {"FINISHED"}


class VIST3A_OT_release_engine(bpy.types.Operator):
    """Stop the engine worker, freeing its models and GPU memory (the next Generate starts it again)"""

    bl_idname = "vist3a.release_engine"
    bl_label = "Release Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if SESSION.busy:
            cls.poll_message_set("Cancel the running generation first")
            return False
        return SESSION.worker_running

    def execute(self, context):
        SESSION.close()
        PREVIEWS.clear()
        self.report({"INFO"}, "VIST3A engine released")
        return {"FINISHED"}


class VIST3A_OT_random_seed(bpy.types.Operator):
    """Draw a new random seed"""

    bl_idname = "vist3a.random_seed"
    bl_label = "Random Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = context.scene.vist3a_generate
        settings.seed = random.randint(0, min(MAX_SEED, MAX_SEED_UI))
        settings.random_seed = False
        return {"FINISHED"}


class VIST3A_OT_import_run(bpy.types.Operator):
    """Import a generation's run folder into a new collection named from its prompt"""

    bl_idname = "vist3a.import_run"
    bl_label = "Import Generation"
    bl_options = {"REGISTER", "UNDO"}

    directory: bpy.props.StringProperty(name="Run Folder", subtype="DIR_PATH")

    def execute(self, context):
        settings = context.scene.vist3a_generate
        try:
            result = generation.import_run(context, blender_data.absolute_path(self.directory), settings.splat_mode)
        except (ValueError, RuntimeError, OSError) as exc:
            STATUS.report("ERROR", f"Import failed: {exc}")
            self.report({"ERROR"}, f"VIST3A import failed: {exc}")
            return {"CANCELLED"}
        except Exception as exc:  # never a traceback for the user
            STATUS.report("ERROR", f"Import failed: {first_line(exc)}")
            return unexpected_error(self, "import", exc)
        STATUS.last_collection = result.collection.name
        if result.warning:
            self.report({"WARNING"}, result.warning)
        if STATUS.level == "ERROR" and STATUS.message.startswith("Import failed"):
            STATUS.clear()  # the earlier failure is no longer the latest word
        self.report({"INFO"}, f"Imported '{result.collection.name}'")
        return {"FINISHED"}


class VIST3A_OT_refresh_history(bpy.types.Operator):
    """Scan the outputs folder for past generations"""

    bl_idname = "vist3a.refresh_history"
    bl_label = "Refresh History"
    bl_options = {"REGISTER"}

    def execute(self, context):
        generation.refresh_history(context, force=True)
        return {"FINISHED"}
