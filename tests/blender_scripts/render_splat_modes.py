"""Imports a red blob as spheres and as ellipsoids and renders each with Cycles.

Parameters: ``zip``, ``result_dir``, ``tmp`` (where the PNGs go). Used by tests/test_addon_blender.py.
"""

import bpy
import numpy as np
from script_io import emit_result, install_extension, params

p = params()
install_extension(p["zip"])
out = {}
for mode in ("POINTS", "ELLIPSOIDS"):
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    bpy.ops.vist3a.import_result(filepath=p["result_dir"], splat_mode=mode)
    cloud = next(o for o in bpy.data.objects if o.type == "POINTCLOUD")
    instances = sum(1 for i in bpy.context.evaluated_depsgraph_get().object_instances if i.is_instance)
    path = p["tmp"] + "/render_" + mode + ".png"
    outcome = bpy.ops.vist3a.render_camera(camera_name=bpy.context.scene.camera.name, samples=4, filepath=path)
    image = bpy.data.images.load(path)
    pixels = np.array(image.pixels[:], dtype=np.float32).reshape(image.size[1], image.size[0], 4)
    out[mode] = {
        "outcome": sorted(outcome),
        "size": list(image.size),
        "centre": pixels[28:36, 28:36, :3].mean(axis=(0, 1)).tolist(),
        "corner": pixels[:4, :4, :3].mean(axis=(0, 1)).tolist(),
        "modifiers": [m.type for m in cloud.modifiers],
        "instances": instances,
    }
emit_result(out)
