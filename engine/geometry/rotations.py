"""Unit quaternions in (w, x, y, z) order (the 3DGS PLY and gsplat convention) and rotation matrices.

All functions are differentiable, batched over leading dimensions and keep the input's dtype and device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def matrix_to_quaternion(rotations: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Uses the largest of the four candidate denominators for numerical stability.
    """
    m = rotations
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack(
                [1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
                ],
                -1,
            ),
        ],
        dim=-2,
    )  # (..., 4, 4): row k is 4 q_k q (up to scale), best conditioned where q_k is largest
    diagonal = torch.stack(
        [
            1 + trace,
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        -1,
    )
    best = diagonal.argmax(dim=-1)
    quaternion = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quaternion = torch.nn.functional.normalize(quaternion, dim=-1)
    return torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def quaternion_to_matrix(quaternions: Tensor) -> Tensor:
    """(..., 4) quaternions (w, x, y, z), any length -> (..., 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quaternions, dim=-1).unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=-2,
    )


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of (..., 4) quaternions in (w, x, y, z) order."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def slerp(q0: Tensor, q1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation of unit quaternions (4,) at fractions t (K,) -> (K, 4), shortest arc."""
    dot = torch.dot(q0, q1)
    if dot < 0:  # q and -q are the same rotation; take the short way round
        q1, dot = -q1, -dot
    dot = dot.clamp(-1.0, 1.0)
    if dot > 0.9995:  # nearly equal: linear interpolation is exact enough and avoids 0/0
        out = q0[None] + t[:, None] * (q1 - q0)[None]
        return torch.nn.functional.normalize(out, dim=-1)
    angle = torch.acos(dot)
    weights0 = torch.sin((1 - t) * angle) / torch.sin(angle)
    weights1 = torch.sin(t * angle) / torch.sin(angle)
    return weights0[:, None] * q0[None] + weights1[:, None] * q1[None]


def rotation_angle_deg(r_a: Tensor, r_b: Tensor) -> Tensor:
    """Geodesic angle (degrees) between rotation matrices (..., 3, 3), computed in float64."""
    relative = r_a.double().transpose(-1, -2) @ r_b.double()
    cosine = (relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    # sin from the antisymmetric part: atan2 stays accurate for small angles, where arccos is not
    sine = (
        torch.stack(
            [
                relative[..., 2, 1] - relative[..., 1, 2],
                relative[..., 0, 2] - relative[..., 2, 0],
                relative[..., 1, 0] - relative[..., 0, 1],
            ],
            dim=-1,
        ).norm(dim=-1)
        / 2
    )
    return torch.rad2deg(torch.atan2(sine, cosine))
