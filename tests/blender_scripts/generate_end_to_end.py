"""Generate through the real engine worker on a tiny bundle: progress, preview, the imported result,
history and re-import, cancel, a killed worker, recovery and release (one Blender session).

Parameters: ``root`` (the repository, taken off ``sys.path``), ``zip``, ``python`` (the engine Python),
``bundle``, ``outputs``, ``dump`` (.npz for the imported splats' attributes).
Used by tests/test_addon_generate.py.
"""

import importlib
import os
import signal
import time

import bpy
import numpy as np
from script_io import EXTENSION_MODULE as MODULE
from script_io import emit_result, install_extension, inventory, only_installed_code, params

p = params()
only_installed_code(p["root"])
install_extension(p["zip"])
generation = importlib.import_module(f"{MODULE}.generation")
state = importlib.import_module(f"{MODULE}.state")
prefs = bpy.context.preferences.addons[MODULE].preferences
prefs.engine_python = p["python"]
prefs.bundle_path = p["bundle"]
prefs.outputs_path = p["outputs"]
prefs.device = "cpu"
prefs.preview_every = 1
scene = bpy.context.scene
scene.cursor.location = (1.0, 2.0, 3.0)
settings = scene.vist3a_generate
settings.prompt = "a red house"
settings.use_model_defaults = False  # the tiny bundle has no defaults: the engine's 512 px would take ages
settings.frames, settings.width, settings.height, settings.steps = 5, 32, 32, 3
settings.random_seed, settings.seed = False, 7
out = {}
KINDS = ("objects", "collections", "pointclouds", "materials")
SESSION, PREVIEWS, STATUS = state.SESSION, state.PREVIEWS, state.STATUS


def run_until(condition, timeout=300):
    labels, previews = [], 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = SESSION.job
        if job is not None and (not labels or labels[-1] != job.label):
            labels.append(job.label)
        # (icons get no id in background mode; the copied preview image shows that one arrived)
        if PREVIEWS.source and os.path.isfile(os.path.join(PREVIEWS.folder, f"preview-{PREVIEWS.counter}.png")):
            previews = max(previews, PREVIEWS.counter)
        if condition():
            return labels, previews, None
        outcome = generation.update(bpy.context)
        if outcome is not None:
            return labels, previews, outcome
        time.sleep(0.02)
    raise TimeoutError("the generation did not get there in time")


def denoising():
    return SESSION.job is not None and SESSION.job.stage == "denoise"


# 1. generate
before = inventory(bpy, KINDS)
out["generate"] = sorted(bpy.ops.vist3a.generate())
out["busy_poll"] = bpy.ops.vist3a.generate.poll()
first_pid = SESSION.worker_pid
labels, previews, outcome = run_until(lambda: False)
out["labels"], out["preview_seen"] = labels, previews > 0
out["outcome"] = [outcome.kind, outcome.message, outcome.output_dir]
out["status"] = STATUS.message
collections = [c for c in bpy.data.collections if c.name.startswith("VIST3A")]
out["collections"] = [c.name for c in collections]
collection = collections[0]
cloud = next(o for o in collection.objects if o.type == "POINTCLOUD")
root = cloud.parent
out["kinds"] = sorted(o.type for o in collection.objects)
out["count"] = len(cloud.data.points)
out["root_location"] = list(root.matrix_world.translation)
out["sources"] = sorted({o["vist3a_source"] for o in collection.objects})
arrays = {}
for name, width, key in (
    ("position", 3, "vector"),
    ("base_color", 4, "color"),
    ("opacity", 1, "value"),
    ("scale", 3, "vector"),
    ("rotation", 4, "value"),
    ("radius", 1, "value"),
):
    values = np.empty(len(cloud.data.points) * width, dtype=np.float32)
    cloud.data.attributes[name].data.foreach_get(key, values)
    arrays[name] = values.reshape(-1, width)
np.savez(p["dump"], **arrays)

# 2. history and re-import
generation.refresh_history(bpy.context, force=True)
out["history"] = [[run.prompt, run.path, run.label] for run in STATUS.runs]
out["reimport"] = sorted(bpy.ops.vist3a.import_run(directory=STATUS.runs[0].path))
out["collections_after_reimport"] = sorted(c.name for c in bpy.data.collections if c.name.startswith("VIST3A"))

# 3. cancel during denoising
settings.steps = 1000
after_import = inventory(bpy, KINDS)
bpy.ops.vist3a.generate()
run_until(denoising)
out["cancel_label_before"] = SESSION.job.label
bpy.ops.vist3a.cancel_generation()
labels, _, outcome = run_until(lambda: False, timeout=120)
out["cancel"] = [outcome.kind, STATUS.message, inventory(bpy, KINDS) == after_import]
out["runs_after_cancel"] = sorted(os.listdir(p["outputs"]))
out["same_worker"] = SESSION.worker_pid == first_pid

# 4. the worker is killed in the middle of a run
bpy.ops.vist3a.generate()
run_until(denoising)
os.kill(SESSION.worker_pid, signal.SIGKILL)
labels, _, outcome = run_until(lambda: False, timeout=60)
out["killed"] = [outcome.kind, outcome.message, STATUS.level, inventory(bpy, KINDS) == after_import]
out["worker_after_kill"] = SESSION.worker_running

# 5. the next Generate works with a fresh worker; Release stops it
settings.steps, settings.seed = 2, 8
bpy.ops.vist3a.generate()
out["new_pid"] = SESSION.worker_pid not in (None, first_pid)
outcome = generation.wait_for_generation(bpy.context, timeout=300)
out["recovered"] = [outcome.kind, len([c for c in bpy.data.collections if c.name.startswith("VIST3A")])]
out["release"] = sorted(bpy.ops.vist3a.release_engine())
out["worker_after_release"] = SESSION.worker_running
emit_result(out)
