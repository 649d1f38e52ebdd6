"""The panel's failure paths in one Blender session: a failing automatic import, a failing timer, an
unforeseen error inside an import operator, a good import after a failure, and "No model" clearing
itself once a bundle is in place.

Parameters: ``zip``, ``broken`` and ``good`` (run folders), ``bundle`` (an empty folder), ``manifest``
(what to write into ``bundle/vist3a.json`` at the end). Used by tests/test_addon_ui_faults.py.
"""

import importlib
import json
import os
import sys

import bpy
from script_io import EXTENSION_MODULE as MODULE
from script_io import emit_result, install_extension, inventory, params

p = params()
install_extension(p["zip"])
generation = importlib.import_module(f"{MODULE}.generation")
state = importlib.import_module(f"{MODULE}.state")
client = importlib.import_module(f"{MODULE}.client")
blender_data = importlib.import_module(f"{MODULE}.blender_data")
prefs = bpy.context.preferences.addons[MODULE].preferences
scene = bpy.context.scene
out = {}

# 1. The automatic import after Generate fails (a broken scene.ply): a message, no exception, no data.
before = inventory(bpy)
try:
    generation.finish(bpy.context, client.Outcome("result", "r1", output_dir=p["broken"], seed=2**31 - 1))
    out["finish_raised"] = ""
except Exception as error:
    out["finish_raised"] = repr(error)
out["finish_status"] = [state.STATUS.level, state.STATUS.message]
out["finish_unchanged"] = inventory(bpy) == before
out["seed_field"] = scene.vist3a_generate.seed
out["seed_max"] = scene.vist3a_generate.bl_rna.properties["seed"].hard_max


# 2. The timer itself never raises: a failing poll becomes a message and the timer stops.
def broken_poll():
    raise OSError("the pipe broke")


state.SESSION.poll = broken_poll
try:
    out["timer_return"] = generation.timer()
    out["timer_raised"] = ""
except Exception as error:
    out["timer_raised"] = repr(error)
out["timer_status"] = [state.STATUS.level, state.STATUS.message]

# 3. An unforeseen error inside an import operator: one-line report, scene unchanged.
real_build = blender_data.build_result


def exploding_build(context, loaded, **options):
    raise TypeError("unexpected keyword")


blender_data.build_result = exploding_build
before = inventory(bpy)
try:
    out["op"] = sorted(bpy.ops.vist3a.import_result(directory=p["good"] + "/"))
    out["op_message"] = ""
except RuntimeError as error:
    out["op"], out["op_message"] = ["CANCELLED"], str(error)
blender_data.build_result = real_build
out["op_unchanged"] = inventory(bpy) == before

# 4. A good import preselects the render camera and clears the earlier import failure.
state.STATUS.report("ERROR", "Import failed: earlier")
out["import_run"] = sorted(bpy.ops.vist3a.import_run(directory=p["good"]))
out["render_camera"] = scene.vist3a.render_camera.name if scene.vist3a.render_camera else ""
out["after_import_status"] = state.STATUS.message

# 5. "No model" says what to do and clears itself once a model bundle is in place.
prefs.engine_python = sys.executable
prefs.model_source = "BUNDLE"
prefs.bundle_path = p["bundle"]
scene.vist3a_generate.prompt = "a chair"
try:
    out["generate"] = sorted(bpy.ops.vist3a.generate())
except RuntimeError:
    out["generate"] = ["CANCELLED"]
out["no_model"] = state.STATUS.message
state.STATUS.refresh(bpy.context, force=True)
out["no_model_still"] = state.STATUS.message
with open(os.path.join(p["bundle"], "vist3a.json"), "w") as file:
    json.dump(p["manifest"], file)
state.STATUS.refresh(bpy.context, force=True)
out["no_model_after_fix"] = state.STATUS.message
emit_result(out)
