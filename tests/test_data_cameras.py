"""Camera paths of the synthetic data: orbit, fly-through, pan."""

import math

import pytest
import torch

from engine.data.camera_paths import flythrough_cameras, orbit_cameras, pan_cameras


def forward_axes(cameras):
    """(T, 3) viewing directions (camera +z in world coordinates)."""
    return cameras.camera_to_world[:, :3, 2].double()


def assert_rigid_opencv(cameras):
    rot = cameras.camera_to_world[:, :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    assert torch.allclose(rot.transpose(1, 2) @ rot, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(len(cameras), dtype=torch.float64), atol=1e-5)
    # World up (+z) is "up" in the image: the camera's y axis (image down) has a negative z component.
    assert (cameras.camera_to_world[:, 2, 1] < 0).all()


@pytest.mark.parametrize("num_frames, width, height", [(13, 64, 64), (7, 48, 32), (1, 31, 17)])
def test_orbit_keeps_distance_and_looks_at_the_centre(num_frames, width, height):
    center = torch.tensor([0.4, -0.2, 0.3])
    cams = orbit_cameras(
        num_frames,
        width,
        height,
        center=center,
        distance=3.5,
        elevation_deg=25.0,
        start_azimuth_deg=40.0,
        arc_deg=200.0,
    )
    assert len(cams) == num_frames and (cams.width, cams.height) == (width, height)
    assert_rigid_opencv(cams)
    distances = torch.linalg.vector_norm(cams.centers - center, dim=1)
    assert torch.allclose(distances, torch.full_like(distances, 3.5), atol=1e-5)
    pixels, depth = cams.project(center[None])
    expected = torch.tensor([width / 2, height / 2]).expand(num_frames, 1, 2)
    assert torch.allclose(pixels, expected, atol=1e-3)
    assert torch.allclose(depth, torch.full_like(depth, 3.5), atol=1e-5)
    # Constant elevation above the centre.
    heights = cams.centers[:, 2] - center[2]
    assert torch.allclose(heights, torch.full_like(heights, 3.5 * math.sin(math.radians(25.0))), atol=1e-5)


def test_orbit_azimuths_follow_start_and_arc():
    cams = orbit_cameras(5, 32, 32, distance=2.0, elevation_deg=0.0, start_azimuth_deg=90.0, arc_deg=180.0)
    azimuths = torch.rad2deg(torch.atan2(cams.centers[:, 1], cams.centers[:, 0]).double())
    expected = torch.tensor([90.0, 135.0, 180.0, -135.0, -90.0], dtype=torch.float64)
    assert torch.allclose(azimuths, expected, atol=1e-3)
    # A positive arc moves each camera towards its own right (camera +x).
    step = cams.centers[1] - cams.centers[0]
    assert float(step @ cams.camera_to_world[0, :3, 0]) > 0


def test_orbit_uses_the_requested_field_of_view():
    cams = orbit_cameras(2, 64, 48, distance=2.0, fov_deg=90.0)
    assert torch.allclose(cams.fx, torch.full((2,), 32.0))
    assert torch.allclose(cams.fy, torch.full((2,), 32.0))
    assert torch.allclose(cams.cx, torch.full((2,), 32.0)) and torch.allclose(cams.cy, torch.full((2,), 24.0))


def test_flythrough_moves_forward_along_a_line():
    start, end = torch.tensor([-3.0, 1.0, 1.5]), torch.tensor([1.0, -1.0, 1.2])
    cams = flythrough_cameras(9, 40, 24, start=start, end=end, look_down_deg=30.0)
    assert_rigid_opencv(cams)
    centers = cams.centers.double()
    assert torch.allclose(centers[0], start.double(), atol=1e-5) and torch.allclose(
        centers[-1], end.double(), atol=1e-5
    )
    steps = centers[1:] - centers[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-5)  # equal steps along one line
    forward = forward_axes(cams)
    assert torch.allclose(forward, forward[0].expand_as(forward), atol=1e-6)  # no rotation
    travel = (end - start).double()
    heading = travel[:2] / torch.linalg.vector_norm(travel[:2])
    horizontal = forward[0, :2] / torch.linalg.vector_norm(forward[0, :2])
    assert torch.allclose(horizontal, heading, atol=1e-6)
    assert math.isclose(math.degrees(math.asin(-forward[0, 2])), 30.0, abs_tol=1e-4)
    # Each step carries the camera forward: positive progress along its own viewing direction.
    assert (steps @ forward[0] > 0).all()


def test_flythrough_rejects_a_vertical_path():
    with pytest.raises(ValueError, match="differ horizontally"):
        flythrough_cameras(3, 8, 8, start=(0.0, 0.0, 1.0), end=(0.0, 0.0, 2.0))


def test_pan_turns_in_place():
    position = torch.tensor([2.0, -1.0, 1.0])
    cams = pan_cameras(7, 36, 20, position=position, start_yaw_deg=10.0, arc_deg=-60.0, look_down_deg=15.0)
    assert_rigid_opencv(cams)
    assert torch.allclose(cams.centers, position.expand(7, 3), atol=1e-6)
    forward = forward_axes(cams)
    pitch = torch.rad2deg(torch.asin(-forward[:, 2]))
    assert torch.allclose(pitch, torch.full_like(pitch, 15.0), atol=1e-4)
    yaws = torch.rad2deg(torch.atan2(forward[:, 1], forward[:, 0]))
    assert torch.allclose(yaws, torch.linspace(10.0, -50.0, 7, dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"width": 0}, "width"),
        ({"fov_deg": 180.0}, "fov_deg"),
        ({"elevation_deg": 89.0}, "elevation_deg"),
        ({"distance": 0.0}, "distance"),
        ({"center": (0.0, 0.0)}, "center"),
    ],
)
def test_orbit_rejects_bad_arguments(kwargs, message):
    args = {"num_frames": 3, "width": 8, "height": 8, "distance": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        orbit_cameras(args.pop("num_frames"), args.pop("width"), args.pop("height"), **args)
