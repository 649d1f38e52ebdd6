"""Camera paths for synthetic clips: orbit, fly-through and pan.

Every path returns :class:`engine.scene.Cameras` with ``num_frames`` views of one image size, built
with :func:`engine.geometry.cameras.look_at` (OpenCV camera axes, world up = +z) and a centred pinhole with square
pixels whose horizontal field of view is ``fov_deg``.

Angles are in degrees throughout. Azimuths and yaws are measured in the ground plane from the world +x
axis towards +y (counter-clockwise seen from above); an azimuth locates a camera around a centre, a
yaw is the direction a camera looks in.

Arcs include both ends: frame 0 sits at the start angle and frame ``T - 1`` at start + arc, so a full
turn without a repeated view is ``arc_deg = 360 * (T - 1) / T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

from engine.geometry.cameras import look_at
from engine.scene import Cameras

WORLD_UP = (0.0, 0.0, 1.0)

# Cameras looking (almost) straight up or down have no well-defined image "up" with look_at.
_MAX_VERTICAL_ANGLE_DEG = 85.0

Point3 = Union[Sequence[float], Tensor]


def _check_common(num_frames: int, width: int, height: int, fov_deg: float) -> None:
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")


def _check_vertical_angle(name: str, angle_deg: float) -> None:
    if abs(angle_deg) > _MAX_VERTICAL_ANGLE_DEG:
        raise ValueError(f"{name} must be within +-{_MAX_VERTICAL_ANGLE_DEG} degrees, got {angle_deg}")


def _point(name: str, value: Point3) -> Tensor:
    """A 3-vector as a float64 tensor (paths are built in float64 and returned in float32)."""
    point = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if point.shape != (3,):
        raise ValueError(f"{name} must be a 3-vector, got shape {tuple(point.shape)}")
    if not torch.isfinite(point).all():
        raise ValueError(f"{name} must be finite, got {point.tolist()}")
    return point


def _arc_angles(num_frames: int, start_deg: float, arc_deg: float) -> Tensor:
    """(T,) angles in radians from start to start + arc inclusive (just the start for T = 1)."""
    steps = torch.arange(num_frames, dtype=torch.float64)
    fraction = steps / (num_frames - 1) if num_frames > 1 else steps
    return torch.deg2rad(torch.tensor(start_deg, dtype=torch.float64) + arc_deg * fraction)


def _view_direction(yaw_rad: Tensor, look_down_deg: float) -> Tensor:
    """(..., 3) unit viewing directions for yaws (radians) and a downward tilt (degrees)."""
    down = math.radians(look_down_deg)
    return torch.stack(
        [
            math.cos(down) * torch.cos(yaw_rad),
            math.cos(down) * torch.sin(yaw_rad),
            torch.full_like(yaw_rad, -math.sin(down)),
        ],
        dim=-1,
    )


def _cameras(eyes: Tensor, targets: Tensor, width: int, height: int, fov_deg: float) -> Cameras:
    """Cameras (float32) at ``eyes`` (T, 3) looking at ``targets`` (T, 3)."""
    up = torch.tensor(WORLD_UP, dtype=torch.float64)
    camera_to_world = look_at(eyes, targets, up).to(torch.float32)
    intrinsics = Cameras.intrinsics_from_fov(math.radians(fov_deg), width, height)
    return Cameras(
        camera_to_world=camera_to_world,
        intrinsics=intrinsics.expand(len(eyes), 3, 3).clone(),
        width=width,
        height=height,
    )


def orbit_cameras(
    num_frames: int,
    width: int,
    height: int,
    *,
    center: Point3 = (0.0, 0.0, 0.0),
    distance: float,
    elevation_deg: float = 20.0,
    start_azimuth_deg: float = 0.0,
    arc_deg: float = 180.0,
    fov_deg: float = 60.0,
) -> Cameras:
    """Cameras circling ``center`` at a constant ``distance``, all looking at it.

    Camera t sits at azimuth ``start_azimuth_deg + arc_deg * t / (T - 1)`` and ``elevation_deg`` above
    the centre's horizontal plane. A positive arc moves counter-clockwise seen from above, which is
    towards each camera's right. This is the path VIST3A's prompt template asks the video model for.

    Returns:
        Cameras with camera_to_world (T, 4, 4) and intrinsics (T, 3, 3), float32.
    """
    _check_common(num_frames, width, height, fov_deg)
    _check_vertical_angle("elevation_deg", elevation_deg)
    if not distance > 0:
        raise ValueError(f"distance must be positive, got {distance}")
    target = _point("center", center)
    azimuths = _arc_angles(num_frames, start_azimuth_deg, arc_deg)
    elevation = math.radians(elevation_deg)
    offsets = torch.stack(
        [
            math.cos(elevation) * torch.cos(azimuths),
            math.cos(elevation) * torch.sin(azimuths),
            torch.full_like(azimuths, math.sin(elevation)),
        ],
        dim=-1,
    )
    eyes = target + distance * offsets
    return _cameras(eyes, target.expand_as(eyes), width, height, fov_deg)


def flythrough_cameras(
    num_frames: int,
    width: int,
    height: int,
    *,
    start: Point3,
    end: Point3,
    look_down_deg: float = 20.0,
    fov_deg: float = 60.0,
) -> Cameras:
    """Cameras moving at constant speed along the straight line from ``start`` to ``end``.

    Every camera faces the horizontal direction of travel, tilted down by ``look_down_deg``, so the
    view moves forward through (or, from above, over) the scene. Frame 0 is at ``start`` and frame
    ``T - 1`` at ``end``.

    Returns:
        Cameras with camera_to_world (T, 4, 4) and intrinsics (T, 3, 3), float32.
    """
    _check_common(num_frames, width, height, fov_deg)
    _check_vertical_angle("look_down_deg", look_down_deg)
    start_point, end_point = _point("start", start), _point("end", end)
    travel = end_point - start_point
    if torch.linalg.vector_norm(travel[:2]) < 1e-9:
        raise ValueError("flythrough_cameras: start and end must differ horizontally (the heading is undefined)")
    steps = torch.arange(num_frames, dtype=torch.float64)
    fraction = steps / (num_frames - 1) if num_frames > 1 else steps
    eyes = start_point + fraction[:, None] * travel
    heading = torch.atan2(travel[1], travel[0])
    direction = _view_direction(heading, look_down_deg)
    return _cameras(eyes, eyes + direction, width, height, fov_deg)


def pan_cameras(
    num_frames: int,
    width: int,
    height: int,
    *,
    position: Point3,
    start_yaw_deg: float = 0.0,
    arc_deg: float = 60.0,
    look_down_deg: float = 10.0,
    fov_deg: float = 60.0,
) -> Cameras:
    """Cameras at one ``position`` turning about the vertical axis (a pan).

    Camera t looks in the horizontal direction ``start_yaw_deg + arc_deg * t / (T - 1)``, tilted down by
    ``look_down_deg``. A positive arc turns counter-clockwise seen from above, i.e. to the left.

    Returns:
        Cameras with camera_to_world (T, 4, 4) and intrinsics (T, 3, 3), float32.
    """
    _check_common(num_frames, width, height, fov_deg)
    _check_vertical_angle("look_down_deg", look_down_deg)
    eye = _point("position", position)
    yaws = _arc_angles(num_frames, start_yaw_deg, arc_deg)
    eyes = eye.expand(num_frames, 3)
    return _cameras(eyes, eyes + _view_direction(yaws, look_down_deg), width, height, fov_deg)
