"""The generation flow: start a request in the engine worker, follow it, bring the result into the scene.

The session's worker (``state.SESSION``) runs the generation; the UI only sends the request and then polls:

* interactively, a ``bpy.app.timers`` timer (``timer``) calls ``update`` a few times a second, redraws
  the sidebar, and imports the result when it arrives;
* in background mode (where timers never fire) and in tests, ``wait_for_generation`` does the same
  synchronously.

A result is imported by ``import_run`` (through the ``vist3a.import_run`` operator, one undo step) into
a collection of its own named from the prompt, at the 3D cursor. Nothing touches the scene before the
result is complete, so a cancelled or failed run leaves the scene as it was.
"""

import os
import traceback
from typing import Optional

import bpy

from . import blender_data, client, generation_request, history, preferences, reading
from .properties import MAX_SEED_UI
from .reporting import first_line
from .state import PREVIEWS, SESSION, SETUP, STATUS

TIMER_INTERVAL = 0.2


class ModelMissing(ValueError):
    """No usable model is configured (the message says exactly what to do)."""


def why_not_generate(context) -> str:
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


def model_still_missing(context) -> bool:
    """Whether the model preferences still describe no usable model (``STATUS.report``'s ``still_true``)."""
    try:
        preferences.get(context).model_reference()
    except preferences.ModelConfigError:
        return True
    return False


def start_generation(context) -> str:
    """Sends the scene's settings to the engine; returns the request id. Raises ValueError (ModelMissing
    when no model is configured) or client.EngineUnavailable with a message for the user."""
    prefs = preferences.get(context)
    try:
        model = prefs.model_reference()
        defaults = prefs.model_defaults()
    except preferences.ModelConfigError as exc:
        raise ModelMissing(str(exc)) from exc
    # Only what the artist chose is sent; the engine fills in the model's defaults. Checked here first
    # against the same defaults, so a bad value is reported before the engine starts.
    request = context.scene.vist3a_generate.request_settings()
    generation_request.checked_settings(request, defaults)
    request_id = SESSION.start_generation(
        prefs.engine_config(),
        settings=request,
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
        _finish_result(context, outcome)
    elif outcome.kind == "cancelled":
        STATUS.report("INFO", "Generation cancelled; the scene is unchanged")
    else:
        STATUS.report("ERROR", outcome.message, outcome.hint)
        print(f"VIST3A: generation failed: {outcome.message}\n{outcome.hint}")


def _finish_result(context, outcome: client.Outcome) -> None:
    settings = context.scene.vist3a_generate
    if outcome.seed is not None and 0 <= outcome.seed <= MAX_SEED_UI:
        settings.seed = outcome.seed  # so the same scene can be generated again by unticking Random
    refresh_history(context, force=True)
    # Through the operator, with undo, so the import is one undo step of its own.
    try:
        result = bpy.ops.vist3a.import_run("EXEC_DEFAULT", True, directory=outcome.output_dir)
    except Exception as exc:  # an operator that reports an error raises when called from Python
        if not (STATUS.level == "ERROR" and STATUS.message):
            STATUS.report("ERROR", f"Import failed: {first_line(exc)}")
        return
    if result != {"FINISHED"}:
        return  # the operator reported why
    done = f"Generated '{STATUS.last_collection}' ({os.path.basename(outcome.output_dir)})"
    if outcome.unknown_words:
        STATUS.report("WARNING", f"{done}; the model does not know: {', '.join(outcome.unknown_words)}")
    else:
        STATUS.report("INFO", done)


def wait_for_generation(context, timeout: Optional[float] = None) -> Optional[client.Outcome]:
    """The synchronous path (background mode, tests): polls until the generation ends, then finishes it."""
    outcome = SESSION.wait(timeout)
    if outcome is not None:
        finish(context, outcome)
    return outcome


def timer() -> Optional[float]:
    """Polls the engine and redraws the sidebar; stops itself when nothing runs. Never raises: a
    failure becomes a message in the panel (details in the system console)."""
    try:
        update(bpy.context)
    except Exception as exc:
        traceback.print_exc()
        STATUS.report("ERROR", f"VIST3A stopped following the generation: {first_line(exc)}")
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


def import_run(context, run_dir: str, splat_mode: str = "AUTO") -> blender_data.ImportedResult:
    """Imports a run folder (an absolute path) into a new collection named from its prompt, at the 3D cursor.

    The run folder is remembered on every object (``blender_data.SOURCE_PROPERTY``). Raises ValueError
    (or ``reading.ResultImportError``) for a folder that is not a complete run.
    """
    loaded = reading.load_run(run_dir)
    result = blender_data.build_result(context, loaded, splat_mode=blender_data.SplatMode(splat_mode))
    blender_data.preselect_render_camera(context, result)
    return result


def refresh_history(context, force: bool = False) -> None:
    """Scans the outputs folder into ``STATUS.runs`` when it changed (or always, with ``force``)."""
    root = preferences.get(context).outputs_dir()
    if force or root != STATUS.history_root:
        STATUS.runs, STATUS.history_problems = history.scan_runs(root)
        STATUS.history_root = root
