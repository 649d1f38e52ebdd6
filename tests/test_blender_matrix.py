"""Every supported Blender: install, import of splats / points / cameras, a Cycles render, no orphans.

The versions and their environments come from build.py (BLENDER_MATRIX), which creates and caches one
virtual environment per version and passes their Pythons in VIST3A_BLENDER_MATRIX
("4.2=/path/python;5.2=SKIP:reason;..."). Blender 5.0 (this environment) runs the same checks and the
rest of the add-on suite. A version whose environment could not be set up fails here with the reason;
one whose Python this machine lacks is skipped with the reason.
"""

import json
import os
import sys

import numpy as np
import pytest
from blender_env import run_in_blender

from engine.io import GaussianArrays, PointArrays, write_gaussian_ply, write_point_ply

SH_C0 = 0.28209479177387814
MATRIX_ENV_VAR = "VIST3A_BLENDER_MATRIX"


def _matrix():
    entries = [("5.0", sys.executable)]
    for entry in filter(None, os.environ.get(MATRIX_ENV_VAR, "").split(";")):
        version, _, python = entry.partition("=")
        entries.append((version, python))
    return entries


def _write_case(folder):
    rng = np.random.default_rng(5)
    n = 300
    red = np.array([0.9, 0.1, 0.1])
    gaussians = GaussianArrays(
        means=rng.normal(size=(n, 3)) * 0.12 + [0.0, 0.0, 3.0],
        f_dc=np.tile((red - 0.5) / SH_C0, (n, 1)),
        f_rest=np.zeros((n, 0, 3)),
        opacity=np.full(n, 3.0),
        scale=np.log(rng.uniform(0.02, 0.08, size=(n, 3))),
        rot=rng.normal(size=(n, 4)),
    )
    run = folder / "blob"
    run.mkdir()
    write_gaussian_ply(run / "scene.ply", gaussians)
    camera = {"c2w": np.eye(4).tolist(), "fx": 48.0, "fy": 48.0, "cx": 24.0, "cy": 24.0, "w": 48, "h": 48}
    document = {"format": "vist3a-cameras", "version": 1, "convention": "opencv", "cameras": [camera]}
    (run / "cameras.json").write_text(json.dumps(document))
    points = PointArrays(points=rng.normal(size=(50, 3)), colors=rng.uniform(size=(50, 3)))
    write_point_ply(folder / "points.ply", points)
    (folder / "garbage.ply").write_bytes(b"not a PLY at all")
    return run, n


SCRIPT = """
import sys
import bpy
import numpy as np
bpy.ops.extensions.package_install_files(filepath={zip!r}, repo="user_default", enable_on_install=True)
import bl_ext.user_default.vist3a as addon

scene = bpy.context.scene
world = bpy.data.worlds.new("grey")
world.use_nodes = True
world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.0, 0.3, 0.0, 1.0)
scene.world = world

def clear():
    # Objects and then every data-block left without users (the startup cube's mesh, earlier imports).
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for name in ("meshes", "pointclouds", "materials", "cameras", "node_groups", "lights"):
        blocks = getattr(bpy.data, name)
        for block in [b for b in blocks if b.users == 0]:
            blocks.remove(block)

clear()

def inventory():
    return {{name: len(getattr(bpy.data, name)) for name in
            ("objects", "collections", "meshes", "pointclouds", "materials", "cameras", "node_groups")}}

def run_import(**kwargs):
    try:
        return sorted(bpy.ops.vist3a.import_result(**kwargs)), ""
    except RuntimeError as error:  # an operator that reports an error raises in background mode
        return ["CANCELLED"], str(error)

out = {{"version": list(bpy.app.version)}}
before = inventory()
out["garbage"] = run_import(filepath={garbage!r})
out["garbage_unchanged"] = inventory() == before
out["modes"] = [item[0] for item in addon.operators.splat_mode_items()]
out["native_detected"] = addon.importer.native_splat_type() is not None
if not out["native_detected"]:
    before = inventory()
    loaded = addon.importer.load_result({run!r})
    try:
        addon.importer.build_result(bpy.context, loaded, splat_mode=addon.importer.SplatMode.NATIVE)
        out["native_refused"] = ""
    except addon.importer.ResultImportError as error:
        out["native_refused"] = str(error)
    out["native_unchanged"] = inventory() == before

out["renders"] = {{}}
for mode in ("POINTS", "ELLIPSOIDS"):
    clear()
    outcome = run_import(directory={run!r}, splat_mode=mode)
    cloud = next(o for o in bpy.data.objects if o.type == "POINTCLOUD")
    camera = scene.vist3a.render_camera
    path = {tmp!r} + "/render_" + mode + ".png"
    rendered = sorted(bpy.ops.vist3a.render_camera(camera_name=camera.name, samples=4, filepath=path, show=False))
    image = bpy.data.images.load(path)
    pixels = np.empty(image.size[0] * image.size[1] * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(image.size[1], image.size[0], 4)
    out["renders"][mode] = {{
        "import": outcome[0], "render": rendered, "points": len(cloud.data.points),
        "camera": camera.name, "scene_camera": scene.camera == camera,
        "centre": pixels[20:28, 20:28, :3].mean(axis=(0, 1)).tolist(),
        "corner": pixels[:3, :3, :3].mean(axis=(0, 1)).tolist(),
        "orphan_meshes": sum(1 for m in bpy.data.meshes if m.users == 0),
    }}

outcome = run_import(filepath={points!r})
points = next(o for o in bpy.data.objects if o.get("vist3a_kind") == "points")
out["points"] = [outcome[0], len(points.data.points)]
out["orphans"] = {{name: sum(1 for block in getattr(bpy.data, name) if block.users == 0)
                  for name in ("meshes", "pointclouds", "node_groups", "objects")}}
bpy.ops.preferences.addon_disable(module="bl_ext.user_default.vist3a")
out["disabled"] = "bl_ext.user_default.vist3a" not in bpy.context.preferences.addons and not hasattr(
    bpy.types.Scene, "vist3a")
emit_result(out)
if bpy.app.version < (4, 3, 0):
    # The 4.2 bpy module segfaults while the interpreter shuts down once this add-on has run (a
    # trivial extension does not; bisected to any class registered from generate_ui.py, unexplained).
    # Everything above has been checked by then; real Blender quits through its own exit path.
    import os
    sys.stdout.flush()
    os._exit(0)
"""


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.parametrize(("version", "python"), _matrix(), ids=[v for v, _ in _matrix()])
def test_install_import_render_on_every_supported_blender(version, python, extension_zip, tmp_path):
    if python.startswith("SKIP:"):
        pytest.skip(python[len("SKIP:") :])
    if python.startswith("ERROR:") or not python:
        pytest.fail(f"Blender {version} could not be set up: {python[len('ERROR:') :]}")
    run, n = _write_case(tmp_path)
    script = SCRIPT.format(
        zip=str(extension_zip),
        garbage=str(tmp_path / "garbage.ply"),
        run=str(run) + os.sep,
        points=str(tmp_path / "points.ply"),
        tmp=str(tmp_path),
    )
    result = run_in_blender(script, tmp_path=tmp_path, timeout=400, python=python).result

    assert ".".join(map(str, result["version"][:2])) == version
    assert result["garbage"][0] == ["CANCELLED"] and "garbage.ply" in result["garbage"][1]
    assert result["garbage_unchanged"], "a failed import left data behind"
    # "Native splats" only where this Blender has them.
    assert ("NATIVE" in result["modes"]) == result["native_detected"]
    if not result["native_detected"]:
        assert "no native Gaussian splats" in result["native_refused"]
        assert result["native_unchanged"]
    for mode, r in result["renders"].items():
        assert r["import"] == ["FINISHED"] and r["render"] == ["FINISHED"], (mode, r)
        assert r["points"] == n
        assert r["camera"].endswith("camera 000") and r["scene_camera"], "the imported camera is preselected"
        centre, corner = np.array(r["centre"]), np.array(r["corner"])
        assert centre[0] > 0.8 and centre[1] < 0.2 and centre[2] < 0.2, (mode, centre)  # the red splats
        np.testing.assert_allclose(corner, [0.0, 0.3, 0.0], atol=0.02)  # the world, shown untouched (Raw)
        assert r["orphan_meshes"] == 0, mode
    assert result["points"] == [["FINISHED"], 50]
    assert result["orphans"] == {"meshes": 0, "pointclouds": 0, "node_groups": 0, "objects": 0}
    assert result["disabled"]
