"""AnySplat (lhjiang/anysplat): ordered frames -> per-pixel 3D Gaussians, depth and cameras.

The module layout reproduces the official checkpoint: every parameter lives under ``encoder.``
(``encoder.aggregator``, ``encoder.camera_head``, ``encoder.depth_head``, ``encoder.gaussian_param_head``).
The official training copies ``encoder.distill_*`` (teacher networks, unused at inference) are not built;
the loader drops them explicitly and reports them.

Forward (official ``EncoderAnySplat.forward`` at inference): aggregator -> camera head -> pose encoding
to extrinsics/intrinsics (tan + 1e-3) -> depth head -> depth unprojected with those cameras (the
Gaussian means) -> Gaussian head on the taps and the RGB frames -> raw parameters. Activations and the
optional voxel merging happen when the prediction is converted (``AnySplatPrediction.gaussians``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from engine.models.aggregator import Aggregator
from engine.models.camera_head import CameraHead
from engine.models.config import AnySplatConfig
from engine.models.dpt_head import GaussianParamHead
from engine.models.gaussian_adapter import gaussian_head_output_dim, unproject_depth_official
from engine.models.outputs import AnySplatPrediction
from engine.models.pose_encoding import ANYSPLAT_FOV_EPS, pose_encoding_to_extri_intri
from engine.models.reconstruction import ReconstructionModel
from engine.models.vggt import build_dpt_head


class AnySplatEncoder(nn.Module):
    """The parameter-holding part of AnySplat (the official ``EncoderAnySplat`` without its teacher copies)."""

    def __init__(self, config: AnySplatConfig) -> None:
        super().__init__()
        self.aggregator = Aggregator(config.aggregator)
        # The official EncoderAnySplat casts its aggregator to bf16 when built, which rounds the ImageNet
        # mean/std buffers; the released weights run with the rounded values (anysplat.py, VGGT kept exact).
        self.aggregator.constants_dtype = torch.bfloat16
        self.camera_head = CameraHead(config.camera_head)
        self.depth_head = build_dpt_head(config.depth_head)
        gaussian = config.gaussian_head
        self.gaussian_param_head = GaussianParamHead(
            gaussian.dim_in,
            patch_size=gaussian.patch_size,
            output_dim=gaussian_head_output_dim(gaussian.sh_degree),
            features=gaussian.features,
            out_channels=gaussian.out_channels,
            intermediate_layer_idx=gaussian.intermediate_layer_idx,
            pos_embed=gaussian.pos_embed,
        )


class AnySplat(ReconstructionModel):
    """AnySplat. ``forward``/``predict`` return an ``AnySplatPrediction``."""

    config_class = AnySplatConfig

    def __init__(self, config: Optional[AnySplatConfig] = None) -> None:
        super().__init__()
        self.config = config or AnySplatConfig()
        self.encoder = AnySplatEncoder(self.config)

    @property
    def aggregator(self) -> Aggregator:
        return self.encoder.aggregator

    def _head_layers(self) -> set[int]:
        layers = set(self.config.depth_head.intermediate_layer_idx) | set(
            self.config.gaussian_head.intermediate_layer_idx
        )
        return layers | {self.config.aggregator.depth - 1}

    def _run_heads(self, taps: list[Optional[Tensor]], images: Tensor, frames_chunk_size: Optional[int]):
        encoder = self.encoder
        patch_start_idx = encoder.aggregator.patch_start_idx
        pose_enc_list = encoder.camera_head(taps)
        extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc_list[-1], images.shape[-2:], ANYSPLAT_FOV_EPS)
        depth, depth_conf = encoder.depth_head(taps, images, patch_start_idx, frames_chunk_size)
        points = unproject_depth_official(depth, extrinsics, intrinsics)
        raw = encoder.gaussian_param_head(taps, images, patch_start_idx, frames_chunk_size)
        return AnySplatPrediction(
            pose_enc=pose_enc_list[-1],
            pose_enc_list=pose_enc_list,
            depth=depth,
            depth_conf=depth_conf,
            points=points,
            gaussian_raw=raw,
            images=images,
            sh_degree=self.config.gaussian_head.sh_degree,
        )
