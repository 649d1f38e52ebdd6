"""Network outputs and their conversion to the engine's scene types.

Coordinate conventions
----------------------
* The networks predict, per view, a *world-to-camera* pose in OpenCV axes (x right, y down, z forward)
  in a world frame they learned to align with view 0's camera, at the scale of their training
  normalisation (mean point distance ~1). The frame is learned, not enforced: view 0's raw pose is only
  close to the identity.
* ``cameras(..., relative_to_first=True)`` (the default) re-expresses everything in view 0's camera frame
  by the rigid transform ``T = world_to_camera[0]``: cameras become ``T @ camera_to_world`` (view 0 is
  exactly the identity), points ``T(p)``, Gaussian means ``T(mu)``, their rotations ``R_T * q`` and
  their SH coefficients rotated by ``R_T`` (degrees 1-3). Renders are unchanged by this. Pass
  ``relative_to_first=False`` for the network's own frame (the official outputs).
* Intrinsics are the official pixel intrinsics: principal point (W/2, H/2),
  ``f = (size/2) / (tan(fov/2) + eps)`` (eps 0 for VGGT, 1e-3 for AnySplat). These are the intrinsics
  the official renderer (gsplat, pixel centres at u + 0.5) used in training.
* Depth unprojection (AnySplat's Gaussian means, VGGT's depth-derived points) follows the official code:
  pixel (u, v) is unprojected at integer coordinates (u, v), not at its centre (u + 0.5, v + 0.5). In the
  engine's convention this is ``Cameras.unproject_depth`` with the principal point moved by +0.5 pixel;
  the half-pixel offset is part of the official models and is kept.
* AnySplat predicts SH degree 4; ``GaussianScene`` holds degree <= 3, so the scene conversion truncates
  to degree 3 (degree-4 coefficients are damped by 0.1 * 0.25^4 in the model anyway). The raw degree-4
  harmonics stay available in ``AnySplatPrediction.gaussians()``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.geometry.rotations import quaternion_multiply
from engine.models.gaussian_adapter import (
    MAX_SCALE,
    QUATERNION_EPS,
    SCALE_MULTIPLIER,
    SOFTMAX_DENOMINATOR_EPS,
    AnySplatGaussians,
    gaussian_head_output_dim,
    gaussians_from_raw,
    num_sh_coeffs,
    sh_mask,
    unproject_depth_official,
)
from engine.models.pose_encoding import (
    ANYSPLAT_FOV_EPS,
    VGGT_FOV_EPS,
    closed_form_inverse_se3,
    mat_to_quat,
    pose_encoding_to_extri_intri,
)
from engine.render.sh import sh_basis
from engine.scene import MAX_SH_DEGREE, Cameras, GaussianScene, PointScene


class PredictionError(ValueError):
    """A prediction cannot be converted to a valid scene (e.g. degenerate predicted cameras)."""


# ------------------------------------------------------------------------------------------------------
# Real spherical harmonics (3DGS / gsplat basis) and their rotation
# ------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _sample_directions() -> Tensor:
    """64 fixed, well-spread unit directions (float64) for fitting SH rotation matrices."""
    generator = torch.Generator().manual_seed(0)
    dirs = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    return dirs / dirs.norm(dim=-1, keepdim=True)


def sh_rotation_matrix(rotation: Tensor, degree: int) -> Tensor:
    """((d+1)^2, (d+1)^2) matrix M with f'(dir) = f(R^T dir) for coefficients c' = M c.

    Each band l is closed under rotation, so M is block diagonal and exact: it is solved per band from
    the basis evaluated at fixed sample directions (least squares on 64 directions, float64).
    """
    size = (degree + 1) ** 2
    if rotation.is_meta:  # dry run: the shape only
        return torch.empty(size, size, dtype=torch.float64, device="meta")
    rot = rotation.detach().to(torch.float64).cpu()
    dirs = _sample_directions()
    full = sh_basis(dirs, degree)
    rotated = sh_basis(dirs @ rot, degree)  # rows: R^T d
    out = torch.zeros(size, size, dtype=torch.float64)
    out[0, 0] = 1.0  # the constant band is rotation invariant
    for band in range(1, degree + 1):
        lo, hi = band * band, (band + 1) ** 2
        out[lo:hi, lo:hi] = torch.linalg.lstsq(full[:, lo:hi], rotated[:, lo:hi]).solution
    return out


def rotate_sh(sh: Tensor, rotation: Tensor) -> Tensor:
    """SH coefficients (N, K, 3) of functions in the world frame -> the same functions after rotating
    the world by ``rotation`` (3, 3): f'(R d) = f(d)."""
    degree = round(sh.shape[1] ** 0.5) - 1
    matrix = sh_rotation_matrix(rotation, degree).to(device=sh.device, dtype=sh.dtype)
    return torch.einsum("ij,njc->nic", matrix, sh)


def transform_gaussian_scene(scene: GaussianScene, transform: Tensor) -> GaussianScene:
    """Applies a rigid (4, 4) world transform to Gaussians: means, rotations and SH coefficients."""
    rotation = transform[:3, :3].to(scene.dtype)
    translation = transform[:3, 3].to(scene.dtype)
    quat_xyzw = mat_to_quat(rotation.to(torch.float64)).to(scene.dtype)
    quat_wxyz = quat_xyzw.roll(1, dims=-1)
    return GaussianScene(
        means=scene.means @ rotation.T + translation,
        rotations=quaternion_multiply(quat_wxyz.expand_as(scene.rotations), scene.rotations),
        log_scales=scene.log_scales,
        opacity_logits=scene.opacity_logits,
        sh=rotate_sh(scene.sh, rotation) if scene.sh.shape[1] > 1 else scene.sh,
    )


# ------------------------------------------------------------------------------------------------------
# Chunked post-processing: raw head output -> the fields a GaussianScene holds
# ------------------------------------------------------------------------------------------------------

# Gaussians per post-processing chunk: ~0.1 GB of float32 temporaries for AnySplat's 84 raw channels.
POSTPROCESS_CHUNK = 1 << 18


def _row_chunks(views: int, height: int, width: int, chunk_size: int):
    """(view, first row, last row + 1, first flat index) covering (view, row, column) order in chunks."""
    rows = max(1, chunk_size // width)
    for view in range(views):
        for top in range(0, height, rows):
            bottom = min(height, top + rows)
            yield view, top, bottom, (view * height + top) * width


def _merged_chunks(raw: Tensor, points: Tensor, voxel_size: float, features, chunk_size: int):
    """AnySplat's voxel merge of one batch element: (number of voxels, chunks()), chunks() yielding
    (start, stop, merged means, merged raw features) per chunk of voxels (the official per-voxel softmax
    of the confidence channel, the last one)."""
    views, channels, height, width = raw.shape
    device = raw.device
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    count = views * height * width
    flat_points = points.reshape(count, 3).float()
    conf = raw[:, -1].reshape(count).float()
    _, inverse = torch.unique((flat_points / voxel_size).round().int(), dim=0, return_inverse=True)
    count = int(inverse.max()) + 1 if inverse.numel() else 0
    voxel_max = torch.full((count,), float("-inf"), device=device).scatter_reduce(
        0, inverse, conf, reduce="amax", include_self=True
    )
    conf_exp = torch.exp(conf - voxel_max[inverse])
    voxel_sum = torch.zeros(count, device=device).index_add(0, inverse, conf_exp)
    weights = (conf_exp / (voxel_sum[inverse] + SOFTMAX_DENOMINATOR_EPS)).unsqueeze(-1)
    del conf, conf_exp, voxel_sum, voxel_max
    merged_points = torch.zeros(count, 3, device=device).index_add(0, inverse, flat_points * weights)
    merged = torch.zeros(count, channels - 1, device=device)
    for view, top, bottom, start in _row_chunks(views, height, width, chunk_size):
        stop = start + (bottom - top) * width
        merged.index_add_(0, inverse[start:stop], features(view, top, bottom)[:, :-1] * weights[start:stop])
    del weights, inverse, flat_points

    def chunks():
        for start in range(0, count, chunk_size):
            stop = min(count, start + chunk_size)
            yield start, stop, merged_points[start:stop], merged[start:stop]

    return count, chunks


def gaussian_scene_from_raw(
    raw: Tensor,
    points: Tensor,
    sh_degree: int,
    voxel_size: Optional[float] = None,
    transform: Optional[Tensor] = None,
    out_sh_degree: Optional[int] = None,
    chunk_size: int = POSTPROCESS_CHUNK,
) -> GaussianScene:
    """AnySplat's official post-processing for one batch element, restricted to what a scene holds.

    Same computation as ``gaussians_from_raw`` + ``AnySplatGaussians.to_scene`` (+ the rigid change of
    frame of ``transform_gaussian_scene`` when ``transform`` is given), written chunk by chunk into the
    output tensors: means, unit quaternions (w, x, y, z), log scales, opacity logits (the raw density)
    and the SH coefficients up to ``out_sh_degree`` (default min(``sh_degree``, 3)). Voxel merging
    (``voxel_size``) merges the raw features chunk by chunk with the official per-voxel softmax of the
    confidence channel; the merged values equal ``voxel_merge``'s up to summation order. On the meta
    device (a dry run) merging is skipped: N = V·H·W is the upper bound.

    Args:
        raw: (V, C, H, W) Gaussian-head output, C = ``gaussian_head_output_dim(sh_degree)``.
        points: (V, H, W, 3) world points of the pixels.
        transform: optional (4, 4) rigid world transform applied to the result.
        chunk_size: Gaussians per chunk (memory only).
    """
    views, channels, height, width = raw.shape
    if channels != gaussian_head_output_dim(sh_degree) or points.shape != (views, height, width, 3):
        raise ValueError(f"raw {tuple(raw.shape)} and points {tuple(points.shape)} do not fit SH degree {sh_degree}")
    degree = min(sh_degree, MAX_SH_DEGREE) if out_sh_degree is None else out_sh_degree
    if not 0 <= degree <= min(sh_degree, MAX_SH_DEGREE):
        raise ValueError(f"sh_degree must be in 0..{min(sh_degree, MAX_SH_DEGREE)}, got {degree}")
    d_sh, k = num_sh_coeffs(sh_degree), num_sh_coeffs(degree)
    device = raw.device
    mask = sh_mask(sh_degree, device=device)[:k]

    def features(view, top, bottom):  # (rows·W, C) float32 raw channels of one chunk
        return raw[view, :, top:bottom].permute(1, 2, 0).reshape(-1, channels).float()

    if voxel_size is not None and not raw.is_meta:
        count, chunks = _merged_chunks(raw, points, voxel_size, features, chunk_size)
    else:
        count = views * height * width

        def chunks():
            for view, top, bottom, start in _row_chunks(views, height, width, chunk_size):
                stop = start + (bottom - top) * width
                yield start, stop, points[view, top:bottom].reshape(-1, 3).float(), features(view, top, bottom)

    rotation = translation = quat = sh_matrix = None
    if transform is not None:
        rotation, translation = transform[:3, :3].float(), transform[:3, 3].float()
        quat = mat_to_quat(rotation.to(torch.float64)).float().roll(1, dims=-1)
        sh_matrix = sh_rotation_matrix(rotation, degree).to(device=device, dtype=torch.float32) if k > 1 else None

    means = torch.empty(count, 3, device=device)
    rotations = torch.empty(count, 4, device=device)
    log_scales = torch.empty(count, 3, device=device)
    opacity_logits = torch.empty(count, device=device)
    sh = torch.empty(count, k, 3, device=device)
    for start, stop, chunk_means, f in chunks():
        scales = (SCALE_MULTIPLIER * F.softplus(f[:, 1:4])).clamp_max(MAX_SCALE)
        quats = f[:, 4:8]
        quats = (quats / (quats.norm(dim=-1, keepdim=True) + QUATERNION_EPS)).roll(1, dims=-1)
        coeffs = (f[:, 8 : 8 + 3 * d_sh].unflatten(-1, (3, d_sh))[..., :k] * mask).transpose(-1, -2)
        if transform is not None:
            chunk_means = chunk_means @ rotation.T + translation
            quats = quaternion_multiply(quat.expand_as(quats), quats)
            if sh_matrix is not None:
                coeffs = torch.einsum("ij,njc->nic", sh_matrix, coeffs)
        means[start:stop] = chunk_means
        rotations[start:stop] = quats
        log_scales[start:stop] = torch.log(scales.clamp_min(1e-30))
        opacity_logits[start:stop] = f[:, 0]
        sh[start:stop] = coeffs
    return GaussianScene(means=means, rotations=rotations, log_scales=log_scales, opacity_logits=opacity_logits, sh=sh)


# ------------------------------------------------------------------------------------------------------
# Predictions
# ------------------------------------------------------------------------------------------------------


def _cameras_from_pose(
    pose_enc: Tensor, image_size_hw: tuple[int, int], fov_eps: float, batch_index: int, relative_to_first: bool
) -> tuple[Cameras, Tensor]:
    """(B, S, 9) encodings -> (Cameras of one batch element, the (4, 4) world transform applied)."""
    extrinsics, intrinsics = pose_encoding_to_extri_intri(
        pose_enc[batch_index : batch_index + 1].float(), image_size_hw, fov_eps
    )
    if not intrinsics.is_meta and (not torch.isfinite(intrinsics).all() or not torch.isfinite(extrinsics).all()):
        fov = pose_enc[batch_index, :, 7:].detach().float()
        raise PredictionError(
            f"the network predicted degenerate cameras (fields of view in [{fov.min():.3g}, {fov.max():.3g}] rad, "
            "non-finite intrinsics or poses); is the checkpoint trained and the input valid?"
        )
    camera_to_world = closed_form_inverse_se3(extrinsics[0])  # (S, 4, 4)
    transform = torch.eye(4, dtype=camera_to_world.dtype, device=camera_to_world.device)
    if relative_to_first:
        transform[:3, :4] = extrinsics[0, 0]  # world-to-camera of view 0
        camera_to_world = transform @ camera_to_world
        # T @ T^-1 is the identity up to rounding; make view 0 exactly the reference frame.
        camera_to_world[0] = torch.eye(4, dtype=camera_to_world.dtype, device=camera_to_world.device)
    height, width = image_size_hw
    return Cameras(camera_to_world, intrinsics[0], width=int(width), height=int(height)), transform


def _apply_transform(points: Tensor, transform: Tensor) -> Tensor:
    return points @ transform[:3, :3].T.to(points.dtype) + transform[:3, 3].to(points.dtype)


@dataclass
class VGGTPrediction:
    """VGGT outputs (official names). B batch, S views, H x W image.

    Attributes:
        pose_enc: (B, S, 9) final camera encoding; pose_enc_list: one (B, S, 9) per refinement iteration.
        depth: (B, S, H, W, 1) camera z-depth; depth_conf: (B, S, H, W) confidence (> 1).
        world_points: (B, S, H, W, 3) per-pixel points of the point head, network world frame;
            world_points_conf: (B, S, H, W) (> 1).
        images: (B, S, 3, H, W) the input frames in [0, 1].
    """

    pose_enc: Tensor
    pose_enc_list: list[Tensor]
    depth: Tensor
    depth_conf: Tensor
    world_points: Tensor
    world_points_conf: Tensor
    images: Tensor

    fov_eps = VGGT_FOV_EPS

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def extrinsics_intrinsics(self) -> tuple[Tensor, Tensor]:
        """World-to-camera (B, S, 3, 4) and pixel intrinsics (B, S, 3, 3), official network frame."""
        return pose_encoding_to_extri_intri(self.pose_enc.float(), self.image_size, self.fov_eps)

    def points_from_depth(self) -> Tensor:
        """(B, S, H, W, 3) depth unprojected with the predicted cameras (network frame, official way)."""
        extrinsics, intrinsics = self.extrinsics_intrinsics()
        return unproject_depth_official(self.depth.float(), extrinsics, intrinsics)

    def cameras(self, batch_index: int = 0, relative_to_first: bool = True) -> Cameras:
        return _cameras_from_pose(self.pose_enc, self.image_size, self.fov_eps, batch_index, relative_to_first)[0]

    def point_scene(
        self,
        batch_index: int = 0,
        source: str = "points",
        relative_to_first: bool = True,
        min_confidence: Optional[float] = None,
    ) -> PointScene:
        """One batch element as coloured points, one per pixel in (view, row, column) order.

        ``source``: "points" (the point head, ``world_points_conf``) or "depth" (depth unprojected with
        the predicted cameras, ``depth_conf``) - the two branches of the official demo.
        ``min_confidence`` drops points whose confidence is below it.
        """
        if source == "points":
            points, conf = self.world_points[batch_index], self.world_points_conf[batch_index]
        elif source == "depth":
            points, conf = self.points_from_depth()[batch_index], self.depth_conf[batch_index]
        else:
            raise ValueError(f"source must be 'points' or 'depth', got {source!r}")
        _, transform = _cameras_from_pose(self.pose_enc, self.image_size, self.fov_eps, batch_index, relative_to_first)
        points = _apply_transform(points.reshape(-1, 3).float(), transform)
        colors = self.images[batch_index].permute(0, 2, 3, 1).reshape(-1, 3).float()
        conf = conf.reshape(-1).float()
        if min_confidence is not None:
            keep = conf >= min_confidence
            points, colors, conf = points[keep], colors[keep], conf[keep]
        return PointScene(points=points, colors=colors, confidence=conf)


@dataclass
class AnySplatPrediction:
    """AnySplat outputs. B batch, S views, H x W image, C = 9 + 3*(d+1)^2 raw Gaussian channels.

    Attributes:
        pose_enc, pose_enc_list: as ``VGGTPrediction`` (intrinsics use AnySplat's tan + 1e-3).
        depth: (B, S, H, W, 1); depth_conf: (B, S, H, W).
        points: (B, S, H, W, 3) depth unprojected with the predicted cameras (Gaussian means, network frame).
        gaussian_raw: (B, S, C, H, W) raw Gaussian-head output (layout in ``gaussian_adapter``).
        images: (B, S, 3, H, W) input frames in [0, 1].
        sh_degree: SH degree of ``gaussian_raw`` (4 for the released model).
    """

    pose_enc: Tensor
    pose_enc_list: list[Tensor]
    depth: Tensor
    depth_conf: Tensor
    points: Tensor
    gaussian_raw: Tensor
    images: Tensor
    sh_degree: int

    fov_eps = ANYSPLAT_FOV_EPS

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def extrinsics_intrinsics(self) -> tuple[Tensor, Tensor]:
        """World-to-camera (B, S, 3, 4) and pixel intrinsics (B, S, 3, 3), official network frame."""
        return pose_encoding_to_extri_intri(self.pose_enc.float(), self.image_size, self.fov_eps)

    def gaussians(self, voxel_size: Optional[float] = None) -> AnySplatGaussians:
        """Activated Gaussians as the official encoder returns them (network frame, SH degree 4).

        ``voxel_size=None``: one Gaussian per pixel (N = S*H*W, (view, row, column) order); otherwise the
        official voxel merging with that voxel edge (network units; the released config uses 0.002).
        """
        return gaussians_from_raw(self.gaussian_raw.float(), self.points.float(), self.sh_degree, voxel_size)

    def cameras(self, batch_index: int = 0, relative_to_first: bool = True) -> Cameras:
        return _cameras_from_pose(self.pose_enc, self.image_size, self.fov_eps, batch_index, relative_to_first)[0]

    def gaussian_scene(
        self,
        batch_index: int = 0,
        voxel_size: Optional[float] = None,
        relative_to_first: bool = True,
        sh_degree: Optional[int] = None,
        chunk_size: int = POSTPROCESS_CHUNK,
    ) -> GaussianScene:
        """One batch element as a ``GaussianScene`` (SH truncated to degree <= 3, see the module doc).

        The same values as ``gaussians(voxel_size).to_scene(...)`` followed by the change of frame, but
        computed only for what a scene holds (no covariances, no degree-4 harmonics, no opacity
        mapping) and in chunks of ``chunk_size`` Gaussians, so the transient memory stays bounded
        (:func:`gaussian_scene_from_raw`).
        """
        transform = None
        if relative_to_first:
            _, transform = _cameras_from_pose(self.pose_enc, self.image_size, self.fov_eps, batch_index, True)
        return gaussian_scene_from_raw(
            self.gaussian_raw[batch_index],
            self.points[batch_index],
            self.sh_degree,
            voxel_size=voxel_size,
            transform=transform,
            out_sh_degree=sh_degree,
            chunk_size=chunk_size,
        )
