"""Generate when things go wrong, in one Blender session: nothing set up, workers that print garbage
or hang (fake workers), recovery, offline setup buttons, "Check engine", and a clean disable.

Parameters: ``root`` (the repository, taken off ``sys.path``), ``zip``, ``bundle`` (a fake model
bundle), ``not_a_bundle`` (a folder without one), ``wrappers`` (mode -> fake engine Python), ``python`` (the project's Python).
Used by tests/test_addon_generate_faults.py.
"""

import importlib
import os
import sys
import time

import bpy
from script_io import EXTENSION_MODULE as MODULE
from script_io import emit_result, install_extension, inventory, only_installed_code, params

p = params()
only_installed_code(p["root"])
install_extension(p["zip"])
generation = importlib.import_module(f"{MODULE}.generation")
state = importlib.import_module(f"{MODULE}.state")
SESSION = state.SESSION
prefs = bpy.context.preferences.addons[MODULE].preferences
scene = bpy.context.scene
settings = scene.vist3a_generate
settings.prompt = "a small red house"
out = {"engine_in_sys_modules": "engine" in sys.modules}
KINDS = ("objects", "collections", "pointclouds", "meshes")


def generate():
    try:
        return sorted(bpy.ops.vist3a.generate()), ""
    except RuntimeError as error:  # an operator that fails raises in background mode
        return ["CANCELLED"], str(error)


def gone(pid):
    return not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


before = inventory(bpy, KINDS)

# 1. nothing set up: Generate is greyed out with the reason, and a direct start says where to fix it
out["missing_poll"] = generate()
prefs.engine_python = "/nonexistent/engine/python"
prefs.bundle_path = p["bundle"]
out["missing_python"] = generate()
prefs.bundle_path = p["not_a_bundle"]
prefs.engine_python = p["wrappers"]["hang"]
out["missing_model"] = generate()
prefs.bundle_path = p["bundle"]

# 2. a worker whose first line is garbage
prefs.engine_python = p["wrappers"]["garbage-start"]
out["garbage_start"] = generate()
out["garbage_start_busy"] = SESSION.busy

# 3. garbage in the middle of a run (and an explicit thread count for the worker)
prefs.engine_python = p["wrappers"]["garbage-mid"]
prefs.cpu_threads = 3
out["garbage_mid"] = generate()
pid = SESSION.worker_pid
outcome = generation.wait_for_generation(bpy.context, timeout=30)
out["garbage_mid_outcome"] = [outcome.kind, outcome.message]
out["garbage_mid_status"] = [state.STATUS.level, state.STATUS.message]
out["garbage_mid_worker_gone"] = gone(pid)

# 4. a worker that stops answering: declared hung after the (shortened) timeout and stopped
SESSION.hang_timeout, SESSION.ping_after = 1.5, 0.5
prefs.engine_python = p["wrappers"]["hang"]
out["hang"] = generate()
pid = SESSION.worker_pid
started = time.monotonic()
outcome = generation.wait_for_generation(bpy.context, timeout=30)
out["hang_outcome"] = [outcome.kind, outcome.message, time.monotonic() - started]
out["hang_worker_running"] = SESSION.worker_running

# 5. after all that, the same session starts a fresh worker for the next request
prefs.engine_python = p["wrappers"]["garbage-mid"]
out["again"] = generate()
out["again_new_pid"] = SESSION.worker_pid not in (None, pid)
SESSION.cancel()
generation.wait_for_generation(bpy.context, timeout=30)
out["unchanged"] = inventory(bpy, KINDS) == before

# 6. offline (bpy's default): setting up and downloading are greyed out with the reason
for name in ("setup_engine", "download_models"):
    try:
        getattr(bpy.ops.vist3a, name)()
        out[name] = "ran"
    except RuntimeError as error:
        out[name] = str(error)
out["extension_dir"] = os.path.dirname(generation.__file__)

# 7. Check engine on the project's Python (it has every package)
prefs.engine_python = p["python"]
try:
    out["check"] = sorted(bpy.ops.vist3a.check_engine())
except RuntimeError as error:
    out["check"] = str(error)
out["check_lines"] = state.SETUP.check_lines
bpy.ops.preferences.addon_disable(module=MODULE)
out["disabled_cleanly"] = not hasattr(bpy.types.Scene, "vist3a_generate")
emit_result(out)
