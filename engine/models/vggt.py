"""VGGT (facebook/VGGT-1B): frames -> cameras, depth and per-pixel world points.

``VGGT(config)`` has the official attribute layout (``aggregator``, ``camera_head``, ``point_head``,
``depth_head``), so its ``state_dict()`` keys, shapes and order are the official ones minus the track
head, which VIST3A does not use (the loader drops ``track_head.*`` keys explicitly and reports them).
Input contract, precision and activation access: ``engine.models.reconstruction``; output conventions:
``engine.models.outputs``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from torch import Tensor

from engine.models.aggregator import Aggregator
from engine.models.camera_head import CameraHead
from engine.models.config import DPTHeadConfig, VGGTConfig
from engine.models.dpt_head import DPTHead
from engine.models.outputs import VGGTPrediction
from engine.models.reconstruction import ReconstructionModel


def build_dpt_head(config: DPTHeadConfig) -> DPTHead:
    return DPTHead(**dataclasses.asdict(config))


class VGGT(ReconstructionModel):
    """VGGT without its track head. ``forward``/``predict`` return a ``VGGTPrediction``."""

    config_class = VGGTConfig

    def __init__(self, config: Optional[VGGTConfig] = None) -> None:
        super().__init__()
        self.config = config or VGGTConfig()
        self.aggregator = Aggregator(self.config.aggregator)
        self.camera_head = CameraHead(self.config.camera_head)
        self.point_head = build_dpt_head(self.config.point_head)
        self.depth_head = build_dpt_head(self.config.depth_head)

    def _head_layers(self) -> set[int]:
        layers = set(self.config.depth_head.intermediate_layer_idx) | set(self.config.point_head.intermediate_layer_idx)
        return layers | {self.config.aggregator.depth - 1}

    def _run_heads(self, taps: list[Optional[Tensor]], images: Tensor, frames_chunk_size: Optional[int]):
        pose_enc_list = self.camera_head(taps)
        depth, depth_conf = self.depth_head(taps, images, self.aggregator.patch_start_idx, frames_chunk_size)
        points, points_conf = self.point_head(taps, images, self.aggregator.patch_start_idx, frames_chunk_size)
        return VGGTPrediction(
            pose_enc=pose_enc_list[-1],
            pose_enc_list=pose_enc_list,
            depth=depth,
            depth_conf=depth_conf,
            world_points=points,
            world_points_conf=points_conf,
            images=images,
        )
