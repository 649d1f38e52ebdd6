"""Imports of bad files, a result folder (splats + camera) and a point PLY, with what they created.

Parameters: ``zip``, ``bad`` ([label, path] pairs), ``result_dir``, ``dump`` (.npz for the splats'
attributes), ``probe`` (world points to project through the camera), ``points``.
Used by tests/test_addon_blender.py.
"""

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from script_io import emit_result, install_extension, inventory, params

p = params()
install_extension(p["zip"])
scene = bpy.context.scene
scene.cursor.location = (1.0, 2.0, 3.0)


def run_import(path):
    try:
        return sorted(bpy.ops.vist3a.import_result(filepath=path)), ""
    except RuntimeError as error:  # an operator that reports an error raises in background mode
        return ["CANCELLED"], str(error)


out = {"bad": {}}
for label, path in p["bad"]:
    before = inventory(bpy)
    outcome, message = run_import(path)
    out["bad"][label] = {"outcome": outcome, "message": message, "unchanged": inventory(bpy) == before}

before = inventory(bpy)
out["import"] = run_import(p["result_dir"])[0]
new = [c for c in bpy.data.collections if c.name.startswith("VIST3A")]
collection = new[0]
clouds = [o for o in collection.objects if o.type == "POINTCLOUD"]
cameras = [o for o in collection.objects if o.type == "CAMERA"]
cloud = clouds[0]
root = cloud.parent
out["collections"] = [c.name for c in new]
out["kinds"] = sorted(o.type for o in collection.objects)
out["count"] = len(cloud.data.points)
out["root_location"] = list(root.matrix_world.translation)
out["sources"] = sorted({o["vist3a_source"] for o in collection.objects})
out["material_nodes"] = sorted(n.bl_idname for n in cloud.data.materials[0].node_tree.nodes)
out["render"] = [scene.render.engine, scene.view_settings.view_transform, scene.cycles.transparent_max_bounces]


def read(name, width, key):
    attribute = cloud.data.attributes[name]
    values = np.empty(len(cloud.data.points) * width, dtype=np.float32)
    attribute.data.foreach_get(key, values)
    return attribute.data_type, values.reshape(-1, width)


arrays, types = {}, {}
for name, width, key in (
    ("position", 3, "vector"),
    ("base_color", 4, "color"),
    ("opacity", 1, "value"),
    ("scale", 3, "vector"),
    ("rotation", 4, "value"),
    ("radius", 1, "value"),
    ("splat_axis_0", 3, "vector"),
    ("splat_axis_1", 3, "vector"),
    ("splat_axis_2", 3, "vector"),
):
    types[name], arrays[name] = read(name, width, key)
np.savez(p["dump"], **arrays)
out["types"] = types

camera = cameras[0]
out["scene_camera"] = scene.camera == camera
out["resolution"] = [scene.render.resolution_x, scene.render.resolution_y]
pixels = []
for point in p["probe"]:
    view = world_to_camera_view(scene, camera, root.matrix_world @ Vector(point))
    pixels.append([view.x * scene.render.resolution_x, (1.0 - view.y) * scene.render.resolution_y])
out["pixels"] = pixels

out["points_import"] = run_import(p["points"])[0]
point_object = next(o for o in bpy.data.objects if o.get("vist3a_kind") == "points")
colors = np.empty(len(point_object.data.points) * 4, dtype=np.float32)
point_object.data.attributes["base_color"].data.foreach_get("color", colors)
out["point_colors"] = colors.reshape(-1, 4)[:, :3].tolist()
emit_result(out)
