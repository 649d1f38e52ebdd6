"""Torch-level conveniences: save and load ``GaussianScene``, ``PointScene`` and ``Cameras``.

This module imports torch (through ``engine.scene``); ``engine.io`` itself does not import it, so
Blender's Python can use the numpy-level readers and writers without torch. Everything here converts
between the scene dataclasses and the numpy containers and calls those readers and writers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch

from ..scene import Cameras, GaussianScene, PointScene
from .cameras_json import CameraArrays, read_cameras_json, write_cameras_json
from .errors import CamerasFormatError, PathLike
from .gaussian_arrays import GaussianArrays
from .gaussian_ply import read_gaussian_ply, write_gaussian_ply
from .point_ply import PointArrays, read_point_ply, write_point_ply

logger = logging.getLogger(__name__)


def _numpy(tensor: torch.Tensor, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """A CPU numpy copy/view of a tensor in ``dtype`` (also handles bfloat16 and tensors needing grad)."""
    return tensor.detach().to(device="cpu", dtype=dtype).numpy()


def gaussian_arrays_from_scene(scene: GaussianScene) -> GaussianArrays:
    """GaussianScene -> float32 numpy arrays in file units (no normals)."""
    sh = _numpy(scene.sh)
    return GaussianArrays(
        means=_numpy(scene.means),
        f_dc=sh[:, 0],
        f_rest=sh[:, 1:],
        opacity=_numpy(scene.opacity_logits),
        scale=_numpy(scene.log_scales),
        rot=_numpy(scene.rotations),
    )


def gaussian_scene_from_arrays(
    arrays: GaussianArrays, *, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32
) -> GaussianScene:
    """GaussianArrays -> GaussianScene (normals are not part of a scene and are dropped)."""

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)

    return GaussianScene(
        means=tensor(arrays.means),
        rotations=tensor(arrays.rot),
        log_scales=tensor(arrays.scale),
        opacity_logits=tensor(arrays.opacity),
        sh=tensor(arrays.sh),
    )


def _log_dropped(count: int, noun: str, path: PathLike, verb: str) -> None:
    if count:
        logger.warning("%s: %s %d %s with non-finite values", path, verb, count, noun)


def save_gaussian_ply(
    path: PathLike, scene: GaussianScene, *, non_finite: str = "error", comments: Sequence[str] = ()
) -> int:
    """Writes a standard 3DGS PLY (float32, SH degree of the scene), atomically.

    Returns the number of Gaussians dropped for NaN/inf values (only with ``non_finite="drop"``; also logged).
    """
    dropped = write_gaussian_ply(path, gaussian_arrays_from_scene(scene), non_finite=non_finite, comments=comments)
    _log_dropped(dropped, "Gaussians", path, "left out")
    return dropped


def load_gaussian_ply(
    path: PathLike,
    *,
    non_finite: str = "error",
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> GaussianScene:
    """Reads a 3DGS PLY (any tool's) into a GaussianScene.

    With ``non_finite="drop"`` Gaussians with NaN/inf values are left out and a warning with their count
    is logged on ``engine.io.scene_io``; use :func:`engine.io.read_gaussian_ply` to get the count as a value.
    """
    arrays = read_gaussian_ply(path, non_finite=non_finite)
    _log_dropped(arrays.dropped_non_finite, "Gaussians", path, "dropped")
    return gaussian_scene_from_arrays(arrays, device=device, dtype=dtype)


def point_arrays_from_scene(scene: PointScene) -> PointArrays:
    return PointArrays(
        points=_numpy(scene.points),
        colors=_numpy(scene.colors),
        confidence=None if scene.confidence is None else _numpy(scene.confidence),
    )


def point_scene_from_arrays(
    arrays: PointArrays, *, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32
) -> PointScene:
    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)

    return PointScene(
        points=tensor(arrays.points),
        colors=tensor(arrays.colors),
        confidence=None if arrays.confidence is None else tensor(arrays.confidence),
    )


def save_point_ply(
    path: PathLike, scene: PointScene, *, non_finite: str = "error", comments: Sequence[str] = ()
) -> int:
    """Writes a point-cloud PLY (colours quantised to 8 bits), atomically; returns how many points were dropped."""
    dropped = write_point_ply(path, point_arrays_from_scene(scene), non_finite=non_finite, comments=comments)
    _log_dropped(dropped, "points", path, "left out")
    return dropped


def load_point_ply(
    path: PathLike,
    *,
    non_finite: str = "error",
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> PointScene:
    """Reads a point-cloud PLY into a PointScene (dropped points are logged, as for Gaussians)."""
    arrays = read_point_ply(path, non_finite=non_finite)
    _log_dropped(arrays.dropped_non_finite, "points", path, "dropped")
    return point_scene_from_arrays(arrays, device=device, dtype=dtype)


def camera_arrays_from_cameras(cameras: Cameras) -> CameraArrays:
    """Cameras -> CameraArrays. Intrinsics must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)."""
    intrinsics = _numpy(cameras.intrinsics, torch.float64)
    expected = np.zeros_like(intrinsics)
    expected[:, 0, 0], expected[:, 1, 1] = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    expected[:, 0, 2], expected[:, 1, 2], expected[:, 2, 2] = intrinsics[:, 0, 2], intrinsics[:, 1, 2], 1.0
    bad = np.flatnonzero((intrinsics != expected).any(axis=(1, 2)))
    if len(bad):
        raise ValueError(
            f"camera {bad[0]}: intrinsics {intrinsics[bad[0]].tolist()} have skew or a bottom row other than "
            "[0, 0, 1], which the cameras JSON cannot store"
        )
    count = len(cameras)
    return CameraArrays(
        camera_to_world=_numpy(cameras.camera_to_world, torch.float64),
        fx=intrinsics[:, 0, 0],
        fy=intrinsics[:, 1, 1],
        cx=intrinsics[:, 0, 2],
        cy=intrinsics[:, 1, 2],
        width=np.full(count, cameras.width),
        height=np.full(count, cameras.height),
    )


def cameras_from_camera_arrays(
    arrays: CameraArrays,
    *,
    path: Optional[PathLike] = None,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> Cameras:
    """CameraArrays -> Cameras; all cameras must share one image size (``Cameras`` has one)."""
    sizes = sorted({(int(w), int(h)) for w, h in zip(arrays.width, arrays.height)})
    if len(sizes) != 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sizes)
        raise CamerasFormatError(f"cameras have different image sizes ({listed}); Cameras needs one size", path)
    width, height = sizes[0]
    return Cameras(
        camera_to_world=torch.from_numpy(arrays.camera_to_world).to(device=device, dtype=dtype),
        intrinsics=torch.from_numpy(arrays.intrinsics).to(device=device, dtype=dtype),
        width=width,
        height=height,
    )


def save_cameras_json(path: PathLike, cameras: Cameras) -> None:
    """Writes cameras as ``vist3a-cameras`` JSON (version 1), atomically."""
    write_cameras_json(path, camera_arrays_from_cameras(cameras))


def load_cameras_json(
    path: PathLike, *, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32
) -> Cameras:
    """Reads and validates a ``vist3a-cameras`` JSON file into Cameras."""
    return cameras_from_camera_arrays(read_cameras_json(path), path=path, device=device, dtype=dtype)
