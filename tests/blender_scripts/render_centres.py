"""Imports run folders and renders each from its camera over a plain world: the centre pixels and the
transparent-bounce settings.

Parameters: ``zip``, ``jobs`` ([name, folder, splat mode, world RGB]), ``tmp`` (where the PNGs go).
Used by tests/test_addon_render_fidelity.py.
"""

import bpy
import numpy as np
from script_io import emit_result, install_extension, params

p = params()
install_extension(p["zip"])
out = {}
for name, folder, mode, world in p["jobs"]:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.world = bpy.data.worlds.new("world")
    scene.world.use_nodes = True
    scene.world.node_tree.nodes["Background"].inputs["Color"].default_value = (*world, 1.0)
    bpy.ops.vist3a.import_result(directory=folder, splat_mode=mode)
    path = p["tmp"] + "/" + name + ".png"
    bpy.ops.vist3a.render_camera(camera_name=scene.camera.name, samples=4, filepath=path, show=False)
    image = bpy.data.images.load(path)
    w, h = image.size
    pixels = np.empty(w * h * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(h, w, 4)
    out[name] = {
        "centre": pixels[h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1, :3].mean(axis=(0, 1)).tolist(),
        "bounces": scene.cycles.transparent_max_bounces,
        "min_bounces": scene.cycles.min_transparent_bounces,
    }
emit_result(out)
