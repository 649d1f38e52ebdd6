"""Runs in Blender (the bpy module) for ``python3 build.py demo``: import a run folder, render it with Cycles.

    python blender_demo.py EXTENSION.zip RUN_DIR OUT.png

Installs the built extension into the (throw-away) user profile, imports the run folder with the add-on's
own operator, renders the first generated camera with Cycles and prints one JSON line (objects, points, png).
"""

import json
import sys

import bpy

zip_path, run_dir, png = sys.argv[1:4]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
result = bpy.ops.vist3a.import_result(directory=run_dir, set_scene_camera=True)
if result != {"FINISHED"}:
    raise SystemExit(f"the add-on could not import {run_dir}: {result}")
scene = bpy.context.scene
camera = scene.camera
bpy.ops.vist3a.render_camera(camera_name=camera.name, filepath=png, samples=32, show=False)
clouds = [o for o in scene.objects if o.type == "POINTCLOUD"]
print(json.dumps({"objects": len(scene.objects), "points": sum(len(o.data.points) for o in clouds), "png": png}))
