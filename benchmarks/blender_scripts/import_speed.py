"""Runs in Blender (the bpy module) for benchmarks/blender_import.py: our import vs a per-point loop, a render.

    python import_speed.py PARAMS.json

Parameters (JSON): ``zip`` (the extension), ``plys`` (splat count as a string -> PLY path, each PLY in
a folder of its own with a cameras file), ``render_size``, ``samples``, ``png``. Prints one line:
``@@RESULT@@ {"import": {size: {"ours_s", "naive_s"}}, "render": {...}}``.
"""

import json
import math
import os
import sys
import time

import bpy

RESULT_MARKER = "@@RESULT@@ "

with open(sys.argv[1], encoding="utf-8") as file:
    p = json.load(file)
bpy.ops.extensions.package_install_files(filepath=p["zip"], repo="user_default", enable_on_install=True)
import bl_ext.user_default.vist3a as addon  # noqa: E402  (exists once the extension is installed)
from bl_ext.user_default.vist3a.engine.io import read_gaussian_ply  # noqa: E402


def clear():
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for blocks in (bpy.data.meshes, bpy.data.pointclouds, bpy.data.materials, bpy.data.cameras):
        for block in list(blocks):
            blocks.remove(block)


def srgb_to_linear(c):
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def naive_import(path):
    """The per-point pattern of existing splat add-ons: a mesh vertex and every attribute set in a loop."""
    g = read_gaussian_ply(path)
    n = len(g.means)
    mesh = bpy.data.meshes.new("naive")
    mesh.vertices.add(n)
    names = (("base_color", "FLOAT_COLOR"), ("opacity", "FLOAT"), ("scale", "FLOAT_VECTOR"), ("rotation", "QUATERNION"))
    for name, data_type in names:
        mesh.attributes.new(name, data_type, "POINT")
    # Looked up after all are created: adding an attribute invalidates earlier Python references.
    color, opacity, scale, rotation = (mesh.attributes[name] for name, _ in names)
    for i in range(n):
        mesh.vertices[i].co = g.means[i]
        rgb = [min(max(0.5 + 0.28209479177387814 * float(c), 0.0), 1.0) for c in g.f_dc[i]]
        color.data[i].color = [srgb_to_linear(c) for c in rgb] + [1.0]
        opacity.data[i].value = 1.0 / (1.0 + math.exp(-float(g.opacity[i])))
        scale.data[i].vector = [math.exp(float(s)) for s in g.scale[i]]
        q = g.rot[i]
        norm = math.sqrt(sum(float(v) * float(v) for v in q))
        rotation.data[i].value = [float(v) / norm for v in q]
    obj = bpy.data.objects.new("naive", mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


results = {"import": {}}
for size, path in p["plys"].items():
    clear()
    start = time.perf_counter()
    addon.blender_data.import_result(bpy.context, path, splat_mode=addon.blender_data.SplatMode.POINTS)
    ours = time.perf_counter() - start
    clear()
    start = time.perf_counter()
    naive_import(path)
    naive = time.perf_counter() - start
    results["import"][size] = {"ours_s": ours, "naive_s": naive}

clear()
largest = max(p["plys"], key=int)
addon.blender_data.import_result(
    bpy.context, os.path.dirname(p["plys"][largest]) + os.sep, splat_mode=addon.blender_data.SplatMode.POINTS
)
scene = bpy.context.scene
scene.cycles.device = "CPU"
start = time.perf_counter()
addon.rendering.render_from_camera(scene, scene.camera, p["png"], samples=p["samples"])
results["render"] = {
    "splats": int(largest),
    "size": p["render_size"],
    "samples": p["samples"],
    "seconds": time.perf_counter() - start,
    "png": p["png"],
}
print(RESULT_MARKER + json.dumps(results))
