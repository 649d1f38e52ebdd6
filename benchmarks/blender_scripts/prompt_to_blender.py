"""Runs in Blender (the bpy module) for benchmarks/prompt_to_blender.py: Generate, as the artist does, and timings.

    python prompt_to_blender.py PARAMS.json

Parameters (JSON): ``zip`` (the extension), ``python`` (the engine Python), ``outputs`` (the outputs
folder), ``prompts`` (generated one after the other with the same worker), ``seed``, ``steps`` (None: the
model's), ``poll`` (seconds between polls). The add-on's preferences are left at their defaults (the
embedded default model, automatic device, previews) apart from the engine Python and the outputs folder.

Each prompt goes through the add-on's own path: the ``vist3a.generate`` operator (it starts the worker
when none runs: that call returns once the worker said hello), then ``generation.update`` in a loop (what
the panel's timer calls), which follows the worker's progress events and, when the result arrives,
imports the run folder with ``vist3a.import_run``. Timestamps are taken when a stage's last progress event
is seen, so a stage's time is the gap between the end of the previous stage and its own end.

Prints one line: ``@@RESULT@@ {"runs": [{"prompt", "operator_s", "stage_end_s": {stage: s}, "result_s",
"import_s", "total_s", "worker_timings", "objects", "points", "outcome"}], ...}``.
"""

import json
import sys
import time

import bpy

RESULT_MARKER = "@@RESULT@@ "
MODULE = "bl_ext.user_default.vist3a"

with open(sys.argv[1], encoding="utf-8") as file:
    p = json.load(file)
bpy.ops.extensions.package_install_files(filepath=p["zip"], repo="user_default", enable_on_install=True)
import bl_ext.user_default.vist3a as addon  # noqa: E402  (exists once the extension is installed)
from bl_ext.user_default.vist3a.engine.io.run_format import read_run_metadata  # noqa: E402

generation, state = addon.generation, addon.state
prefs = bpy.context.preferences.addons[MODULE].preferences
prefs.engine_python = p["python"]
prefs.outputs_path = p["outputs"]
prefs.cpu_threads = p["cpu_threads"]
settings = bpy.context.scene.vist3a_generate
if p["steps"] is not None:
    # "Model Defaults" unticked: the panel's fields start from the model's values; only the steps change.
    for name, value in addon.generation_request.model_panel_values(prefs.model_defaults()).items():
        setattr(settings, name, value)
    settings.use_model_defaults = False
    settings.steps = p["steps"]


def generate(prompt: str) -> dict:
    """One Generate, followed to the objects in the scene; every time in seconds from the operator call."""
    settings.prompt = prompt
    settings.random_seed, settings.seed = False, p["seed"]
    cold = not state.SESSION.worker_running
    start = time.perf_counter()
    answer = bpy.ops.vist3a.generate()
    operator = time.perf_counter() - start
    if answer != {"FINISHED"}:
        raise SystemExit(f"Generate did not start: {answer} {state.STATUS.message}")
    stage_end, seen = {}, None
    while True:
        job = state.SESSION.job
        if job is not None and job.stage:
            # the stage's last event so far (a stage ends with step == total)
            seen = (job.stage, job.step, job.total)
            if job.step == job.total and job.stage not in stage_end:
                stage_end[job.stage] = time.perf_counter() - start
        before = time.perf_counter()
        outcome = generation.update(bpy.context)
        if outcome is not None:
            done = time.perf_counter()
            break
        time.sleep(p["poll"])
    if outcome.kind != "result" or state.STATUS.level == "ERROR":
        raise SystemExit(f"Generate failed: {outcome.kind} {outcome.message} {state.STATUS.message} (last {seen})")
    collection = bpy.data.collections[state.STATUS.last_collection]
    clouds = [o for o in collection.all_objects if o.type == "POINTCLOUD"]
    metadata = read_run_metadata(outcome.output_dir)
    return {
        "prompt": prompt,
        "cold": cold,
        "operator_s": operator,
        "stage_end_s": stage_end,
        "result_s": before - start,  # the poll that found the result began here
        "import_s": done - before,  # that poll: the result event read, the run folder imported
        "total_s": done - start,
        "worker_timings": metadata["timings"],
        "settings": {k: metadata["settings"][k] for k in ("num_frames", "height", "width", "num_steps")},
        "device": metadata["device"],
        "objects": len(collection.all_objects),
        "points": sum(len(o.data.points) for o in clouds),
        "output_dir": outcome.output_dir,
        "status": state.STATUS.message,
    }


runs = [generate(prompt) for prompt in p["prompts"]]
state.SESSION.close()
print(RESULT_MARKER + json.dumps({"runs": runs}))
