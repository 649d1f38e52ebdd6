"""EWA projection of 3D Gaussians into pinhole cameras, following gsplat's ``fully_fused_projection``.

For every (camera, Gaussian) pair this computes the projected mean, the inverse of the dilated 2D
covariance (the "conic"), the camera-space depth, gsplat's opacity-aware screen radius and whether
the pair survives gsplat's culling. Everything differentiable is computed with plain torch ops so
autograd reaches means, rotations, log-scales and opacity logits.

gsplat facts reproduced here (gsplat 1.5.3, ``ProjectionEWA3DGSFused.cu`` and ``Utils.cuh``):

* Covariance ``R S S^T R^T`` with R from the normalised (w, x, y, z) quaternion.
* The Jacobian of the pinhole projection is evaluated at the camera-space mean whose x/z and y/z are
  clipped to the field of view widened by 30% of tan(FoV/2) on each side, i.e.
  ``x/z`` in ``[-(cx/fx + 0.3 tx), (W - cx)/fx + 0.3 tx]`` with ``tx = W / (2 fx)`` (same for y).
  The projected mean itself is not clipped.
* ``eps2d = 0.3`` is added to the diagonal of the 2D covariance; a non-positive determinant culls.
* Culled: camera z outside [near, far], opacity below 1/255, or a screen box fully off the image.
* Radius per axis: ``ceil(extend * sqrt(cov2d_ii))`` with ``extend = min(3.33, sqrt(2 ln(255 opacity)))``,
  which bounds exactly the region where ``opacity * exp(-0.5 d^T conic d) >= 1/255``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.geometry.rotations import quaternion_to_matrix

EPS2D = 0.3
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTEND = 3.33  # gsplat's cap on the box half-size, in standard deviations
FOV_CLIP_MARGIN = 0.3  # fraction of tan(FoV/2) added on each side before clipping the Jacobian point


@dataclass
class ProjectedGaussians:
    """Per-camera screen-space Gaussians.

    Attributes:
        means2d: (V, N, 2) projected centres in pixels (pixel (u, v) has its centre at (u+0.5, v+0.5)).
        conics: (V, N, 3) upper triangle (a, b, c) of the inverse dilated 2D covariance [[a, b], [b, c]].
        depths: (V, N) camera-space z.
        radii: (V, N, 2) integer box half-sizes in pixels (x, y), 0 for culled pairs; not differentiable.
        visible: (V, N) bool, True where gsplat would keep the pair.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    visible: Tensor


def covariance_3d(rotations: Tensor, log_scales: Tensor) -> Tensor:
    """(N, 4) quaternions and (N, 3) log standard deviations -> (N, 3, 3) world covariances R S S^T R^T."""
    scaled_axes = quaternion_to_matrix(rotations) * log_scales.exp().unsqueeze(-2)  # R @ diag(s)
    return scaled_axes @ scaled_axes.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    world_to_camera: Tensor,
    intrinsics: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
) -> ProjectedGaussians:
    """Projects N Gaussians into V cameras (see the module docstring for the exact rules).

    Args:
        means: (N, 3) world centres.
        covariances: (N, 3, 3) world covariances.
        opacities: (N,) opacities in (0, 1) (used for the culling and the radius only).
        world_to_camera: (V, 4, 4) OpenCV view matrices.
        intrinsics: (V, 3, 3) pixel intrinsics.
        width, height: image size in pixels.
        near_plane, far_plane: camera-z clipping range; pairs outside are culled.
    """
    rot = world_to_camera[:, None, :3, :3]  # (V, 1, 3, 3)
    means_cam = (rot @ means[None, :, :, None]).squeeze(-1) + world_to_camera[:, None, :3, 3]  # (V, N, 3)
    cov_cam = rot @ covariances[None] @ rot.transpose(-1, -2)  # (V, N, 3, 3)

    x, y, z = means_cam.unbind(-1)
    in_depth_range = (z >= near_plane) & (z <= far_plane)
    # Culled pairs never reach the image; giving them z = 1 keeps their (unused) values finite so
    # that zero gradients stay zero instead of turning into 0 * inf = NaN in the backward pass.
    z = torch.where(in_depth_range, z, torch.ones_like(z))

    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]  # (V, 1)
    cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
    tan_half_fov_x = 0.5 * width / fx
    tan_half_fov_y = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + FOV_CLIP_MARGIN * tan_half_fov_x
    lim_x_neg = cx / fx + FOV_CLIP_MARGIN * tan_half_fov_x
    lim_y_pos = (height - cy) / fy + FOV_CLIP_MARGIN * tan_half_fov_y
    lim_y_neg = cy / fy + FOV_CLIP_MARGIN * tan_half_fov_y
    inv_z = 1.0 / z
    x_clipped = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * inv_z))
    y_clipped = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * inv_z))

    # Jacobian of (fx x/z + cx, fy y/z + cy) at the clipped point: rows (V, N, 3).
    zeros = torch.zeros_like(z)
    jac = torch.stack(
        [
            torch.stack([fx * inv_z, zeros, -fx * x_clipped * inv_z * inv_z], dim=-1),
            torch.stack([zeros, fy * inv_z, -fy * y_clipped * inv_z * inv_z], dim=-1),
        ],
        dim=-2,
    )  # (V, N, 2, 3)
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2)  # (V, N, 2, 2)
    cov_xx = cov2d[..., 0, 0] + EPS2D
    cov_xy = cov2d[..., 0, 1]
    cov_yy = cov2d[..., 1, 1] + EPS2D
    det = cov_xx * cov_yy - cov_xy * cov_xy
    positive = det > 0
    det_safe = torch.where(positive, det, torch.ones_like(det))
    conics = torch.stack([cov_yy / det_safe, -cov_xy / det_safe, cov_xx / det_safe], dim=-1)
    means2d = torch.stack([fx * x * inv_z + cx, fy * y * inv_z + cy], dim=-1)

    with torch.no_grad():
        opaque_enough = opacities >= ALPHA_THRESHOLD  # (N,)
        extend = torch.sqrt(2.0 * torch.log(opacities.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_EXTEND)[None]  # (1, N)
        radius_x = torch.ceil(extend * cov_xx.clamp_min(0).sqrt())
        radius_y = torch.ceil(extend * cov_yy.clamp_min(0).sqrt())
        mx, my = means2d.detach().unbind(-1)
        on_screen = (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
        visible = in_depth_range & positive & opaque_enough[None] & on_screen & ((radius_x > 0) | (radius_y > 0))
        radii = torch.stack([radius_x, radius_y], dim=-1).where(visible[..., None], torch.zeros_like(means2d))
        radii = radii.to(torch.int64)

    return ProjectedGaussians(means2d=means2d, conics=conics, depths=z, radii=radii, visible=visible)
