"""Point-cloud PLY, cameras JSON, and the torch-level save/load helpers of engine.io.scene_io."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from engine.geometry.cameras import look_at
from engine.io import (
    CameraArrays,
    CamerasFormatError,
    InvalidValuesError,
    PlyFormatError,
    PointArrays,
    read_cameras_json,
    read_point_ply,
    write_cameras_json,
    write_point_ply,
)
from engine.io.scene_io import (
    load_cameras_json,
    load_gaussian_ply,
    load_point_ply,
    save_cameras_json,
    save_gaussian_ply,
    save_point_ply,
)
from engine.scene import Cameras, GaussianScene, PointScene

# ---------------------------------------------------------------- point PLY


def random_points(n=6, confidence=True, seed=0):
    rng = np.random.default_rng(seed)
    return PointArrays(
        points=rng.standard_normal((n, 3)),
        colors=rng.integers(0, 256, (n, 3)) / 255.0,
        confidence=rng.random(n) if confidence else None,
    )


@pytest.mark.parametrize("confidence", [True, False])
def test_point_ply_round_trip(tmp_path, confidence):
    p = random_points(confidence=confidence)
    path = tmp_path / "points.ply"
    assert write_point_ply(path, p) == 0
    back = read_point_ply(path)
    assert np.array_equal(back.points, p.points)
    assert np.array_equal(back.colors, p.colors)  # multiples of 1/255 survive 8-bit storage exactly
    if confidence:
        assert np.array_equal(back.confidence, p.confidence)
    else:
        assert back.confidence is None
    vertex = PlyData.read(str(path))["vertex"]
    expected = ["x", "y", "z", "red", "green", "blue"] + (["confidence"] if confidence else [])
    assert [prop.name for prop in vertex.properties] == expected
    assert vertex["red"].dtype == np.uint8 and vertex["x"].dtype == np.dtype("<f4")
    assert np.array_equal(vertex["green"], np.rint(p.colors[:, 1] * 255).astype(np.uint8))


def test_point_ply_quantises_and_clips_colours(tmp_path):
    p = PointArrays(np.zeros((3, 3)), np.array([[0.1, 0.5, 0.9], [-0.2, 1.3, 0.502], [0, 1, 0.5]]))
    write_point_ply(tmp_path / "p.ply", p)
    back = read_point_ply(tmp_path / "p.ply")
    assert np.abs(back.colors[0] - p.colors[0]).max() <= 0.5 / 255 + 1e-7
    assert back.colors[1, 0] == 0.0 and back.colors[1, 1] == 1.0


def test_point_ply_reads_float_and_ushort_colours_from_other_tools(tmp_path):
    rows = np.array(
        [(1.0, 2.0, 3.0, 0.25, 65535, 0.5)],
        dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "<f4"), ("green", "<u2"), ("blue", "<f4")],
    )
    PlyData([PlyElement.describe(rows, "vertex")], text=True).write(str(tmp_path / "c.ply"))
    back = read_point_ply(tmp_path / "c.ply")
    assert back.points.tolist() == [[1.0, 2.0, 3.0]]
    assert back.colors.tolist() == [[0.25, 1.0, 0.5]]


def test_point_ply_errors(tmp_path):
    rows = np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1")])
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "m.ply"))
    with pytest.raises(PlyFormatError, match=r"has colour property 'red' but lacks green, blue"):
        read_point_ply(tmp_path / "m.ply")
    signed = np.zeros(
        1, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "i1"), ("green", "u1"), ("blue", "u1")]
    )
    signed["red"] = -3
    PlyData([PlyElement.describe(signed, "vertex")]).write(str(tmp_path / "s.ply"))
    with pytest.raises(PlyFormatError, match=r"colour property values must not be negative \(found -3"):
        read_point_ply(tmp_path / "s.ply")
    no_y = np.zeros(1, dtype=[("x", "<f4"), ("z", "<f4")])
    PlyData([PlyElement.describe(no_y, "vertex")]).write(str(tmp_path / "y.ply"))
    with pytest.raises(PlyFormatError, match=r"lacks required properties: y"):
        read_point_ply(tmp_path / "y.ply")


def test_point_ply_non_finite_reject_and_drop(tmp_path):
    p = random_points(n=5)
    p.points[0, 1] = np.nan
    p.confidence[3] = np.inf
    path = tmp_path / "nan.ply"
    with pytest.raises(InvalidValuesError, match=r"2 of 5 points have invalid values .* in: y, confidence"):
        write_point_ply(path, p)
    assert not path.exists()
    rows = np.empty(
        5, dtype=[(n, "<f4") for n in ("x", "y", "z", "confidence")] + [(c, "u1") for c in ("red", "green", "blue")]
    )
    for axis, name in enumerate("xyz"):
        rows[name] = p.points[:, axis]
    rows["confidence"] = p.confidence
    for channel, name in enumerate(("red", "green", "blue")):
        rows[name] = np.rint(p.colors[:, channel] * 255)
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(path))
    with pytest.raises(InvalidValuesError, match=r"2 of 5 points have invalid values .* in: y, confidence"):
        read_point_ply(path)
    back = read_point_ply(path, non_finite="drop")
    assert back.dropped_non_finite == 2
    assert np.array_equal(back.points, p.points[[1, 2, 4]])


# ---------------------------------------------------------------- cameras JSON


def orbit_cameras(n=3):
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    eyes = torch.tensor(
        np.stack([np.cos(angles) * 3, np.sin(angles) * 3, np.full(n, 1.0)], axis=1), dtype=torch.float64
    )
    c2w = look_at(eyes, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    return CameraArrays(
        camera_to_world=c2w.numpy(),
        fx=np.full(n, 500.25),
        fy=np.full(n, 480.5),
        cx=np.full(n, 320.0),
        cy=np.full(n, 240.0),
        width=np.full(n, 640),
        height=np.full(n, 480),
    )


def test_cameras_json_round_trip_is_exact_and_documented(tmp_path):
    cams = orbit_cameras()
    path = tmp_path / "cameras.json"
    write_cameras_json(path, cams)
    document = json.loads(path.read_text())
    assert document["format"] == "vist3a-cameras" and document["version"] == 1 and document["convention"] == "opencv"
    assert set(document["cameras"][0]) == {"c2w", "fx", "fy", "cx", "cy", "w", "h"}
    assert document["cameras"][1]["w"] == 640 and isinstance(document["cameras"][1]["w"], int)
    back = read_cameras_json(path)
    for name in ("camera_to_world", "fx", "fy", "cx", "cy", "width", "height"):
        assert np.array_equal(getattr(back, name), getattr(cams, name)), name
    assert back.intrinsics[0].tolist() == [[500.25, 0, 320], [0, 480.5, 240], [0, 0, 1]]


def valid_document():
    return {
        "format": "vist3a-cameras",
        "version": 1,
        "convention": "opencv",
        "cameras": [
            {"c2w": np.eye(4).tolist(), "fx": 100, "fy": 100, "cx": 32, "cy": 32, "w": 64, "h": 64},
            {
                "c2w": np.eye(4).tolist(),
                "fx": 100.0,
                "fy": 100.0,
                "cx": 32.0,
                "cy": 32.0,
                "w": 64.0,
                "h": 64,
                "name": "x",
            },
        ],
    }


def test_cameras_json_accepts_ints_integral_floats_and_unknown_keys(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(valid_document()))
    cams = read_cameras_json(path)
    assert len(cams) == 2 and cams.width.tolist() == [64, 64] and cams.fx.tolist() == [100.0, 100.0]


def _edit(change):
    document = valid_document()
    change(document)
    return document


def _set_camera(index, key, value):
    return lambda d: d["cameras"][index].__setitem__(key, value)


def _rotated(angle_degrees, scale=1.0, reflect=False):
    c, s = math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))
    m = np.eye(4)
    m[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, -1 if reflect else 1]]) * scale
    return m.tolist()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("format"), r"missing top-level field 'format'"),
        (lambda d: d.__setitem__("format", "nerfstudio"), r"field 'format' must be 'vist3a-cameras', got 'nerfstudio'"),
        (lambda d: d.__setitem__("version", 2), r"unsupported version 2 \(this reader knows version 1\)"),
        (lambda d: d.__setitem__("version", "1"), r"field 'version' must be an integer"),
        (lambda d: d.__setitem__("convention", "opengl"), r"field 'convention' must be 'opencv', got 'opengl'"),
        (lambda d: d.__setitem__("cameras", []), r"field 'cameras' must be a non-empty list"),
        (lambda d: d["cameras"].__setitem__(1, [1, 2]), r"camera 1: must be an object, got list"),
        (lambda d: d["cameras"][1].pop("cy"), r"camera 1: missing field\(s\) cy"),
        (_set_camera(1, "fx", -5), r"camera 1: field fx must be positive, got -5"),
        (_set_camera(0, "fy", "100"), r"camera 0: field fy must be a finite number, got '100'"),
        (_set_camera(1, "cx", None), r"camera 1: field cx must be a finite number, got None"),
        (_set_camera(1, "w", 64.5), r"camera 1: field w must be a positive integer, got 64.5"),
        (_set_camera(0, "h", 0), r"camera 0: field h must be a positive integer, got 0"),
        (_set_camera(0, "h", True), r"camera 0: field h must be a positive integer, got True"),
        (_set_camera(1, "c2w", np.eye(3).tolist()), r"camera 1: field c2w must be a 4x4 nested list"),
        (_set_camera(1, "c2w", _rotated(30, scale=1.1)), r"camera 1: field c2w rotation part is not orthonormal"),
        (_set_camera(0, "c2w", _rotated(30, reflect=True)), r"camera 0: field c2w rotation part has determinant -1"),
        (
            _set_camera(1, "c2w", [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]),
            r"camera 1: field c2w last row",
        ),
    ],
)
def test_cameras_json_validation_names_camera_and_field(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_edit(change)))
    with pytest.raises(CamerasFormatError, match=message) as info:
        read_cameras_json(path)
    assert str(path) in str(info.value)


def test_cameras_json_rejects_nan_and_non_json(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(valid_document()).replace('"cx": 32.0', '"cx": NaN'))
    with pytest.raises(CamerasFormatError, match=r"camera 1: field cx must be a finite number, got nan"):
        read_cameras_json(path)
    path.write_text('{"format": "vist3a-cameras", ')
    with pytest.raises(CamerasFormatError, match=r"not valid JSON: .* line 1 column"):
        read_cameras_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(CamerasFormatError, match=r"the top level must be a JSON object, got list"):
        read_cameras_json(path)


def test_cameras_writer_refuses_what_the_reader_would_reject(tmp_path):
    cams = orbit_cameras(2)
    cams.fx[1] = 0.0
    with pytest.raises(ValueError, match=r"camera 1: field fx must be positive"):
        write_cameras_json(tmp_path / "c.json", cams)
    assert not (tmp_path / "c.json").exists()


# ---------------------------------------------------------------- torch-level helpers


def test_scene_io_gaussians_round_trip_and_drop_is_logged(tmp_path, caplog):
    g = torch.Generator().manual_seed(0)
    scene = GaussianScene(
        means=torch.randn(5, 3, generator=g),
        rotations=torch.randn(5, 4, generator=g),
        log_scales=torch.randn(5, 3, generator=g),
        opacity_logits=torch.randn(5, generator=g),
        sh=torch.randn(5, 16, 3, generator=g),
    )
    save_gaussian_ply(tmp_path / "s.ply", scene)
    back = load_gaussian_ply(tmp_path / "s.ply")
    for name in ("means", "rotations", "log_scales", "opacity_logits", "sh"):
        assert torch.equal(getattr(back, name), getattr(scene, name)), name
    scene.means[2, 1] = float("nan")
    with caplog.at_level(logging.WARNING, logger="engine.io.scene_io"):
        assert save_gaussian_ply(tmp_path / "d.ply", scene, non_finite="drop") == 1
    assert "left out 1 Gaussians with non-finite values" in caplog.text
    assert len(load_gaussian_ply(tmp_path / "d.ply")) == 4


def test_scene_io_points_and_cameras_round_trip(tmp_path):
    points = PointScene(torch.randn(4, 3), torch.tensor([[0.0, 1.0, 128 / 255]] * 4), torch.rand(4))
    save_point_ply(tmp_path / "p.ply", points)
    back = load_point_ply(tmp_path / "p.ply", dtype=torch.float64)
    assert back.dtype == torch.float64
    assert torch.equal(back.points.float(), points.points) and torch.equal(back.colors.float(), points.colors)
    assert torch.equal(back.confidence.float(), points.confidence)

    eye = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    c2w = look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    k = Cameras.intrinsics_from_fov(math.radians(60), 64, 48).expand(2, 3, 3)
    cams = Cameras(c2w, k.clone(), 64, 48)
    save_cameras_json(tmp_path / "c.json", cams)
    loaded = load_cameras_json(tmp_path / "c.json")
    assert torch.equal(loaded.camera_to_world, cams.camera_to_world)
    assert torch.equal(loaded.intrinsics, cams.intrinsics)
    assert (loaded.width, loaded.height) == (64, 48)


def test_scene_io_cameras_errors(tmp_path):
    skewed = torch.eye(3).expand(1, 3, 3).clone()
    skewed[0, 0, 1] = 0.5
    with pytest.raises(ValueError, match=r"camera 0: intrinsics .* have skew"):
        save_cameras_json(tmp_path / "c.json", Cameras(torch.eye(4)[None], skewed, 8, 8))
    document = valid_document()
    document["cameras"][1]["w"] = 32
    (tmp_path / "mixed.json").write_text(json.dumps(document))
    with pytest.raises(CamerasFormatError, match=r"different image sizes \(32x64, 64x64\)"):
        load_cameras_json(tmp_path / "mixed.json")
