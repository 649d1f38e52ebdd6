"""Runs in Blender (the bpy module) for benchmarks/blender_fidelity.py: import a run folder, render camera 000.

    python fidelity_render.py PARAMS.json

Parameters (JSON): ``zip`` (the extension), ``run_dir``, ``mode`` (splat mode), ``png``, ``samples``,
``background`` (sRGB display values of the sky, 3 floats). Writes the render's pixels next to the PNG
(``PNG.npy``, (H, W, 3) rows top-down) and prints one line: ``@@FIDELITY@@ {figures as JSON}``.
"""

import json
import resource
import sys
import time

import bpy
import numpy as np

RESULT_MARKER = "@@FIDELITY@@ "

with open(sys.argv[1], encoding="utf-8") as file:
    p = json.load(file)
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.extensions.package_install_files(filepath=p["zip"], repo="user_default", enable_on_install=True)
scene = bpy.context.scene
# The reference composites over the sky colour (display values); the world emits the same values (the
# import sets the Raw view transform: display-referred values pass through untouched).
world = bpy.data.worlds.new("sky")
world.use_nodes = True
world.node_tree.nodes["Background"].inputs["Color"].default_value = (*p["background"], 1.0)
world.node_tree.nodes["Background"].inputs["Strength"].default_value = 1.0
scene.world = world
start = time.perf_counter()
outcome = bpy.ops.vist3a.import_result(directory=p["run_dir"], splat_mode=p["mode"])
import_seconds = time.perf_counter() - start
if outcome != {"FINISHED"}:
    raise SystemExit(f"import failed: {outcome}")
camera = sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name)[0]
scene.cycles.device = "CPU"
scene.cycles.seed = 0
start = time.perf_counter()
outcome = bpy.ops.vist3a.render_camera(camera_name=camera.name, filepath=p["png"], samples=p["samples"], show=False)
render_seconds = time.perf_counter() - start
if outcome != {"FINISHED"}:
    raise SystemExit(f"render failed: {outcome}")
image = bpy.data.images.load(p["png"])
width, height = image.size
pixels = np.empty(width * height * 4, dtype=np.float32)
image.pixels.foreach_get(pixels)
np.save(p["png"] + ".npy", pixels.reshape(height, width, 4)[::-1, :, :3])  # Blender's rows run bottom-up
figures = {
    "import_s": import_seconds,
    "render_s": render_seconds,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "transparent_max_bounces": scene.cycles.transparent_max_bounces,
}
print(RESULT_MARKER + json.dumps(figures))
