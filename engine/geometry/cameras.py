"""Camera maths on OpenCV camera-to-world poses (x right, y down, z forward), intrinsics in pixels."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix, slerp
from engine.scene import Cameras


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """(..., 4, 4) OpenCV camera-to-world for cameras at ``eye`` looking at ``target``.

    ``up`` is the world's up direction; the camera's y axis (down in the image) points away from it.
    """
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up.expand_as(forward)), dim=-1)
    down = torch.linalg.cross(forward, right)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = down
    c2w[..., :3, 2] = forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1
    return c2w


def interpolate_cameras(cameras: Cameras, poses_between: int) -> Cameras:
    """Adds ``poses_between`` cameras between each consecutive pair: rotations slerped, centres and
    intrinsics interpolated linearly. V cameras -> V + (V - 1) * poses_between cameras (float64 inside).
    """
    if poses_between < 0:
        raise ValueError(f"poses_between must be >= 0, got {poses_between}")
    c2w = cameras.camera_to_world.detach().double().cpu()
    intrinsics = cameras.intrinsics.detach().double().cpu()
    if len(cameras) < 2 or poses_between == 0:
        return cameras
    quaternions = matrix_to_quaternion(c2w[:, :3, :3])
    fractions = torch.arange(poses_between + 1, dtype=torch.float64) / (poses_between + 1)
    poses, intrinsic_list = [], []
    for index in range(len(cameras) - 1):
        rotations = quaternion_to_matrix(slerp(quaternions[index], quaternions[index + 1], fractions))
        centres = torch.lerp(c2w[index, :3, 3][None], c2w[index + 1, :3, 3][None], fractions[:, None])
        pose = torch.eye(4, dtype=torch.float64).repeat(len(fractions), 1, 1)
        pose[:, :3, :3], pose[:, :3, 3] = rotations, centres
        poses.append(pose)
        intrinsic_list.append(
            torch.lerp(intrinsics[index][None], intrinsics[index + 1][None], fractions[:, None, None])
        )
    poses.append(c2w[-1:])
    intrinsic_list.append(intrinsics[-1:])
    return Cameras(
        torch.cat(poses).to(cameras.camera_to_world.dtype),
        torch.cat(intrinsic_list).to(cameras.intrinsics.dtype),
        cameras.width,
        cameras.height,
    )


def orthonormalized(cameras: Cameras) -> Cameras:
    """The cameras with each rotation replaced by the nearest rotation matrix (SVD, float64).

    Decoders predict rotations in low precision; the cameras JSON format requires orthonormal ones.
    """
    c2w = cameras.camera_to_world.detach().double().cpu().clone()
    u, _, vh = torch.linalg.svd(c2w[:, :3, :3])
    sign = torch.sign(torch.linalg.det(u @ vh))
    vh[:, 2] *= sign[:, None]
    c2w[:, :3, :3] = u @ vh
    c2w[:, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    return Cameras(c2w.float(), cameras.intrinsics.detach().float().cpu(), cameras.width, cameras.height)
