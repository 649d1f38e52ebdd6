"""VIST3A text-to-3D: Blender side (bpy + numpy only; all model work runs in the engine worker).

Modules, each depending only on those listed before it (no import cycles, not even inside functions):

* bpy-free: ``conversions`` (numbers), ``ui_text`` (label wrapping), ``history`` (run folders),
  ``reading`` (files and run folders -> arrays), ``reporting``, ``client`` and ``setup_env`` (the
  engine worker and its environment);
* ``state``: the session's worker, panel status, setup job and previews;
* ``materials``, ``blender_data``, ``rendering``: Blender data (objects, point clouds, cameras,
  materials, render settings) from what ``reading`` read;
* ``preferences``, ``properties``: add-on preferences and per-scene settings;
* ``generation``: the generation flow (start, poll, import the result);
* ``operators`` (import, render), ``generate_operators``, ``setup_operators``;
* ``panel``: the sidebar panels; this file registers everything, in one place.
"""

import bpy

from . import (
    generate_operators,
    generation,
    operators,
    panel,
    preferences,
    properties,
    setup_operators,
    state,
)

# Every class the add-on registers, in registration order (property groups before what points at them).
_classes = (
    preferences.VIST3AAddonPreferences,
    properties.VIST3ASceneSettings,
    properties.VIST3AGenerateSettings,
    operators.VIST3A_OT_import_result,
    operators.VIST3A_OT_render_camera,
    generate_operators.VIST3A_OT_generate,
    generate_operators.VIST3A_OT_cancel_generation,
    generate_operators.VIST3A_OT_release_engine,
    generate_operators.VIST3A_OT_random_seed,
    generate_operators.VIST3A_OT_import_run,
    generate_operators.VIST3A_OT_refresh_history,
    setup_operators.VIST3A_OT_setup_engine,
    setup_operators.VIST3A_OT_download_models,
    setup_operators.VIST3A_OT_cancel_setup,
    setup_operators.VIST3A_OT_check_engine,
    panel.VIST3A_PT_generate,
    panel.VIST3A_PT_import,
    panel.VIST3A_PT_render,
)

_timers = (generation.timer, setup_operators.setup_timer)


def register():
    for cls in _classes:
        bpy.utils.register_class(cls)
    properties.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)


def unregister():
    """Stops the worker and any setup job, then removes what ``register`` added."""
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    for timer in _timers:
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    state.SESSION.close()
    if state.SETUP.job is not None and not state.SETUP.job.finished:
        state.SETUP.job.cancel()
    state.PREVIEWS.clear()
    properties.unregister_properties()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
