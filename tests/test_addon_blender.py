"""The built extension inside Blender: install/uninstall, importing splats, points and cameras, rendering.

Each test runs one Blender subprocess (tests/blender_env.py) that installs the zip built once per
session (the ``extension_zip`` fixture) and checks several things in it, to keep Blender start-ups few.
"""

import json

import numpy as np
import pytest
import torch
from blender_env import run_in_blender

from engine.geometry.cameras import look_at
from engine.io import GaussianArrays, PointArrays, write_gaussian_ply, write_point_ply
from engine.scene import Cameras

SH_C0 = 0.28209479177387814


def _write_cameras(path, c2w, fx, fy, cx, cy, w, h):
    camera = {"c2w": np.asarray(c2w).tolist(), "fx": fx, "fy": fy, "cx": cx, "cy": cy, "w": w, "h": h}
    document = {"format": "vist3a-cameras", "version": 1, "convention": "opencv", "cameras": [camera]}
    path.write_text(json.dumps(document))


@pytest.mark.blender
@pytest.mark.slow
def test_extension_installs_registers_and_uninstalls_cleanly(extension_zip, tmp_path):
    result = run_in_blender("install_uninstall", {"zip": str(extension_zip)}, tmp_path=tmp_path).result
    assert result["enabled"]
    assert result["panels"] == ["VIST3A_PT_import", "VIST3A_PT_render"]
    assert result["operators"] == ["import_result", "render_camera"]
    assert result["preferences"] == ["VIST3AAddonPreferences", ""]
    assert result["import_menu"] and result["scene_settings"]
    assert not any(result["after_disable"].values()), result["after_disable"]
    assert result["uninstall"] == ["FINISHED"]
    assert not result["files_left"]


@pytest.mark.blender
@pytest.mark.slow
def test_import_splats_cameras_points_and_bad_files(extension_zip, tmp_path):
    rng = np.random.default_rng(7)
    n = 300
    gaussians = GaussianArrays(
        means=rng.normal(size=(n, 3)) + [0.0, 0.0, 4.0],
        f_dc=rng.normal(size=(n, 3)) * 1.5,  # some colours fall outside [0, 1] and must be clamped
        f_rest=rng.normal(size=(n, 3, 3)),
        opacity=rng.normal(size=n) * 3,
        scale=rng.normal(size=(n, 3)) - 3,
        rot=rng.normal(size=(n, 4)),
    )
    result_dir = tmp_path / "a result"
    result_dir.mkdir()
    write_gaussian_ply(result_dir / "scene.ply", gaussians)
    # A non-square, off-centre camera with fx != fy, looking at the splats from the side.
    c2w = look_at(torch.tensor([1.5, -0.5, 0.5]), torch.tensor([0.0, 0.2, 4.0]), torch.tensor([0.0, -1.0, 0.0]))
    w, h, fx, fy, cx, cy = 96, 48, 70.0, 84.0, 40.0, 20.0
    _write_cameras(result_dir / "cameras.json", c2w.numpy(), fx, fy, cx, cy, w, h)
    probe = rng.normal(size=(5, 3)) * 0.5 + [0.0, 0.2, 4.0]

    points = PointArrays(points=rng.normal(size=(40, 3)), colors=rng.uniform(size=(40, 3)))
    write_point_ply(tmp_path / "points.ply", points)
    (tmp_path / "garbage.ply").write_bytes(b"this is not a PLY file")
    broken_dir = tmp_path / "broken result"
    broken_dir.mkdir()
    write_gaussian_ply(broken_dir / "scene.ply", gaussians)
    (broken_dir / "cameras.json").write_text('{"format": "vist3a-cameras", "version": 1}')
    dump = tmp_path / "attributes.npz"

    bad = [
        ["garbage", str(tmp_path / "garbage.ply")],
        ["broken", str(broken_dir)],
        ["missing", str(tmp_path / "nothing here.ply")],
    ]
    parameters = {
        "zip": str(extension_zip),
        "bad": bad,
        "result_dir": str(result_dir) + "/",
        "dump": str(dump),
        "probe": probe.tolist(),
        "points": str(tmp_path / "points.ply"),
    }
    result = run_in_blender("import_splats_cameras_points", parameters, tmp_path=tmp_path).result

    for label, bad in result["bad"].items():
        assert bad["outcome"] == ["CANCELLED"], label
        assert bad["unchanged"], f"a failed import ({label}) changed the scene"
    assert "garbage.ply" in result["bad"]["garbage"]["message"] and "not a PLY" in result["bad"]["garbage"]["message"]
    assert "cameras.json" in result["bad"]["broken"]["message"]
    assert "nothing here.ply" in result["bad"]["missing"]["message"]

    assert result["import"] == ["FINISHED"]
    assert result["collections"] == ["VIST3A a result"]
    assert result["kinds"] == ["CAMERA", "EMPTY", "POINTCLOUD"]
    assert result["count"] == n
    assert np.allclose(result["root_location"], [1.0, 2.0, 3.0])
    assert result["sources"] == [str(result_dir)]
    assert {"ShaderNodePointInfo", "ShaderNodeEmission", "ShaderNodeBsdfTransparent"} <= set(result["material_nodes"])
    assert result["render"][:2] == ["CYCLES", "Raw"] and result["render"][2] >= 32

    # Attribute values equal the PLY's after the documented conversions (same order as the file).
    assert result["types"] == {
        "position": "FLOAT_VECTOR",
        "base_color": "FLOAT_COLOR",
        "opacity": "FLOAT",
        "scale": "FLOAT_VECTOR",
        "rotation": "QUATERNION",
        "radius": "FLOAT",
        "splat_axis_0": "FLOAT_VECTOR",
        "splat_axis_1": "FLOAT_VECTOR",
        "splat_axis_2": "FLOAT_VECTOR",
    }
    got = np.load(dump)
    scales = np.exp(gaussians.scale.astype(np.float64))
    qw, qx, qy, qz = (gaussians.rot / np.linalg.norm(gaussians.rot, axis=1, keepdims=True)).T.astype(np.float64)
    # Columns of the rotation matrix: the splat's axes.
    axes = [
        np.stack([1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy + qw * qz), 2 * (qx * qz - qw * qy)], axis=1),
        np.stack([2 * (qx * qy - qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz + qw * qx)], axis=1),
        np.stack([2 * (qx * qz + qw * qy), 2 * (qy * qz - qw * qx), 1 - 2 * (qx * qx + qy * qy)], axis=1),
    ]
    expected = {
        "position": gaussians.means,
        "base_color": np.concatenate([np.clip(0.5 + SH_C0 * gaussians.f_dc, 0, 1), np.ones((n, 1))], axis=1),
        "opacity": 1 / (1 + np.exp(-gaussians.opacity[:, None])),
        "scale": scales,
        "rotation": gaussians.rot / np.linalg.norm(gaussians.rot, axis=1, keepdims=True),
        "radius": 3.0 * scales.max(axis=1, keepdims=True),  # the bounding sphere of 3 sigmas
        **{f"splat_axis_{i}": axis for i, axis in enumerate(axes)},
    }
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-5, atol=1e-6, err_msg=name)

    # The imported camera sees a world point on the same pixel as the engine's camera model.
    assert result["scene_camera"] and result["resolution"] == [w, h]
    cams = Cameras(c2w[None].float(), torch.tensor([[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]]), w, h)
    expected_pixels, _ = cams.project(torch.tensor(probe, dtype=torch.float32))
    np.testing.assert_allclose(result["pixels"], expected_pixels[0].numpy(), atol=2e-3)

    assert result["points_import"] == ["FINISHED"]
    stored = np.round(points.colors * 255) / 255  # the point PLY keeps 8-bit colours
    np.testing.assert_allclose(result["point_colors"], stored, atol=1e-5)  # display values, as splats


@pytest.mark.blender
@pytest.mark.slow
def test_cycles_render_of_imported_splats_shows_their_colour(extension_zip, tmp_path):
    """A dense red blob in front of the camera renders red at the centre, as spheres and as ellipsoids."""
    rng = np.random.default_rng(3)
    n = 400
    red = np.array([0.9, 0.1, 0.1])
    gaussians = GaussianArrays(
        means=rng.normal(size=(n, 3)) * 0.15 + [0.0, 0.0, 3.0],
        f_dc=np.tile((red - 0.5) / SH_C0, (n, 1)),
        f_rest=np.zeros((n, 0, 3)),
        opacity=np.full(n, 3.0),
        scale=np.log(rng.uniform(0.02, 0.08, size=(n, 3))),
        rot=rng.normal(size=(n, 4)),
    )
    result_dir = tmp_path / "blob"
    result_dir.mkdir()
    write_gaussian_ply(result_dir / "scene.ply", gaussians)
    _write_cameras(result_dir / "cameras.json", np.eye(4), 60.0, 60.0, 32.0, 32.0, 64, 64)

    parameters = {"zip": str(extension_zip), "result_dir": str(result_dir) + "/", "tmp": str(tmp_path)}
    result = run_in_blender("render_splat_modes", parameters, tmp_path=tmp_path, timeout=300).result
    for mode in ("POINTS", "ELLIPSOIDS"):
        r = result[mode]
        assert r["outcome"] == ["FINISHED"] and r["size"] == [64, 64]
        centre, corner = np.array(r["centre"]), np.array(r["corner"])
        # Display-referred red (0.9, 0.1, 0.1) comes back close to itself with the Raw view transform.
        assert centre[0] > 0.75 and centre[1] < 0.25 and centre[2] < 0.25, (mode, centre)
        assert corner[0] < 0.3, (mode, corner)  # the world background, not splats
    assert result["POINTS"]["modifiers"] == [] and result["POINTS"]["instances"] == 0
    assert result["ELLIPSOIDS"]["modifiers"] == ["NODES"] and result["ELLIPSOIDS"]["instances"] == n
