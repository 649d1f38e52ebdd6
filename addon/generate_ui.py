"""Generating from Blender: the Generate panel, its operators, and bringing results into the scene.

One ``client.EngineSession`` (``SESSION``) serves the whole Blender session. A generation runs in
the engine worker; the UI only sends the request and then polls:

* interactively, a ``bpy.app.timers`` timer calls ``update`` a few times a second, redraws the
  sidebar, and imports the result when it arrives;
* in background mode (where timers never fire) and in tests, ``wait_for_generation`` does the same
  synchronously.

A result is imported by ``import_run`` (through the ``vist3a.import_run`` operator, one undo step)
into a collection of its own named from the prompt, at the 3D cursor. Nothing touches the scene
before the result is complete, so a cancelled or failed run leaves the scene as it was.
"""

import os
import random
import re
import shutil
import tempfile
import time
import traceback
from typing import Callable, Optional

import bpy
import bpy.utils.previews

from . import client, history, importer, operators, preferences, setup_env
from .engine.pipeline.settings import (
    MAX_SEED,
    GenerationSettings,
    ModelBundle,
    ModelBundleError,
    ModelNotFoundError,
    SettingsError,
)
from .ui_text import label_width, wrap_text

SESSION = client.EngineSession()
TIMER_INTERVAL = 0.2
HISTORY_ROWS = 8
MAX_SEED_UI = MAX_SEED  # the engine keeps seeds within Blender's 32-bit int properties
RECHECK_SECONDS = 1.0


class _Status:
    """What the panel shows besides the running job: the last outcome, and the history list."""

    def __init__(self):
        self.message = ""
        self.level = "INFO"  # or "ERROR"
        self.hint = ""
        self.runs = []
        self.history_problems = []
        self.history_root = None
        self.last_collection = ""
        self.still_true: Optional[Callable] = None
        self.checked_at = 0.0

    def report(self, level: str, message: str, hint: str = "", still_true: Optional[Callable] = None) -> None:
        """Shows a message; ``still_true(context)`` (optional, cheap) says whether its cause persists."""
        self.level, self.message, self.hint = level, message, hint
        self.still_true, self.checked_at = still_true, time.monotonic()

    def clear(self) -> None:
        self.report("INFO", "")

    def refresh(self, context, force: bool = False) -> None:
        """Clears the message once its cause is gone (checked at most once a second unless ``force``)."""
        if not self.message or self.still_true is None:
            return
        if not force and time.monotonic() - self.checked_at < RECHECK_SECONDS:
            return
        self.checked_at = time.monotonic()
        try:
            persists = self.still_true(context)
        except Exception:  # a check that fails says nothing about the cause: keep the message
            persists = True
        if not persists:
            self.clear()


STATUS = _Status()


class _SetupState:
    """The running or last background job of the preferences ("Set up engine" or "Download models")
    and the last "Check engine" report."""

    def __init__(self):
        self.job: Optional[setup_env.SetupJob] = None
        self.check_lines = []


SETUP = _SetupState()


# ---------------------------------------------------------------------------------------------------
# Preview images


class _Previews:
    """The latest preview image of the running generation, as an icon the panel can draw.

    The worker deletes its preview files when the request ends, so each one is copied first.
    """

    def __init__(self):
        self.collection = None
        self.folder = None
        self.source = ""
        self.icon_id = 0
        self.counter = 0

    def show(self, path: str) -> None:
        if path == self.source or not os.path.isfile(path):
            return
        if self.collection is None:
            self.collection = bpy.utils.previews.new()
            self.folder = tempfile.mkdtemp(prefix="vist3a-preview-")
        self.counter += 1
        copy = os.path.join(self.folder, f"preview-{self.counter}.png")
        try:
            shutil.copyfile(path, copy)
        except OSError:
            return  # the worker removed it in the meantime; the next preview will come
        self.collection.clear()
        self.icon_id = self.collection.load(f"preview-{self.counter}", copy, "IMAGE").icon_id
        self.source = path

    def clear(self) -> None:
        if self.collection is not None:
            bpy.utils.previews.remove(self.collection)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.__init__()


PREVIEWS = _Previews()


# ---------------------------------------------------------------------------------------------------
# Settings


class VIST3AGenerateSettings(bpy.types.PropertyGroup):
    """What to generate (stored per scene as ``scene.vist3a_generate``)."""

    prompt: bpy.props.StringProperty(name="Prompt", description="The scene to generate")
    negative_prompt: bpy.props.StringProperty(
        name="Negative",
        description="What to steer away from (empty: the model's own negative prompt)",
        default="",
    )
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, max=MAX_SEED_UI)
    random_seed: bpy.props.BoolProperty(
        name="Random Seed", description="Draw a new seed for every generation (the one used is recorded)", default=True
    )
    steps: bpy.props.IntProperty(name="Steps", description="Denoising steps", default=50, min=1, max=1000)
    guidance: bpy.props.FloatProperty(
        name="Guidance", description="Classifier-free guidance scale (1: off)", default=7.5, min=1.0, max=30.0
    )
    frames: bpy.props.IntProperty(
        name="Frames", description="Video frames: 4k+1 (5, 9, 13, ...)", default=13, min=5, max=161, step=4
    )
    width: bpy.props.IntProperty(name="Width", description="Multiple of 16", default=512, min=16, max=2048, step=16)
    height: bpy.props.IntProperty(name="Height", description="Multiple of 16", default=512, min=16, max=2048, step=16)
    output_kind: bpy.props.EnumProperty(
        name="Output",
        items=(
            ("gaussians", "Gaussian Splats", "3D Gaussian splats"),
            ("points", "Point Cloud", "Coloured points"),
        ),
        default="gaussians",
    )
    splat_mode: bpy.props.EnumProperty(name="Splats As", items=operators.splat_mode_items)
    show_history: bpy.props.BoolProperty(name="History", default=False)

    def generation_settings(self) -> GenerationSettings:
        """The engine's settings for these values. Raises SettingsError naming a bad value."""
        return GenerationSettings(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt or None,
            num_frames=self.frames,
            height=self.height,
            width=self.width,
            num_steps=self.steps,
            guidance_scale=round(self.guidance, 4),
            seed=None if self.random_seed else self.seed,
            output_kind=self.output_kind,
        )


# ---------------------------------------------------------------------------------------------------
# Generating


def _why_not_generate(context) -> str:
    """Why Generate is unavailable now ("" when it is available)."""
    if SESSION.busy:
        return "A generation is running"
    if SETUP.job is not None and not SETUP.job.finished:
        return "The engine environment is being set up"
    if not preferences.get(context).resolved_python():
        return "The engine is not set up (Preferences > Add-ons > VIST3A)"
    if not context.scene.vist3a_generate.prompt.strip():
        return "Enter a prompt"
    return ""


class ModelMissing(ValueError):
    """No usable model is configured (the message says exactly what to do)."""


def _model_still_missing(context) -> bool:
    try:
        preferences.get(context).model_reference()
    except preferences.ModelConfigError:
        return True
    return False


def start_generation(context) -> str:
    """Sends the scene's settings to the engine; returns the request id. Raises ValueError or
    client.EngineUnavailable with a message for the user."""
    prefs = preferences.get(context)
    settings = context.scene.vist3a_generate
    try:
        generation = settings.generation_settings()
    except SettingsError as exc:
        raise ValueError(f"Invalid setting: {exc}") from exc
    try:
        model = prefs.model_reference()
    except preferences.ModelConfigError as exc:
        raise ModelMissing(str(exc)) from exc
    request_id = SESSION.start_generation(
        prefs.engine_config(),
        settings=generation.to_dict(),
        model=model,
        runtime=prefs.runtime(),
        output_root=prefs.outputs_dir(),
        preview_every=prefs.preview_every,
    )
    STATUS.clear()
    PREVIEWS.clear()
    return request_id


def update(context) -> Optional[client.Outcome]:
    """Handles the engine's events (main thread); imports a finished result. Returns the outcome, if any."""
    outcome = SESSION.poll()
    if SESSION.job is not None and SESSION.job.preview:
        PREVIEWS.show(SESSION.job.preview)
    if outcome is not None:
        finish(context, outcome)
    return outcome


def finish(context, outcome: client.Outcome) -> None:
    """Reports an ended generation; a result is imported into the scene (one undo step).

    A failing import becomes a message in the panel (the scene is left as it was), never an exception.
    """
    PREVIEWS.clear()
    if outcome.kind == "result":
        settings = context.scene.vist3a_generate
        if outcome.seed is not None and 0 <= outcome.seed <= MAX_SEED_UI:
            settings.seed = outcome.seed  # so the same scene can be generated again by unticking Random
        refresh_history(context, force=True)
        # Through the operator, with undo, so the import is one undo step of its own.
        try:
            result = bpy.ops.vist3a.import_run("EXEC_DEFAULT", True, directory=outcome.output_dir)
        except Exception as exc:  # an operator that reports an error raises when called from Python
            if not (STATUS.level == "ERROR" and STATUS.message):
                STATUS.report("ERROR", f"Import failed: {_first_line(exc)}")
            return
        if result != {"FINISHED"}:
            return  # the operator reported why
        done = f"Generated '{STATUS.last_collection}' ({os.path.basename(outcome.output_dir)})"
        if outcome.unknown_words:
            STATUS.report("WARNING", f"{done}; the model does not know: {', '.join(outcome.unknown_words)}")
        else:
            STATUS.report("INFO", done)
    elif outcome.kind == "cancelled":
        STATUS.report("INFO", "Generation cancelled; the scene is unchanged")
    else:
        STATUS.report("ERROR", outcome.message, outcome.hint)
        print(f"VIST3A: generation failed: {outcome.message}\n{outcome.hint}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def wait_for_generation(context, timeout: Optional[float] = None) -> Optional[client.Outcome]:
    """The synchronous path (background mode, tests): polls until the generation ends, then finishes it."""
    outcome = SESSION.wait(timeout)
    if outcome is not None:
        finish(context, outcome)
    return outcome


def _timer() -> Optional[float]:
    """Polls the engine and redraws the sidebar; stops itself when nothing runs. Never raises: a
    failure becomes a message in the panel (details in the system console)."""
    try:
        update(bpy.context)
    except Exception as exc:
        traceback.print_exc()
        STATUS.report("ERROR", f"VIST3A stopped following the generation: {_first_line(exc)}")
    try:
        _redraw_sidebars()
    except Exception:
        traceback.print_exc()
    return TIMER_INTERVAL if SESSION.busy else None


def _redraw_sidebars() -> None:
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()


def prompt_name(prompt: str, limit: int = 40) -> str:
    """A collection/object name from a prompt: its first words, at most ``limit`` characters."""
    words = re.sub(r"\s+", " ", prompt).strip()
    if len(words) <= limit:
        return words or "scene"
    cut = words[:limit].rsplit(" ", 1)[0]
    return (cut or words[:limit]) + "…"


def import_run(context, run_dir: str, splat_mode: str = "AUTO") -> importer.ImportedResult:
    """Imports a run folder into a new collection named from its prompt, at the 3D cursor.

    The run folder is remembered on every object (``importer.SOURCE_PROPERTY``). Raises ValueError
    (or ``importer.ResultImportError``) for a folder that is not a complete run.
    """
    record = history.read_run(run_dir)
    loaded = importer.load_result(run_dir)
    loaded.name = prompt_name(record.prompt)
    result = importer.build_result(context, loaded, splat_mode=importer.SplatMode(splat_mode))
    operators.preselect_render_camera(context, result)
    return result


def refresh_history(context, force: bool = False) -> None:
    root = preferences.get(context).outputs_dir()
    if force or root != STATUS.history_root:
        STATUS.runs, STATUS.history_problems = history.scan_runs(root)
        STATUS.history_root = root


# ---------------------------------------------------------------------------------------------------
# Operators


class VIST3A_OT_generate(bpy.types.Operator):
    """Generate a 3D scene from the prompt with the VIST3A engine"""

    bl_idname = "vist3a.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        reason = _why_not_generate(context)
        if reason:
            cls.poll_message_set(reason)
        return not reason

    def execute(self, context):
        try:
            start_generation(context)
        except ModelMissing as exc:
            STATUS.report("ERROR", str(exc), still_true=_model_still_missing)
            self.report({"ERROR"}, f"VIST3A: {exc}")
            return {"CANCELLED"}
        except (ValueError, client.EngineUnavailable, RuntimeError, OSError) as exc:
            STATUS.report("ERROR", str(exc))
            self.report({"ERROR"}, f"VIST3A: {exc}")
            return {"CANCELLED"}
        except Exception as exc:  # never a traceback for the user
            STATUS.report("ERROR", _first_line(exc))
            return operators.unexpected_error(self, "Generate", exc)
        if not bpy.app.background:
            bpy.app.timers.register(_timer, first_interval=TIMER_INTERVAL)
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
            result = import_run(context, self.directory, settings.splat_mode)
        except (ValueError, RuntimeError, OSError) as exc:
            STATUS.report("ERROR", f"Import failed: {exc}")
            self.report({"ERROR"}, f"VIST3A import failed: {exc}")
            return {"CANCELLED"}
        except Exception as exc:  # never a traceback for the user
            STATUS.report("ERROR", f"Import failed: {_first_line(exc)}")
            return operators.unexpected_error(self, "import", exc)
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
        refresh_history(context, force=True)
        return {"FINISHED"}


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
            bpy.app.timers.register(_setup_timer, first_interval=0.5)
        return {"FINISHED"}


def _setup_timer() -> Optional[float]:
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
            bpy.app.timers.register(_setup_timer, first_interval=0.5)
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


# ---------------------------------------------------------------------------------------------------
# Panel


class VIST3A_PT_generate(bpy.types.Panel):
    bl_idname = "VIST3A_PT_generate"
    bl_label = "Generate"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "VIST3A"
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
        row.operator(VIST3A_OT_random_seed.bl_idname, text="", icon="MOD_NOISE")
        column.prop(settings, "steps")
        column.prop(settings, "guidance")
        column.prop(settings, "frames")
        row = column.row(align=True)
        row.prop(settings, "width")
        row.prop(settings, "height")
        column.prop(settings, "output_kind")
        column.prop(settings, "splat_mode")

        reason = _why_not_generate(context)
        row = layout.row()
        row.scale_y = 1.4
        row.enabled = not reason
        row.operator(VIST3A_OT_generate.bl_idname, icon="PLAY")
        if reason and not SESSION.busy:
            wrapped_label(layout, context, reason, icon="INFO")

        job = SESSION.job
        if job is not None:
            layout.progress(factor=job.fraction, type="BAR", text=job.label)
            if PREVIEWS.icon_id:
                layout.template_icon(icon_value=PREVIEWS.icon_id, scale=8.0)
            layout.operator(VIST3A_OT_cancel_generation.bl_idname, icon="CANCEL")
        STATUS.refresh(context)
        if STATUS.message:
            box = layout.box()
            wrapped_label(box, context, STATUS.message, icon="ERROR" if STATUS.level == "ERROR" else "INFO")
            if STATUS.hint:
                wrapped_label(box, context, STATUS.hint)
        if SESSION.worker_running and not SESSION.busy:
            layout.operator(VIST3A_OT_release_engine.bl_idname, icon="UNLINKED")

        layout.prop(settings, "show_history", icon="TRIA_DOWN" if settings.show_history else "TRIA_RIGHT", emboss=False)
        if settings.show_history:
            self.draw_history(context, layout)

    def draw_history(self, context, layout):
        if STATUS.history_root is None:
            refresh_history(context)  # first look: the scan is cheap (one metadata file per run)
        box = layout.box()
        row = box.row()
        row.label(text=f"{len(STATUS.runs)} generation(s)")
        row.operator(VIST3A_OT_refresh_history.bl_idname, text="", icon="FILE_REFRESH")
        for run in STATUS.runs[:HISTORY_ROWS]:
            row = box.row()
            row.label(text=run.label)
            op = row.operator(VIST3A_OT_import_run.bl_idname, text="", icon="IMPORT")
            op.directory = run.path
        for problem in STATUS.history_problems[:3]:
            wrapped_label(box, context, problem, icon="ERROR")


def label_width_chars(context, icon: bool = True) -> int:
    """How many characters fit on one label line in the current region (the sidebar) at the UI scale."""
    region = getattr(context, "region", None)
    scale = context.preferences.system.ui_scale if context.preferences else 1.0
    return label_width(region.width if region is not None else None, scale, icon)


def wrapped_label(layout, context, text: str, icon: str = "NONE") -> None:
    """A message as several labels, wrapped to the region's width (the icon on the first line)."""
    column = layout.column(align=True)
    column.scale_y = 0.8
    for index, line in enumerate(wrap_text(text, label_width_chars(context, icon != "NONE"))):
        column.label(text=line, icon=icon if index == 0 else "BLANK1" if icon != "NONE" else "NONE")


classes = (
    VIST3AGenerateSettings,
    VIST3A_OT_generate,
    VIST3A_OT_cancel_generation,
    VIST3A_OT_release_engine,
    VIST3A_OT_random_seed,
    VIST3A_OT_import_run,
    VIST3A_OT_refresh_history,
    VIST3A_OT_setup_engine,
    VIST3A_OT_download_models,
    VIST3A_OT_cancel_setup,
    VIST3A_OT_check_engine,
    VIST3A_PT_generate,
)


def register_properties():
    bpy.types.Scene.vist3a_generate = bpy.props.PointerProperty(type=VIST3AGenerateSettings)


def unregister_properties():
    """Stops the worker and any setup, then removes the scene settings."""
    for timer in (_timer, _setup_timer):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    SESSION.close()
    if SETUP.job is not None and not SETUP.job.finished:
        SETUP.job.cancel()
    PREVIEWS.clear()
    del bpy.types.Scene.vist3a_generate
