"""Preferences operators: Set up Engine, Download Models, Cancel (either job) and Check Engine.

The job runs in the background (``setup_env.SetupJob``, kept in ``state.SETUP``); interactively a
``bpy.app.timers`` timer (``setup_timer``) follows it and redraws the preferences.
"""

import os
from typing import Optional

import bpy

from . import preferences, setup_env
from .engine.pipeline.settings import ModelBundle, ModelBundleError, ModelNotFoundError
from .state import SESSION, SETUP


class VIST3A_OT_setup_engine(bpy.types.Operator):
    """Create the engine's Python environment in the add-on's user folder and install its packages (downloads several GB)"""

    bl_idname = "vist3a.setup_engine"
    bl_label = "Set up Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if not bpy.app.online_access:
            cls.poll_message_set("Allow online access in Preferences > System > Network first")
            return False
        if SESSION.busy:
            cls.poll_message_set("A generation is running")
            return False
        return SETUP.job is None or SETUP.job.finished

    def execute(self, context):
        SESSION.close()  # the worker may run from the environment that is about to change
        env_dir = preferences.get(context).managed_env_dir()
        try:
            SETUP.job = setup_env.start_setup(env_dir, os.path.join(preferences.extension_dir(), "pyproject.toml"))
        except setup_env.SetupError as exc:
            self.report({"ERROR"}, f"VIST3A: {exc}")
            return {"CANCELLED"}
        if not bpy.app.background:
            bpy.app.timers.register(setup_timer, first_interval=0.5)
        return {"FINISHED"}


def setup_timer() -> Optional[float]:
    """Follows the preferences' background job and redraws the preferences until it ends."""
    job = SETUP.job
    if job is None:
        return None
    job.poll()
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()
    return 0.5 if not job.finished else None


class VIST3A_OT_download_models(bpy.types.Operator):
    """Download the model's hub parts (the Wan pipeline) into the hub cache now, with progress, instead of on first use"""

    bl_idname = "vist3a.download_models"
    bl_label = "Download Models"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if not bpy.app.online_access:
            cls.poll_message_set("Online access is off (Preferences > System > Network)")
            return False
        if not preferences.get(context).resolved_python():
            cls.poll_message_set("Set up the engine first")
            return False
        return SETUP.job is None or SETUP.job.finished

    def execute(self, context):
        prefs = preferences.get(context)
        try:
            bundle = ModelBundle.load(prefs.model_reference())
        except (preferences.ModelConfigError, ModelBundleError, ModelNotFoundError) as exc:
            self.report({"ERROR"}, f"VIST3A: {exc}")
            return {"CANCELLED"}
        if not bundle.wan_is_hub_id:
            self.report({"INFO"}, "VIST3A: every part of the model is a local file; nothing to download")
            return {"CANCELLED"}
        step = setup_env.download_step(prefs.resolved_python(), bundle.wan, bundle.wan_revision or "")
        SETUP.job = setup_env.SetupJob([step]).start()
        if not bpy.app.background:
            bpy.app.timers.register(setup_timer, first_interval=0.5)
        return {"FINISHED"}


class VIST3A_OT_cancel_setup(bpy.types.Operator):
    """Stop setting up the engine environment or downloading models (what was left unfinished stays incomplete)"""

    bl_idname = "vist3a.cancel_setup"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    def execute(self, context):
        if SETUP.job is not None:
            SETUP.job.cancel()
        return {"FINISHED"}


class VIST3A_OT_check_engine(bpy.types.Operator):
    """Report which engine packages the engine Python has and which device it sees"""

    bl_idname = "vist3a.check_engine"
    bl_label = "Check Engine"
    bl_options = {"REGISTER"}

    def execute(self, context):
        python = preferences.get(context).resolved_python()
        if not python:
            SETUP.check_lines = ["No engine Python: click 'Set up engine' or set Engine Python"]
            self.report({"ERROR"}, SETUP.check_lines[0])
            return {"CANCELLED"}
        try:
            report = setup_env.check_engine(python)
        except setup_env.SetupError as exc:
            SETUP.check_lines = [str(exc)]
            self.report({"ERROR"}, f"VIST3A: {exc}")
            return {"CANCELLED"}
        packages = ", ".join(f"{name} {version}" for name, version in report["packages"].items() if version)
        SETUP.check_lines = [f"Python {report['python_version']}: {packages}", f"Device: {report['device']}"]
        if report["missing"]:
            SETUP.check_lines.append(f"Missing: {', '.join(report['missing'])}")
            self.report({"WARNING"}, f"VIST3A engine lacks {', '.join(report['missing'])}")
        else:
            self.report({"INFO"}, f"VIST3A engine ready on {report['device']}")
        return {"FINISHED"}
