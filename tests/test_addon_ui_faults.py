"""The panel as an artist meets it: failures become short reports, never tracebacks, and the scene stays
as it was; seeds fit Blender's Seed field; stale messages clear once their cause is fixed; the render
camera is preselected after an import. One Blender subprocess (tests/blender_env.py)."""

import json

import numpy as np
import pytest
from blender_env import run_in_blender

from engine.io import GaussianArrays, write_gaussian_ply
from engine.pipeline.settings import MAX_SEED, GenerationSettings, SettingsError


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
    parameters = {
        "zip": str(extension_zip),
        "broken": str(broken),
        "good": str(good),
        "bundle": str(bundle),
        "manifest": manifest,
    }
    result = run_in_blender("ui_faults", parameters, tmp_path=tmp_path, timeout=300).result
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
