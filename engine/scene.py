"""Scene types shared by every part of the engine: Gaussians, coloured points and cameras.

They are plain dataclasses of tensors, validated at construction so that a wrong shape or dtype is
reported where the object is made, not deep inside a renderer.

Conventions
-----------
* World and camera frames use OpenCV axes: x right, y down, z forward (the camera looks along +z).
* ``Cameras.camera_to_world`` maps camera coordinates to world coordinates (its last column is the
  camera centre). Intrinsics are in pixels, with pixel centres at integer coordinates + 0.5 in the
  usual gsplat / OpenCV sense: a pixel (u, v) covers [u, u+1) x [v, v+1) and the principal point of a
  centred camera is (W/2, H/2).
* Gaussian rotations are quaternions in (w, x, y, z) order; scales are stored as natural logs and
  opacities as logits, which is how the standard 3DGS PLY stores them and how optimisers like them.
* SH coefficients are (N, (d+1)^2, 3): coefficient index first, then RGB. The colour of a Gaussian is
  ``SH(dir) + 0.5`` clamped at 0, with ``SH_C0 = 0.28209479177387814`` as in 3DGS and gsplat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
MAX_SH_DEGREE = 3


class SceneValidationError(ValueError):
    """A scene or camera tensor has the wrong shape, dtype or device."""


def sh_degree_from_coeffs(num_coeffs: int) -> int:
    """(d+1)^2 -> d; raises for a count that is not a square in 1, 4, 9, 16."""
    degree = math.isqrt(num_coeffs) - 1
    if num_coeffs < 1 or (degree + 1) ** 2 != num_coeffs or degree > MAX_SH_DEGREE:
        raise SceneValidationError(
            f"SH coefficient count {num_coeffs} is not (d+1)^2 for a degree d in 0..{MAX_SH_DEGREE}"
        )
    return degree


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """Colour in [0, 1] -> degree-0 SH coefficient (the inverse of ``SH_C0 * f + 0.5``)."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc: Tensor) -> Tensor:
    """Degree-0 SH coefficient -> colour (not clamped)."""
    return dc * SH_C0 + 0.5


def _check(cond: bool, cls_name: str, message: str) -> None:
    if not cond:
        raise SceneValidationError(f"{cls_name}: {message}")


def _check_tensor(cls_name: str, name: str, value, shape: Sequence[Optional[int]], floating=True) -> None:
    """Checks that ``value`` is a tensor of the given shape (None = any size) and a float dtype."""
    _check(isinstance(value, Tensor), cls_name, f"{name} must be a torch.Tensor, got {type(value).__name__}")
    dims = ["N" if s is None else str(s) for s in shape]
    expected = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    _check(
        value.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, value.shape)),
        cls_name,
        f"{name} must have shape {expected}, got {tuple(value.shape)}",
    )
    if floating:
        _check(value.is_floating_point(), cls_name, f"{name} must be a floating-point tensor, got {value.dtype}")


def _check_same(cls_name: str, tensors: dict) -> None:
    """All tensors share one first dimension, one device and one dtype."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    first_name, first = items[0]
    for name, value in items[1:]:
        _check(
            value.shape[0] == first.shape[0],
            cls_name,
            f"{name} has {value.shape[0]} rows but {first_name} has {first.shape[0]}",
        )
        _check(
            value.device == first.device, cls_name, f"{name} is on {value.device} but {first_name} on {first.device}"
        )
        _check(value.dtype == first.dtype, cls_name, f"{name} is {value.dtype} but {first_name} is {first.dtype}")


class _TensorDataclass:
    """Device/dtype moves and row selection for dataclasses whose tensor fields share dim 0."""

    def _tensor_fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}

    def to(self, device=None, dtype=None):
        """A copy on another device and/or floating dtype."""
        return replace(self, **{k: v.to(device=device, dtype=dtype) for k, v in self._tensor_fields().items()})

    def detach(self):
        return replace(self, **{k: v.detach() for k, v in self._tensor_fields().items()})

    def __getitem__(self, index):
        """Rows selected by an index, slice or boolean mask (a new object; views where torch gives views)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return replace(self, **{k: v[index] for k, v in self._tensor_fields().items()})

    @property
    def device(self) -> torch.device:
        return next(iter(self._tensor_fields().values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self._tensor_fields().values())).dtype


@dataclass
class GaussianScene(_TensorDataclass):
    """N 3D Gaussians, as in 3DGS.

    Attributes:
        means: (N, 3) centres in world coordinates.
        rotations: (N, 4) quaternions (w, x, y, z); unit length is expected (renderers normalise).
        log_scales: (N, 3) natural log of the standard deviations along the rotated axes.
        opacity_logits: (N,) logit of the opacity.
        sh: (N, (d+1)^2, 3) spherical-harmonic colour coefficients, d in 0..3.
    """

    means: Tensor
    rotations: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh: Tensor

    def __post_init__(self):
        name = type(self).__name__
        _check_tensor(name, "means", self.means, (None, 3))
        _check_tensor(name, "rotations", self.rotations, (None, 4))
        _check_tensor(name, "log_scales", self.log_scales, (None, 3))
        _check_tensor(name, "opacity_logits", self.opacity_logits, (None,))
        _check_tensor(name, "sh", self.sh, (None, None, 3))
        sh_degree_from_coeffs(self.sh.shape[1])
        _check_same(name, self._tensor_fields())

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_coeffs(self.sh.shape[1])

    @property
    def scales(self) -> Tensor:
        """(N, 3) standard deviations."""
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        """(N,) opacities in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def unit_rotations(self) -> Tensor:
        """(N, 4) rotations normalised to unit length."""
        return torch.nn.functional.normalize(self.rotations, dim=-1)

    def base_colors(self) -> Tensor:
        """(N, 3) view-independent colour from the DC coefficient (0.5 + SH_C0 * f_dc), not clamped."""
        return sh_dc_to_rgb(self.sh[:, 0])

    @classmethod
    def from_activated(
        cls, means: Tensor, rotations: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor, eps: float = 1e-12
    ) -> GaussianScene:
        """Builds a scene from linear scales and opacities in (0, 1) (stored as logs / logits)."""
        opacities = opacities.clamp(eps, 1 - 1e-7)
        return cls(
            means=means,
            rotations=rotations,
            log_scales=scales.clamp_min(eps).log(),
            opacity_logits=torch.logit(opacities),
            sh=sh,
        )

    @classmethod
    def concatenate(cls, scenes: Sequence[GaussianScene]) -> GaussianScene:
        """Joins scenes; SH degrees must agree."""
        degrees = {s.sh_degree for s in scenes}
        if len(degrees) != 1:
            raise SceneValidationError(f"GaussianScene.concatenate: mixed SH degrees {sorted(degrees)}")
        return cls(**{f.name: torch.cat([getattr(s, f.name) for s in scenes]) for f in fields(cls)})

    def with_sh_degree(self, degree: int) -> GaussianScene:
        """The same scene with SH truncated or zero-padded to ``degree``."""
        if not 0 <= degree <= MAX_SH_DEGREE:
            raise SceneValidationError(f"GaussianScene: SH degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
        k = (degree + 1) ** 2
        if k <= self.sh.shape[1]:
            sh = self.sh[:, :k]
        else:
            pad = self.sh.new_zeros(len(self), k - self.sh.shape[1], 3)
            sh = torch.cat([self.sh, pad], dim=1)
        return replace(self, sh=sh)


@dataclass
class PointScene(_TensorDataclass):
    """N coloured 3D points (a pointmap flattened), optionally with a confidence per point.

    Attributes:
        points: (N, 3) world coordinates.
        colors: (N, 3) RGB in [0, 1] (display-referred, sRGB).
        confidence: (N,) or None; larger is more confident.
    """

    points: Tensor
    colors: Tensor
    confidence: Optional[Tensor] = None

    def __post_init__(self):
        name = type(self).__name__
        _check_tensor(name, "points", self.points, (None, 3))
        _check_tensor(name, "colors", self.colors, (None, 3))
        if self.confidence is not None:
            _check_tensor(name, "confidence", self.confidence, (None,))
        _check_same(name, self._tensor_fields())

    def __len__(self) -> int:
        return self.points.shape[0]


@dataclass
class Cameras(_TensorDataclass):
    """V pinhole cameras sharing one image size.

    Attributes:
        camera_to_world: (V, 4, 4) rigid transforms, OpenCV axes (x right, y down, z forward).
        intrinsics: (V, 3, 3) pixel intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]].
        width, height: image size in pixels.
    """

    camera_to_world: Tensor
    intrinsics: Tensor
    width: int
    height: int

    def __post_init__(self):
        name = type(self).__name__
        _check_tensor(name, "camera_to_world", self.camera_to_world, (None, 4, 4))
        _check_tensor(name, "intrinsics", self.intrinsics, (None, 3, 3))
        _check_same(name, {"camera_to_world": self.camera_to_world, "intrinsics": self.intrinsics})
        for attr in ("width", "height"):
            value = getattr(self, attr)
            _check(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                name,
                f"{attr} must be a positive int, got {value!r}",
            )

    def __len__(self) -> int:
        return self.camera_to_world.shape[0]

    @property
    def world_to_camera(self) -> Tensor:
        """(V, 4, 4) inverse of ``camera_to_world`` (closed form for rigid transforms)."""
        rot = self.camera_to_world[:, :3, :3]
        trans = self.camera_to_world[:, :3, 3:]
        out = torch.zeros_like(self.camera_to_world)
        out[:, :3, :3] = rot.transpose(1, 2)
        out[:, :3, 3:] = -rot.transpose(1, 2) @ trans
        out[:, 3, 3] = 1
        return out

    @property
    def centers(self) -> Tensor:
        """(V, 3) camera centres in world coordinates."""
        return self.camera_to_world[:, :3, 3]

    @property
    def fx(self) -> Tensor:
        return self.intrinsics[:, 0, 0]

    @property
    def fy(self) -> Tensor:
        return self.intrinsics[:, 1, 1]

    @property
    def cx(self) -> Tensor:
        return self.intrinsics[:, 0, 2]

    @property
    def cy(self) -> Tensor:
        return self.intrinsics[:, 1, 2]

    @staticmethod
    def intrinsics_from_fov(fov_x: float, width: int, height: int, fov_y: Optional[float] = None) -> Tensor:
        """(3, 3) intrinsics of a centred pinhole camera with horizontal FoV ``fov_x`` in radians.

        Square pixels unless ``fov_y`` is given.
        """
        fx = (width / 2) / math.tan(fov_x / 2)
        fy = fx if fov_y is None else (height / 2) / math.tan(fov_y / 2)
        return torch.tensor([[fx, 0.0, width / 2], [0.0, fy, height / 2], [0.0, 0.0, 1.0]])

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Projects world points (P, 3) into every camera: pixel coords (V, P, 2) and z-depth (V, P)."""
        w2c = self.world_to_camera
        cam = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
        depth = cam[..., 2]
        uv = cam[..., :2] / depth[..., None]
        pix = torch.stack(
            [uv[..., 0] * self.fx[:, None] + self.cx[:, None], uv[..., 1] * self.fy[:, None] + self.cy[:, None]],
            dim=-1,
        )
        return pix, depth

    def unproject_depth(self, depth: Tensor) -> Tensor:
        """Depth maps (V, H, W) of z-depth -> world points (V, H, W, 3), sampling pixel centres (u+0.5, v+0.5)."""
        v_count, h, w = depth.shape
        if v_count != len(self) or h != self.height or w != self.width:
            raise SceneValidationError(
                f"Cameras.unproject_depth: depth is {tuple(depth.shape)}, cameras are {len(self)} x {self.height} x {self.width}"
            )
        vs, us = torch.meshgrid(
            torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5,
            torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5,
            indexing="ij",
        )
        x = (us[None] - self.cx[:, None, None]) / self.fx[:, None, None] * depth
        y = (vs[None] - self.cy[:, None, None]) / self.fy[:, None, None] * depth
        cam = torch.stack([x, y, depth], dim=-1)
        rot = self.camera_to_world[:, None, None, :3, :3]
        return (rot @ cam.unsqueeze(-1)).squeeze(-1) + self.camera_to_world[:, None, None, :3, 3]

    @classmethod
    def concatenate(cls, cams: Sequence[Cameras]) -> Cameras:
        sizes = {(c.width, c.height) for c in cams}
        if len(sizes) != 1:
            raise SceneValidationError(f"Cameras.concatenate: mixed image sizes {sorted(sizes)}")
        return cls(
            torch.cat([c.camera_to_world for c in cams]),
            torch.cat([c.intrinsics for c in cams]),
            cams[0].width,
            cams[0].height,
        )
