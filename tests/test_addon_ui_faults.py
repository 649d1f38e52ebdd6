"""The panel as an artist meets it: failures become short reports, never tracebacks, and the scene stays
as it was; seeds fit Blender's Seed field; stale messages clear once their cause is fixed; the render
camera is preselected after an import. One Blender subprocess (tests/blender_env.py)."""

import json

import numpy as np
import pytest
from blender_env import run_in_blender

from engine.io import GaussianArrays, write_gaussian_ply
from engine.pipeline.settings import MAX_SEED, GenerationSettings, SettingsError

MODULE = "bl_ext.user_default.vist3a"


def test_engine_seeds_fit_blenders_int_properties():
    assert MAX_SEED == 2**31 - 1
    assert GenerationSettings(prompt="a chair", seed=MAX_SEED).seed == MAX_SEED
    with pytest.raises(SettingsError, match="seed"):
        GenerationSettings(prompt="a chair", seed=MAX_SEED + 1)


def _run_folder(path, ply_bytes=None):
    path.mkdir()
    metadata = {
        "format": "vist3a-run",
        "created": "2026-11-30T17:00:00+0000",
        "seed": 5,
        "settings": {"prompt": "a blob"},
    }
    (path / "metadata.json").write_text(json.dumps(metadata))
    if ply_bytes is not None:
        (path / "scene.ply").write_bytes(ply_bytes)
        return
    rng = np.random.default_rng(0)
    n = 20
    write_gaussian_ply(
        path / "scene.ply",
        GaussianArrays(
            means=rng.normal(size=(n, 3)) + [0, 0, 3],
            f_dc=rng.normal(size=(n, 3)),
            f_rest=np.zeros((n, 0, 3)),
            opacity=np.zeros(n),
            scale=np.full((n, 3), -3.0),
            rot=np.tile([1.0, 0, 0, 0], (n, 1)),
        ),
    )
    camera = {"c2w": np.eye(4).tolist(), "fx": 40.0, "fy": 40.0, "cx": 16.0, "cy": 16.0, "w": 32, "h": 32}
    cameras = {"format": "vist3a-cameras", "version": 1, "convention": "opencv", "cameras": [camera, camera]}
    (path / "cameras.json").write_text(json.dumps(cameras))


@pytest.mark.blender
@pytest.mark.slow
def test_failures_become_reports_and_leave_the_scene_as_before(extension_zip, tmp_path):
    broken = tmp_path / "broken run"
    _run_folder(broken, ply_bytes=b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nend_header\n")
    good = tmp_path / "good run"
    _run_folder(good)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = {
        "format": "vist3a-bundle",
        "version": 1,
        "name": "fake",
        "wan": "wan",
        "decoder": {"kind": "fake", "checkpoint": "decoder.safetensors"},
    }
    script = f"""
import importlib, json, sys
import bpy
bpy.ops.extensions.package_install_files(filepath={str(extension_zip)!r}, repo="user_default", enable_on_install=True)
ui = importlib.import_module("{MODULE}.generate_ui")
client = importlib.import_module("{MODULE}.client")
importer = importlib.import_module("{MODULE}.importer")
prefs = bpy.context.preferences.addons["{MODULE}"].preferences
scene = bpy.context.scene
out = {{}}

def inventory():
    return {{name: len(getattr(bpy.data, name)) for name in
            ("objects", "collections", "meshes", "pointclouds", "materials", "cameras", "node_groups")}}

# 1. The automatic import after Generate fails (a broken scene.ply): a message, no exception, no data.
before = inventory()
try:
    ui.finish(bpy.context, client.Outcome("result", "r1", output_dir={str(broken)!r}, seed=2**31 - 1))
    out["finish_raised"] = ""
except Exception as error:
    out["finish_raised"] = repr(error)
out["finish_status"] = [ui.STATUS.level, ui.STATUS.message]
out["finish_unchanged"] = inventory() == before
out["seed_field"] = scene.vist3a_generate.seed
out["seed_max"] = scene.vist3a_generate.bl_rna.properties["seed"].hard_max

# 2. The timer itself never raises: a failing poll becomes a message and the timer stops.
def broken_poll():
    raise OSError("the pipe broke")
ui.SESSION.poll = broken_poll
try:
    out["timer_return"] = ui._timer()
    out["timer_raised"] = ""
except Exception as error:
    out["timer_raised"] = repr(error)
out["timer_status"] = [ui.STATUS.level, ui.STATUS.message]

# 3. An unforeseen error inside an import operator: one-line report, scene unchanged.
real_build = importer.build_result
def exploding_build(context, loaded, **options):
    raise TypeError("unexpected keyword")
importer.build_result = exploding_build
before = inventory()
try:
    out["op"] = sorted(bpy.ops.vist3a.import_result(directory={str(good) + "/"!r}))
    out["op_message"] = ""
except RuntimeError as error:
    out["op"], out["op_message"] = ["CANCELLED"], str(error)
importer.build_result = real_build
out["op_unchanged"] = inventory() == before

# 4. A good import preselects the render camera and clears the earlier import failure.
ui.STATUS.report("ERROR", "Import failed: earlier")
out["import_run"] = sorted(bpy.ops.vist3a.import_run(directory={str(good)!r}))
out["render_camera"] = scene.vist3a.render_camera.name if scene.vist3a.render_camera else ""
out["after_import_status"] = ui.STATUS.message

# 5. "No model" says what to do and clears itself once a model bundle is in place.
prefs.engine_python = sys.executable
prefs.model_source = "BUNDLE"
prefs.bundle_path = {str(bundle)!r}
scene.vist3a_generate.prompt = "a chair"
try:
    out["generate"] = sorted(bpy.ops.vist3a.generate())
except RuntimeError as error:
    out["generate"] = ["CANCELLED"]
out["no_model"] = ui.STATUS.message
ui.STATUS.refresh(bpy.context, force=True)
out["no_model_still"] = ui.STATUS.message
with open({str(bundle / "vist3a.json")!r}, "w") as file:
    json.dump({manifest!r}, file)
ui.STATUS.refresh(bpy.context, force=True)
out["no_model_after_fix"] = ui.STATUS.message
emit_result(out)
"""
    result = run_in_blender(script, tmp_path=tmp_path, timeout=300).result
    assert result["finish_raised"] == ""
    assert result["finish_status"][0] == "ERROR" and result["finish_status"][1].startswith("Import failed")
    assert "scene.ply" in result["finish_status"][1] and "Traceback" not in result["finish_status"][1]
    assert result["finish_unchanged"], "a failed automatic import left data behind"
    assert result["seed_max"] == 2**31 - 1 and result["seed_field"] == 2**31 - 1  # the seed is shown and reusable

    assert result["timer_raised"] == "" and result["timer_return"] is None
    assert result["timer_status"][0] == "ERROR" and "the pipe broke" in result["timer_status"][1]

    assert result["op"] == ["CANCELLED"]
    assert "TypeError: unexpected keyword" in result["op_message"] and "Traceback" not in result["op_message"]
    assert result["op_unchanged"]

    assert result["import_run"] == ["FINISHED"]
    assert result["render_camera"] == "a blob camera 000"
    assert result["after_import_status"] == ""

    assert result["generate"] == ["CANCELLED"]
    assert result["no_model"] == result["no_model_still"] and "No model" in result["no_model"]
    assert str(bundle) in result["no_model"] and "vist3a.json" in result["no_model"]
    assert result["no_model_after_fix"] == ""
