"""Losses and held-out metrics of the 3D teachers.

Losses (all on one normalised :class:`engine.teachers.data.TeacherBatch`):

* camera: VGGT's: for each of the n refinement iterations, weight 0.6^(n-1-i), the L1 distance of the
  predicted pose encoding [translation, quaternion xyzw, fov_h, fov_w] to the ground truth's (view 0's
  frame, normalised translation);
* depth: L1 of log depth on surface pixels, plus ``sky_weight`` x the L1 of log depth to
  ``SKY_DEPTH`` on sky pixels (per-pixel Gaussians of the sky sit beyond the floor);
* points (VGGT): L1 of the point head's world points on surface pixels, plus ``sky_weight`` x their L1
  to the points at ``SKY_DEPTH`` on sky pixels (as the depth: the sky's points form a backdrop beyond the
  floor instead of falling anywhere inside the scene);
* render (AnySplat): L1 + MSE between the Gaussians rendered with the project rasterizer at ground-truth
  cameras (held-out and input views, at a reduced resolution) and the frames, over a background colour
  the trainer chooses (``TeacherTrainConfig.render_background``: a random colour per view by default).

Metrics: depth AbsRel = mean |d - d*| / d* over surface pixels (no scale alignment: the network's own
scale convention is part of what is measured); camera rotation error = mean geodesic angle between
predicted and true camera-to-world rotations of views 1..T-1, both in view 0's frame; novel-view PSNR
of the Gaussians (re-expressed in view 0's predicted frame, as ``reconstruct`` writes them) rendered at
the held-out cameras at full resolution (over the scene's sky colour), and their coverage, the mean
accumulated opacity of those renders (1: every pixel covered; a network that leaves the sky transparent
scores the sky's share less, and Blender shows its world colour there).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.data import ORBIT_ARC_DEG, orbit_cameras
from engine.data.scenes import ELEVATION_RANGE_DEG
from engine.geometry.rotations import rotation_angle_deg
from engine.render import rasterize
from engine.scene import Cameras
from engine.teachers.data import SKY_DEPTH, TeacherBatch, gt_pose_encoding

CAMERA_GAMMA = 0.6


def camera_loss(pose_enc_list: list[Tensor], target: Tensor, gamma: float = CAMERA_GAMMA) -> Tensor:
    """Weighted L1 of every refinement iteration's encoding (B, S, 9) to ``target`` (B, S, 9)."""
    n = len(pose_enc_list)
    total = pose_enc_list[0].new_zeros(())
    for i, pred in enumerate(pose_enc_list):
        weight = gamma ** (n - 1 - i)
        total = total + weight * (pred - target).abs().mean()
    return total


def depth_loss(depth: Tensor, batch: TeacherBatch, sky_weight: float = 0.1) -> Tensor:
    """Log-depth L1; ``depth`` (B, S, H, W, 1) or (B, S, H, W), positive."""
    if depth.dim() == 5:
        depth = depth.squeeze(-1)
    log_pred = depth.clamp_min(1e-6).log()
    valid = batch.valid
    surface = (log_pred - batch.depth.clamp_min(1e-6).log()).abs()[valid].mean()
    sky_mask = ~valid
    if sky_mask.any():
        sky = (log_pred - math.log(SKY_DEPTH)).abs()[sky_mask].mean()
        return surface + sky_weight * sky
    return surface


def points_loss(points: Tensor, batch: TeacherBatch, sky_weight: float = 0.1) -> Tensor:
    """L1 of (B, S, H, W, 3) predicted world points on surface pixels, plus ``sky_weight`` x the L1 to
    ``batch.sky_points`` on sky pixels."""
    surface = (points - batch.points).abs().sum(-1)[batch.valid].mean()
    sky_mask = ~batch.valid
    if sky_weight and sky_mask.any():
        return surface + sky_weight * (points - batch.sky_points).abs().sum(-1)[sky_mask].mean()
    return surface


def scaled_cameras(cameras: Cameras, size: int) -> Cameras:
    """The same cameras for square images of ``size`` pixels (intrinsics scaled)."""
    factor = size / cameras.width
    intrinsics = cameras.intrinsics.clone()
    intrinsics[:, :2] *= factor
    return Cameras(cameras.camera_to_world, intrinsics, width=size, height=round(cameras.height * factor))


def downsample(images: Tensor, size: int) -> Tensor:
    """(V, H, W, 3) -> (V, size, size, 3), area-averaged."""
    x = images.permute(0, 3, 1, 2)
    return F.interpolate(x, size=(size, size), mode="area").permute(0, 2, 3, 1)


def render_loss(scene, cameras: Cameras, targets: Tensor, background: Tensor) -> tuple[Tensor, Tensor]:
    """(L1 + MSE, MSE) between renders of ``scene`` at ``cameras`` and ``targets`` (V, h, w, 3)."""
    out = rasterize(scene, cameras, background=background)
    diff = out.rgb - targets
    mse = diff.square().mean()
    return diff.abs().mean() + mse, mse


def psnr_from_mse(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-12))


def depth_absrel(depth: Tensor, batch: TeacherBatch) -> float:
    if depth.dim() == 5:
        depth = depth.squeeze(-1)
    valid = batch.valid
    gt = batch.depth[valid]
    return float(((depth[valid] - gt).abs() / gt).mean())


def rotation_errors(pred_camera_to_world: Tensor, batch: TeacherBatch) -> Tensor:
    """(T-1,) degrees: predicted vs true rotations of views 1..T-1 (both relative to view 0)."""
    pred = pred_camera_to_world[1:, :3, :3]
    true = batch.camera_to_world[0, 1:, :3, :3]
    return rotation_angle_deg(pred, true)


def prior_rotation_errors(batch: TeacherBatch) -> Tensor:
    """(T-1,) degrees: the content-blind prior (the world's orbit at its middle elevation) vs the true
    rotations of views 1..T-1, both relative to view 0. The baseline a camera head must beat: with the
    world's fixed half orbit, rotations differ between scenes only through the orbit's elevation."""
    views = batch.camera_to_world.shape[1]
    prior = orbit_cameras(
        views, 16, 16, distance=1.0, elevation_deg=sum(ELEVATION_RANGE_DEG) / 2, arc_deg=ORBIT_ARC_DEG
    ).camera_to_world.double()
    relative = torch.linalg.inv(prior[0]) @ prior
    return rotation_angle_deg(relative[1:, :3, :3], batch.camera_to_world[0, 1:, :3, :3])


def translation_errors(pred_camera_to_world: Tensor, batch: TeacherBatch) -> Tensor:
    """(T-1,) normalised distances between predicted and true camera centres of views 1..T-1."""
    return (pred_camera_to_world[1:, :3, 3] - batch.camera_to_world[0, 1:, :3, 3]).norm(dim=-1)


@torch.no_grad()
def evaluate_prediction(prediction, batch: TeacherBatch, render: bool = True, max_views: int = 6) -> dict:
    """Held-out metrics of one prediction (see the module doc); ``render`` adds the novel-view PSNR at
    ``max_views`` evenly spaced held-out views."""
    cameras = prediction.cameras(0, relative_to_first=True)
    rot = rotation_errors(cameras.camera_to_world.float(), batch)
    metrics = {
        "depth_absrel": depth_absrel(prediction.depth.float(), batch),
        "rot_err_deg": float(rot.mean()),
        "rot_err_max_deg": float(rot.max()),
        "rot_err_prior_deg": float(prior_rotation_errors(batch).mean()),
        "trans_err": float(translation_errors(cameras.camera_to_world.float(), batch).mean()),
        "fov_err_deg": float(
            torch.rad2deg((prediction.pose_enc[0, :, 7:] - gt_pose_encoding(batch, prediction.fov_eps)[0, :, 7:]).abs())
            .mean()
            .item()
        ),
    }
    if hasattr(prediction, "world_points"):
        valid = batch.valid[0]
        err = (prediction.world_points[0].float() - batch.points[0]).norm(dim=-1)[valid]
        metrics["points_err"] = float(err.mean())
    if render and hasattr(prediction, "gaussian_scene"):
        scene = prediction.gaussian_scene(0, relative_to_first=True)
        count = len(batch.target_cameras)
        pick = torch.linspace(0, count - 1, min(max_views, count)).round().long()
        cams = batch.target_cameras
        cameras = Cameras(cams.camera_to_world[pick], cams.intrinsics[pick], width=cams.width, height=cams.height)
        out = rasterize(scene, cameras, background=batch.background)
        mse = (out.rgb.clamp(0, 1) - batch.target_images[pick]).square().mean(dim=(1, 2, 3))
        metrics["novel_psnr"] = float(torch.stack([torch.tensor(psnr_from_mse(float(m))) for m in mse]).mean())
        metrics["novel_coverage"] = float(out.alpha.mean())
        metrics["_renders"] = out.rgb.clamp(0, 1)
    return metrics


def mean_metrics(records: list[dict], prefix: Optional[str] = None) -> dict:
    keys = [k for k in records[0] if not k.startswith("_")]
    out = {k: float(sum(r[k] for r in records) / len(records)) for k in keys}
    if prefix:
        out = {f"{prefix}{k}": v for k, v in out.items()}
    return out
