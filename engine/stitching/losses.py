"""Self-distillation losses: L1 between the stitched decoder's outputs and the frozen original network's.

Weights per model as named presets (method.md §4, "paper" column):

AnySplat (``ANYSPLAT_PAPER``)
    depth 1, multi-scale depth gradient 0.005, Gaussian means / covariances / SH / opacities /
    rotations 1, Gaussian scales 10, depth confidence 0.01, anchor features 0.1, extrinsics 1,
    intrinsics 1, pose encodings (averaged over the camera head's iterations) 1.
VGGT (``VGGT_PAPER``)
    world points 1, depth 1, pose encodings (averaged over iterations) 5, depth and point confidences
    5e-3 each, depth- and point-map gradient regularisers 5e-3 each.

Counterparts in our model outputs, and what has none:

* Gaussians are the *activated* per-pixel Gaussians of ``AnySplatPrediction.gaussians()`` (no voxel
  merging, so student and teacher Gaussians correspond one to one); covariances are R S Sᵀ Rᵀ.
* "anchor features" = the raw per-pixel Gaussian-head output (``gaussian_raw``), the features the
  official voxeliser merges into anchors.
* "both confidences": our AnySplat has one confidence output, the depth head's (the official encoder
  also uses it to weight the voxel merge); the second official confidence (of the teacher-copy
  ``distill_*`` heads, which are not built) has no counterpart and no loss.
* intrinsics are compared normalised by the image size (fx/W, fy/H, cx/W, cy/H), so the term does not
  scale with the resolution; extrinsics are the (3, 4) world-to-camera matrices.
* multi-scale gradients: finite differences along x and y of the map average-pooled by 1, 2 and 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.models.outputs import AnySplatPrediction, VGGTPrediction

ANYSPLAT_PAPER = {
    "depth": 1.0,
    "depth_gradient": 0.005,
    "gaussian_means": 1.0,
    "gaussian_covariances": 1.0,
    "gaussian_harmonics": 1.0,
    "gaussian_opacities": 1.0,
    "gaussian_rotations": 1.0,
    "gaussian_scales": 10.0,
    "depth_confidence": 0.01,
    "anchor_features": 0.1,
    "extrinsics": 1.0,
    "intrinsics": 1.0,
    "pose_encoding": 1.0,
}
VGGT_PAPER = {
    "world_points": 1.0,
    "depth": 1.0,
    "pose_encoding": 5.0,
    "depth_confidence": 5e-3,
    "points_confidence": 5e-3,
    "depth_gradient": 5e-3,
    "points_gradient": 5e-3,
}
PRESETS = {"anysplat": ANYSPLAT_PAPER, "vggt": VGGT_PAPER}
GRADIENT_SCALES = (1, 2, 4)


def multiscale_gradient_l1(student: Tensor, teacher: Tensor, scales=GRADIENT_SCALES) -> Tensor:
    """Mean over scales of L1 between x/y finite differences of maps (B, S, H, W, C) pooled by each scale."""

    def as_images(x: Tensor) -> Tensor:
        b, s, h, w, c = x.shape
        return x.permute(0, 1, 4, 2, 3).reshape(b * s, c, h, w)

    a, b = as_images(student.float()), as_images(teacher.float())
    terms = []
    for scale in scales:
        if min(a.shape[-2:]) < 2 * scale:
            continue
        pa, pb = (F.avg_pool2d(a, scale), F.avg_pool2d(b, scale)) if scale > 1 else (a, b)
        dx = (pa.diff(dim=-1) - pb.diff(dim=-1)).abs().mean()
        dy = (pa.diff(dim=-2) - pb.diff(dim=-2)).abs().mean()
        terms.append(dx + dy)
    if not terms:
        raise ValueError(f"maps of {tuple(a.shape[-2:])} pixels are too small for gradient losses")
    return torch.stack(terms).mean()


def _l1(a: Tensor, b: Tensor) -> Tensor:
    return (a.float() - b.float()).abs().mean()


def _normalised_intrinsics(intrinsics: Tensor, image_size: tuple[int, int]) -> Tensor:
    h, w = image_size
    scale = intrinsics.new_tensor([w, h, w, h])
    values = torch.stack(
        [intrinsics[..., 0, 0], intrinsics[..., 1, 1], intrinsics[..., 0, 2], intrinsics[..., 1, 2]], dim=-1
    )
    return values / scale


def _pose_terms(student, teacher) -> Tensor:
    if len(student.pose_enc_list) != len(teacher.pose_enc_list):
        raise ValueError("student and teacher ran different numbers of camera-head iterations")
    return torch.stack([_l1(s, t) for s, t in zip(student.pose_enc_list, teacher.pose_enc_list)]).mean()


def anysplat_terms(student: AnySplatPrediction, teacher: AnySplatPrediction, needed: set[str]) -> dict[str, Tensor]:
    terms: dict[str, Tensor] = {}
    if "depth" in needed:
        terms["depth"] = _l1(student.depth, teacher.depth)
    if "depth_gradient" in needed:
        terms["depth_gradient"] = multiscale_gradient_l1(student.depth, teacher.depth)
    if "depth_confidence" in needed:
        terms["depth_confidence"] = _l1(student.depth_conf, teacher.depth_conf)
    if "anchor_features" in needed:
        terms["anchor_features"] = _l1(student.gaussian_raw, teacher.gaussian_raw)
    if needed & {"extrinsics", "intrinsics"}:
        ext_s, int_s = student.extrinsics_intrinsics()
        ext_t, int_t = teacher.extrinsics_intrinsics()
        terms["extrinsics"] = _l1(ext_s, ext_t)
        size = student.image_size
        terms["intrinsics"] = _l1(_normalised_intrinsics(int_s, size), _normalised_intrinsics(int_t, size))
    if "pose_encoding" in needed:
        terms["pose_encoding"] = _pose_terms(student, teacher)
    if any(name.startswith("gaussian_") for name in needed):
        gs, gt = student.gaussians(), teacher.gaussians()
        terms["gaussian_means"] = _l1(gs.means, gt.means)
        terms["gaussian_covariances"] = _l1(gs.covariances, gt.covariances)
        terms["gaussian_harmonics"] = _l1(gs.harmonics, gt.harmonics)
        terms["gaussian_opacities"] = _l1(gs.opacities, gt.opacities)
        terms["gaussian_rotations"] = _l1(gs.rotations_xyzw, gt.rotations_xyzw)
        terms["gaussian_scales"] = _l1(gs.scales, gt.scales)
    return terms


def vggt_terms(student: VGGTPrediction, teacher: VGGTPrediction, needed: set[str]) -> dict[str, Tensor]:
    terms: dict[str, Tensor] = {}
    if "world_points" in needed:
        terms["world_points"] = _l1(student.world_points, teacher.world_points)
    if "depth" in needed:
        terms["depth"] = _l1(student.depth, teacher.depth)
    if "pose_encoding" in needed:
        terms["pose_encoding"] = _pose_terms(student, teacher)
    if "depth_confidence" in needed:
        terms["depth_confidence"] = _l1(student.depth_conf, teacher.depth_conf)
    if "points_confidence" in needed:
        terms["points_confidence"] = _l1(student.world_points_conf, teacher.world_points_conf)
    if "depth_gradient" in needed:
        terms["depth_gradient"] = multiscale_gradient_l1(student.depth, teacher.depth)
    if "points_gradient" in needed:
        terms["points_gradient"] = multiscale_gradient_l1(student.world_points, teacher.world_points)
    return terms


def distillation_loss(student, teacher, weights: dict[str, float]) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the L1 terms named in ``weights``; returns (loss, {term: unweighted value})."""
    if type(student) is not type(teacher):
        raise TypeError(f"student gives {type(student).__name__}, teacher {type(teacher).__name__}")
    preset = ANYSPLAT_PAPER if isinstance(student, AnySplatPrediction) else VGGT_PAPER
    unknown = sorted(set(weights) - set(preset))
    if unknown:
        raise ValueError(f"unknown loss terms {unknown} for {type(student).__name__}; known: {sorted(preset)}")
    needed = {name for name, weight in weights.items() if weight}
    compute = anysplat_terms if isinstance(student, AnySplatPrediction) else vggt_terms
    terms = compute(student, teacher, needed)
    total = sum(weights[name] * terms[name] for name in needed)
    return total, {name: float(value.detach()) for name, value in terms.items() if name in needed}
