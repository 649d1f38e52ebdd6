"""VGGT's camera pose encoding ("absT_quaR_FoV") and the geometry around it.

Encoding (9 values per view), for the *world-to-camera* extrinsic [R | t] in OpenCV axes:

* ``[0:3]`` t (not the camera centre, which is -R^T t);
* ``[3:7]`` quaternion of R, scalar last (x, y, z, w);
* ``[7]`` vertical field of view fov_h, ``[8]`` horizontal fov_w, in radians.

Intrinsics are rebuilt with the principal point at (W/2, H/2) and
``f = (size/2) / (tan(fov/2) + eps)``: VGGT uses eps = 0, AnySplat's copy of this function adds
``1e-3`` to the tangent (``fov_eps`` below). ``quat_to_mat`` scales by 2/|q|^2, so a non-unit quaternion
still gives a rotation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

VGGT_FOV_EPS = 0.0
ANYSPLAT_FOV_EPS = 1e-3


def quat_to_mat(quaternions: Tensor) -> Tensor:
    """(..., 4) quaternions (x, y, z, w) -> (..., 3, 3) rotation matrices (any non-zero length).

    Kept beside VGGT rather than in ``engine.geometry``: scalar-last, unnormalised 2/|q|^2 form, VGGT's bit for bit.
    """
    i, j, k, r = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    o = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return o.reshape(quaternions.shape[:-1] + (3, 3))


def _sqrt_positive_part(x: Tensor) -> Tensor:
    """sqrt(max(0, x)) with a zero (not NaN) gradient at 0."""
    positive = x > 0
    # data-independent (no boolean indexing), so that it also runs on the meta device
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def mat_to_quat(matrix: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w) with w >= 0.

    Kept beside VGGT rather than in ``engine.geometry``: VGGT's branch selection (floor 0.1), bit for bit.

    The numerically robust branch selection of the official code: of the four candidate formulas,
    the one with the largest denominator is used.
    """
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) matrices, got {tuple(matrix.shape)}")
    batch = matrix.shape[:-2]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(batch + (9,)), dim=-1)
    q_abs = _sqrt_positive_part(
        torch.stack(
            [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1
        )
    )
    # Rows: candidates (r, i, j, k) computed from each of the four diagonal combinations.
    candidates = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    candidates = candidates / (2.0 * q_abs[..., None].max(floor))
    best = q_abs.argmax(dim=-1)[..., None, None].expand(batch + (1, 4))
    rijk = candidates.gather(-2, best).squeeze(-2)
    xyzw = rijk[..., [1, 2, 3, 0]]
    return torch.where(xyzw[..., 3:4] < 0, -xyzw, xyzw)


def activate_pose(pose: Tensor, trans_act: str = "linear", quat_act: str = "linear", fl_act: str = "linear") -> Tensor:
    """Applies the per-part activations to a raw (..., 9) encoding: T, quaternion, field of view."""
    parts = (pose[..., :3], pose[..., 3:7], pose[..., 7:])
    return torch.cat([_activation(p, a) for p, a in zip(parts, (trans_act, quat_act, fl_act))], dim=-1)


def _activation(x: Tensor, kind: str) -> Tensor:
    if kind == "linear":
        return x
    if kind == "inv_log":
        return torch.sign(x) * torch.expm1(torch.abs(x))
    if kind == "exp":
        return torch.exp(x)
    if kind == "relu":
        return F.relu(x)
    raise ValueError(f"unknown pose activation {kind!r}")


def pose_encoding_to_extri_intri(
    pose_encoding: Tensor, image_size_hw: tuple[int, int], fov_eps: float = VGGT_FOV_EPS
) -> tuple[Tensor, Tensor]:
    """(B, S, 9) encoding -> world-to-camera extrinsics (B, S, 3, 4) and pixel intrinsics (B, S, 3, 3).

    ``fov_eps``: 0 for VGGT, ``ANYSPLAT_FOV_EPS`` (1e-3, added to tan(fov/2)) for AnySplat.
    """
    if pose_encoding.shape[-1] != 9:
        raise ValueError(f"pose encoding must have 9 values, got {tuple(pose_encoding.shape)}")
    translation = pose_encoding[..., :3]
    rotation = quat_to_mat(pose_encoding[..., 3:7])
    extrinsics = torch.cat([rotation, translation[..., None]], dim=-1)
    height, width = image_size_hw
    fy = (height / 2.0) / (torch.tan(pose_encoding[..., 7] / 2.0) + fov_eps)
    fx = (width / 2.0) / (torch.tan(pose_encoding[..., 8] / 2.0) + fov_eps)
    intrinsics = torch.zeros(pose_encoding.shape[:-1] + (3, 3), device=pose_encoding.device, dtype=fx.dtype)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extri_intri_to_pose_encoding(extrinsics: Tensor, intrinsics: Tensor, image_size_hw: tuple[int, int]) -> Tensor:
    """Inverse of ``pose_encoding_to_extri_intri`` (VGGT, eps 0): (..., 3, 4) + (..., 3, 3) -> (..., 9)."""
    height, width = image_size_hw
    quat = mat_to_quat(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((height / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsics[..., 0, 0])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1).float()


def closed_form_inverse_se3(transform: Tensor) -> Tensor:
    """(..., 3 or 4, 4) rigid transforms [R | t] -> (..., 4, 4) inverses [R^T | -R^T t]."""
    rotation = transform[..., :3, :3]
    translation = transform[..., :3, 3:]
    rot_t = rotation.transpose(-1, -2)
    out = torch.zeros(transform.shape[:-2] + (4, 4), dtype=transform.dtype, device=transform.device)
    out[..., :3, :3] = rot_t
    out[..., :3, 3:] = -rot_t @ translation
    out[..., 3, 3] = 1
    return out
