"""AnySplat's post-processing: raw Gaussian-head output + depth -> 3D Gaussians.

Reproduces the official inference path of ``EncoderAnySplat.forward`` (voxel merging, opacity
mapping) and ``UnifiedGaussianAdapter`` (activations), and VGGT's batched depth unprojection.

Raw channel layout of :class:`engine.models.dpt_head.GaussianParamHead` for SH degree d
(d_sh = (d+1)^2; 84 channels for d = 4)::

    [0]                  density (opacity logit)
    [1:4]                scale (pre-activation)
    [4:8]                rotation quaternion, (x, y, z, w) order, unnormalised
    [8:8+3*d_sh]         SH coefficients, RGB-major: viewed as (3, d_sh)
    [8+3*d_sh]           confidence (only weights the voxel merge)

Activations (applied after voxel merging, as upstream):
    opacity   = sigmoid(density), through the official opacity mapping with exponent 1
    scales    = min(0.001 * softplus(scale), 0.3)
    rotation  = q / (|q| + 1e-8), (x, y, z, w)
    harmonics = sh (3, d_sh) * sh_mask, sh_mask = 1 for l = 0 and 0.1 * 0.25^l for degree l >= 1

Colour convention: the harmonics are evaluated as in gsplat / 3DGS, colour = SH(dir) + 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.scene import MAX_SH_DEGREE, GaussianScene

# Official constants (UnifiedGaussianAdapter / EncoderAnySplat.voxelizaton_with_fusion).
SCALE_MULTIPLIER = 0.001
MAX_SCALE = 0.3
QUATERNION_EPS = 1e-8
SOFTMAX_DENOMINATOR_EPS = 1e-6
# Values the official code pads batch elements with when their Gaussian counts differ.
PAD_FEATURE_VALUE = -1e10
PAD_POINT_VALUE = -1e4


def num_sh_coeffs(sh_degree: int) -> int:
    """(d+1)^2 coefficients per colour channel."""
    if sh_degree < 0:
        raise ValueError(f"sh_degree must be >= 0, got {sh_degree}")
    return (sh_degree + 1) ** 2


def gaussian_head_output_dim(sh_degree: int) -> int:
    """Raw channels of the Gaussian head: density 1 + scale 3 + quaternion 4 + SH 3*(d+1)^2 + conf 1."""
    return 1 + 3 + 4 + 3 * num_sh_coeffs(sh_degree) + 1


def sh_mask(sh_degree: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """(d_sh,) per-coefficient factors: 1 for degree 0, 0.1 * 0.25^l for every coefficient of degree l."""
    mask = torch.ones(num_sh_coeffs(sh_degree), dtype=dtype, device=device)
    for degree in range(1, sh_degree + 1):
        mask[degree**2 : (degree + 1) ** 2] = 0.1 * 0.25**degree
    return mask


def map_pdf_to_opacity(pdf: Tensor, exponent: float = 1.0) -> Tensor:
    """The official opacity mapping 0.5 * (1 - (1 - p)^e + p^(1/e)).

    The released configuration uses e = 2^0 = 1, which is p up to float rounding; we evaluate the
    same expression so that results match upstream bit for bit.
    """
    return 0.5 * (1 - (1 - pdf) ** exponent + pdf ** (1 / exponent))


def quaternion_xyzw_to_matrix(quaternions: Tensor, eps: float = QUATERNION_EPS) -> Tensor:
    """(..., 4) scalar-last quaternions -> (..., 3, 3) rotations; non-unit inputs are normalised via 2/|q|^2.

    Kept beside AnySplat rather than in ``engine.geometry``: its epsilon in 2/(|q|^2 + eps), bit for bit.
    """
    x, y, z, w = torch.unbind(quaternions, dim=-1)
    two_s = 2 / ((quaternions * quaternions).sum(dim=-1) + eps)
    rows = (
        1 - two_s * (y * y + z * z),
        two_s * (x * y - z * w),
        two_s * (x * z + y * w),
        two_s * (x * y + z * w),
        1 - two_s * (x * x + z * z),
        two_s * (y * z - x * w),
        two_s * (x * z - y * w),
        two_s * (y * z + x * w),
        1 - two_s * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def build_covariance(scales: Tensor, rotations_xyzw: Tensor) -> Tensor:
    """R S S^T R^T from scales (..., 3) and xyzw quaternions (..., 4) -> (..., 3, 3)."""
    scale_matrix = scales.diag_embed()
    rotation = quaternion_xyzw_to_matrix(rotations_xyzw)
    return rotation @ scale_matrix @ scale_matrix.transpose(-1, -2) @ rotation.transpose(-1, -2)


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


def unproject_depth_official(depth: Tensor, extrinsic_w2c: Tensor, intrinsic: Tensor) -> Tensor:
    """World points of every pixel, exactly as VGGT's ``batchify_unproject_depth_map_to_point_map``.

    Pixel (row v, column u) uses the integer indices u = 0..W-1, v = 0..H-1 (no +0.5) with the
    intrinsics' principal point (VGGT predicts (W/2, H/2)): x_c = (u - cx) * d / fx,
    y_c = (v - cy) * d / fy, z_c = d; world = R^T (x_c - t) through the closed-form SE(3) inverse.

    Args:
        depth: (B, V, H, W) or (B, V, H, W, 1) camera z-depth.
        extrinsic_w2c: (B, V, 3, 4) or (B, V, 4, 4) world-to-camera [R | t], OpenCV axes.
        intrinsic: (B, V, 3, 3) pixel intrinsics, no skew.

    Returns:
        (B, V, H, W, 3) world points.
    """
    if depth.dim() == 5:
        if depth.shape[-1] != 1:
            raise ValueError(f"a 5-D depth must end in a singleton channel, got {tuple(depth.shape)}")
        depth = depth.squeeze(-1)
    if depth.dim() != 4:
        raise ValueError(f"depth must be (B, V, H, W) or (B, V, H, W, 1), got {tuple(depth.shape)}")
    batch, views, height, width = depth.shape
    if extrinsic_w2c.shape not in ((batch, views, 3, 4), (batch, views, 4, 4)):
        raise ValueError(f"extrinsic_w2c must be ({batch}, {views}, 3|4, 4), got {tuple(extrinsic_w2c.shape)}")
    if intrinsic.shape != (batch, views, 3, 3):
        raise ValueError(f"intrinsic must be ({batch}, {views}, 3, 3), got {tuple(intrinsic.shape)}")

    depth = depth.flatten(0, 1)
    extrinsic_w2c = extrinsic_w2c.flatten(0, 1)
    intrinsic = intrinsic.flatten(0, 1)
    fx, fy = intrinsic[:, 0, 0, None, None], intrinsic[:, 1, 1, None, None]
    cx, cy = intrinsic[:, 0, 2, None, None], intrinsic[:, 1, 2, None, None]
    frames = depth.shape[0]
    u = torch.arange(width, device=depth.device)[None, None, :].expand(frames, height, width)
    v = torch.arange(height, device=depth.device)[None, :, None].expand(frames, height, width)
    camera_points = torch.stack(((u - cx) * depth / fx, (v - cy) * depth / fy, depth), dim=-1)

    # Closed-form inverse [R^T | -R^T t] of the world-to-camera transform.
    rotation_t = extrinsic_w2c[:, :3, :3].transpose(1, 2)
    camera_to_world = torch.eye(4, device=depth.device, dtype=rotation_t.dtype).repeat(frames, 1, 1)
    camera_to_world[:, :3, :3] = rotation_t
    camera_to_world[:, :3, 3:] = -torch.bmm(rotation_t, extrinsic_w2c[:, :3, 3:])

    homogeneous = torch.cat((camera_points, torch.ones_like(camera_points[..., :1])), dim=-1).flatten(1, 2)
    world = torch.bmm(camera_to_world, homogeneous.transpose(1, 2)).transpose(1, 2)[:, :, :3]
    return world.reshape(batch, views, height, width, 3)


def voxel_merge(points: Tensor, features: Tensor, conf: Tensor, voxel_size: float) -> tuple[Tensor, Tensor]:
    """Fuses the points that fall in one voxel, as AnySplat's ``voxelizaton_with_fusion``.

    Voxel id = round(point / voxel_size) (int); voxels are ordered as ``torch.unique`` sorts them
    (lexicographically). Inside a voxel the weights are a softmax of ``conf`` (the raw confidence
    channel) with denominator + 1e-6; the merged point and features are the weighted sums. Features are
    raw (pre-activation): activate after merging.

    Args:
        points: (N, 3) world points.
        features: (N, C) raw per-point features.
        conf: (N,) raw confidence logits.
        voxel_size: voxel edge length (> 0), in world units (0.002 in the released AnySplat config).

    Returns:
        (merged points (M, 3), merged features (M, C)), M = number of occupied voxels.
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    count = points.shape[0]
    if features.dim() != 2 or features.shape[0] != count:
        raise ValueError(f"features must be ({count}, C), got {tuple(features.shape)}")
    if conf.shape != (count,):
        raise ValueError(f"conf must be ({count},), got {tuple(conf.shape)}")

    voxel_ids = (points / voxel_size).round().int()
    _, inverse, _ = torch.unique(voxel_ids, dim=0, return_inverse=True, return_counts=True)
    num_voxels = int(inverse.max()) + 1 if count else 0

    voxel_max = torch.full((num_voxels,), float("-inf"), dtype=conf.dtype, device=conf.device)
    voxel_max = voxel_max.scatter_reduce(0, inverse, conf, reduce="amax", include_self=True)
    conf_exp = torch.exp(conf - voxel_max[inverse])
    voxel_sum = torch.zeros_like(voxel_max).index_add(0, inverse, conf_exp)
    weights = (conf_exp / (voxel_sum[inverse] + SOFTMAX_DENOMINATOR_EPS)).unsqueeze(-1)

    merged_points = points.new_zeros(num_voxels, 3).index_add(0, inverse, points * weights)
    merged_features = features.new_zeros(num_voxels, features.shape[1]).index_add(0, inverse, features * weights)
    return merged_points, merged_features


# --------------------------------------------------------------------------------------------------
# Activations and the Gaussian container
# --------------------------------------------------------------------------------------------------


@dataclass
class AnySplatGaussians:
    """Gaussians as AnySplat's encoder returns them, with leading dims (*batch, N).

    Attributes:
        means: (*, N, 3) world centres.
        opacities: (*, N) in [0, 1].
        opacity_logits: (*, N) the raw density, ``opacities`` ~= sigmoid(opacity_logits).
        scales: (*, N, 3) standard deviations (not logs).
        rotations_xyzw: (*, N, 4) unit quaternions, scalar last (AnySplat's order).
        harmonics: (*, N, 3, d_sh) SH coefficients, RGB first (AnySplat's layout).
        covariances: (*, N, 3, 3) world covariances R S S^T R^T.
        valid: (*, N) bool, False for the padding rows of a batch whose elements have fewer Gaussians.
    """

    means: Tensor
    opacities: Tensor
    opacity_logits: Tensor
    scales: Tensor
    rotations_xyzw: Tensor
    harmonics: Tensor
    covariances: Tensor
    valid: Tensor

    @property
    def rotations_wxyz(self) -> Tensor:
        """(*, N, 4) the same quaternions, scalar first (3DGS PLY / gsplat order)."""
        return self.rotations_xyzw.roll(1, dims=-1)

    @property
    def sh_degree(self) -> int:
        return int(round(self.harmonics.shape[-1] ** 0.5)) - 1

    def to_scene(self, batch_index: int = 0, sh_degree: int | None = None) -> GaussianScene:
        """One batch element as an :class:`engine.scene.GaussianScene` (padding rows dropped).

        ``sh_degree`` (default: min(own degree, ``MAX_SH_DEGREE``)) truncates the harmonics; the
        released model predicts degree 4, whose coefficients are damped by sh_mask (x 0.1 * 0.25^4).
        Scales that underflowed to 0 (softplus of a very negative raw value) get log-scale log(1e-30)
        instead of -inf: such Gaussians are invisible either way.
        """
        if self.means.dim() != 3:
            raise ValueError(f"to_scene needs batched Gaussians (B, N, 3), got means {tuple(self.means.shape)}")
        degree = min(self.sh_degree, MAX_SH_DEGREE) if sh_degree is None else sh_degree
        if not 0 <= degree <= min(self.sh_degree, MAX_SH_DEGREE):
            raise ValueError(f"sh_degree must be in 0..{min(self.sh_degree, MAX_SH_DEGREE)}, got {degree}")
        keep = self.valid[batch_index]
        return GaussianScene(
            means=self.means[batch_index][keep],
            rotations=self.rotations_wxyz[batch_index][keep],
            log_scales=torch.log(self.scales[batch_index][keep].clamp_min(1e-30)),
            opacity_logits=self.opacity_logits[batch_index][keep],
            sh=self.harmonics[batch_index][keep][..., : num_sh_coeffs(degree)].transpose(-1, -2).contiguous(),
        )


class GaussianAdapter(nn.Module):
    """Raw features -> Gaussian parameters, as AnySplat's ``UnifiedGaussianAdapter`` + opacity mapping.

    Args:
        sh_degree: SH degree d of the head's output (4 for the released model).
        opacity_exponent: exponent of :func:`map_pdf_to_opacity` (1 at inference).
    """

    def __init__(self, sh_degree: int = 4, opacity_exponent: float = 1.0) -> None:
        super().__init__()
        self.sh_degree = sh_degree
        self.opacity_exponent = opacity_exponent
        self.register_buffer("sh_mask", sh_mask(sh_degree), persistent=False)

    @property
    def d_sh(self) -> int:
        return num_sh_coeffs(self.sh_degree)

    @property
    def num_raw_features(self) -> int:
        """Channels this adapter activates: the head's output without the confidence channel."""
        return gaussian_head_output_dim(self.sh_degree) - 1

    def forward(self, means: Tensor, raw_features: Tensor, valid: Tensor | None = None) -> AnySplatGaussians:
        """Activates raw features.

        Args:
            means: (*, N, 3) centres (unprojected, possibly voxel-merged).
            raw_features: (*, N, 1 + 3 + 4 + 3*d_sh) raw channels 0..C-2 of the head (confidence dropped).
            valid: (*, N) bool mask of real rows; all True if None.

        Returns:
            :class:`AnySplatGaussians` in float32.
        """
        if raw_features.shape[-1] != self.num_raw_features:
            raise ValueError(
                f"raw_features must have {self.num_raw_features} channels for SH degree {self.sh_degree}, "
                f"got {raw_features.shape[-1]}"
            )
        if means.shape[-1] != 3 or means.shape[:-1] != raw_features.shape[:-1]:
            raise ValueError(
                f"means must be {tuple(raw_features.shape[:-1]) + (3,)} to match raw_features, got {tuple(means.shape)}"
            )
        density, scales, rotations, sh = raw_features.split((1, 3, 4, 3 * self.d_sh), dim=-1)
        density = density.squeeze(-1)
        opacities = map_pdf_to_opacity(density.sigmoid(), self.opacity_exponent)
        scales = (SCALE_MULTIPLIER * F.softplus(scales)).clamp_max(MAX_SCALE)
        rotations = rotations / (rotations.norm(dim=-1, keepdim=True) + QUATERNION_EPS)
        harmonics = sh.unflatten(-1, (3, self.d_sh)) * self.sh_mask.to(sh.dtype)
        covariances = build_covariance(scales, rotations)
        if valid is None:
            valid = torch.ones(density.shape, dtype=torch.bool, device=density.device)
        return AnySplatGaussians(
            means=means.float(),
            opacities=opacities.float(),
            opacity_logits=density.float(),
            scales=scales.float(),
            rotations_xyzw=rotations.float(),
            harmonics=harmonics.float(),
            covariances=covariances.float(),
            valid=valid,
        )


def _pad_rows(tensors: list[Tensor], rows: int, value: float) -> Tensor:
    """Stacks (n_i, ...) tensors into (len, rows, ...) filling missing rows with ``value``."""
    padded = [torch.cat([t, t.new_full((rows - t.shape[0], *t.shape[1:]), value)]) for t in tensors]
    return torch.stack(padded)


def gaussians_from_raw(
    raw: Tensor,
    points: Tensor,
    sh_degree: int = 4,
    voxel_size: float | None = None,
    opacity_exponent: float = 1.0,
) -> AnySplatGaussians:
    """The official post-processing: raw head output + per-pixel world points -> Gaussians.

    Without merging (``voxel_size=None``) there is one Gaussian per pixel, N = V*H*W in (view, row,
    column) order. With merging, each batch element is voxel-merged separately (:func:`voxel_merge`)
    and shorter elements are padded as upstream (features -1e10 -> opacity 0, points -1e4), flagged by
    ``valid = False``.

    Args:
        raw: (B, V, C, H, W) output of :class:`GaussianParamHead`, C = gaussian_head_output_dim(sh_degree).
        points: (B, V, H, W, 3) world points (:func:`unproject_depth_official` of the predicted depth).
        sh_degree: SH degree of ``raw``.
        voxel_size: voxel edge for merging, or None for one Gaussian per pixel.
        opacity_exponent: see :func:`map_pdf_to_opacity`.
    """
    expected = gaussian_head_output_dim(sh_degree)
    if raw.dim() != 5 or raw.shape[2] != expected:
        raise ValueError(f"raw must be (B, V, {expected}, H, W) for SH degree {sh_degree}, got {tuple(raw.shape)}")
    batch, views, _, height, width = raw.shape
    if points.shape != (batch, views, height, width, 3):
        raise ValueError(f"points must be {(batch, views, height, width, 3)}, got {tuple(points.shape)}")

    features = raw[:, :, :-1].permute(0, 1, 3, 4, 2).reshape(batch, views * height * width, expected - 1)
    conf = raw[:, :, -1].reshape(batch, views * height * width)
    flat_points = points.reshape(batch, views * height * width, 3)
    adapter = GaussianAdapter(sh_degree, opacity_exponent).to(raw.device)
    # On the meta device (a dry run) the voxel count is data-dependent and unknown: merging is skipped,
    # which gives the upper bound N = V*H*W for every tensor that follows.
    if voxel_size is None or raw.is_meta:
        return adapter(flat_points, features)

    merged = [voxel_merge(flat_points[b], features[b], conf[b], voxel_size) for b in range(batch)]
    rows = max(p.shape[0] for p, _ in merged)
    merged_points = _pad_rows([p for p, _ in merged], rows, PAD_POINT_VALUE)
    merged_features = _pad_rows([f for _, f in merged], rows, PAD_FEATURE_VALUE)
    valid = (
        torch.arange(rows, device=raw.device)[None, :]
        < torch.tensor([p.shape[0] for p, _ in merged], device=raw.device)[:, None]
    )
    return adapter(merged_points, merged_features, valid)
