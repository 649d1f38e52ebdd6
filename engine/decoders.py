"""The stitched 3D decoder behind the generation pipeline's ``SceneDecoder`` interface.

Two bundle decoder kinds are built in:

* ``stitched``: our checkpoint folder (``engine.stitching.checkpoint``: ``model.safetensors`` +
  ``stitched_config.json``), AnySplat or VGGT, LoRA already merged;
* ``anysplat-stitched``: the released VIST3A ``anysplat_stitched.pth`` (LoRA + stitching conv + tokens),
  merged onto the base AnySplat named by the bundle's ``extra.anysplat`` (a folder or hub id, default
  ``lhjiang/anysplat``).

``StitchedSceneDecoder`` adapts a ``StitchedDecoder`` to the pipeline: it takes the un-normalised video
latent and the VAE-decoded frames, resizes the frames to the network's input size (the stitching
layer's token grid times the patch size; bilinear, as the released inference does with its trilinear
resize that keeps the frame count), and returns a ``DecodedScene`` with cameras at that size, the depth
maps and Gaussians (AnySplat) or points (VGGT).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.pipeline import DecodedScene, register_decoder_loader
from engine.pipeline_settings import ModelBundle, ModelLoadError
from engine.stitching.decoder import StitchedDecoder

STITCHED_KIND = "stitched"
RELEASED_ANYSPLAT_KIND = "anysplat-stitched"
DEFAULT_ANYSPLAT_BASE = "lhjiang/anysplat"


class StitchedSceneDecoder(torch.nn.Module):
    """``decoder(latent, frames) -> DecodedScene`` for the pipeline.

    Args:
        decoder: the stitched decoder (eval mode).
        voxel_size: AnySplat voxel merging edge (network units) or None for one Gaussian per pixel.
        min_confidence: VGGT points below this confidence are dropped (None keeps all).
    """

    def __init__(
        self, decoder: StitchedDecoder, voxel_size: Optional[float] = None, min_confidence: Optional[float] = None
    ):
        super().__init__()
        self.decoder = decoder.eval()
        self.voxel_size = voxel_size
        self.min_confidence = min_confidence

    def input_size(self, num_frames: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the frames the network reads for a latent of spatial size ``latent_hw``."""
        _, grid_h, grid_w = self.decoder.stitching_layer.output_grid(num_frames, *latent_hw)
        patch = self.decoder.network.aggregator.patch_size
        return grid_h * patch, grid_w * patch

    @torch.no_grad()
    def forward(self, latent: Tensor, frames: Tensor) -> DecodedScene:
        """latent (1, C, T_lat, h, w) un-normalised; frames (1, T, 3, H, W) in [0, 1]."""
        if frames.ndim != 5 or frames.shape[0] != 1:
            raise ValueError(f"frames must be (1, T, 3, H, W), got {tuple(frames.shape)}")
        num_frames = frames.shape[1]
        size = self.input_size(num_frames, tuple(latent.shape[-2:]))
        param = next(self.decoder.parameters())
        resized = F.interpolate(frames[0].float(), size=size, mode="bilinear", align_corners=False)
        resized = resized.clamp(0, 1)[None].to(device=param.device, dtype=param.dtype)
        prediction = self.decoder.predict(latent.to(device=param.device, dtype=param.dtype), resized)
        cameras = prediction.cameras().to(dtype=torch.float32)
        depth = prediction.depth[0, ..., 0].float()
        if self.decoder.model_type == "anysplat":
            gaussians = prediction.gaussian_scene(voxel_size=self.voxel_size).to(dtype=torch.float32)
            return DecodedScene(cameras=cameras, gaussians=gaussians, depth=depth)
        points = prediction.point_scene(min_confidence=self.min_confidence).to(dtype=torch.float32)
        return DecodedScene(cameras=cameras, points=points, depth=depth)


def load_stitched(bundle: ModelBundle, device: torch.device, dtype: torch.dtype) -> StitchedSceneDecoder:
    """Bundle kind ``stitched``: our checkpoint folder."""
    from engine.stitching.checkpoint import StitchedCheckpointError, load_stitched_decoder

    try:
        decoder = load_stitched_decoder(bundle.decoder_path, device=device, dtype=dtype)
    except StitchedCheckpointError as error:
        raise ModelLoadError(f"bundle {bundle.name!r}: {error}") from error
    return StitchedSceneDecoder(decoder, voxel_size=bundle.extra.get("voxel_size"))


def load_released_anysplat(bundle: ModelBundle, device: torch.device, dtype: torch.dtype) -> StitchedSceneDecoder:
    """Bundle kind ``anysplat-stitched``: the released ``anysplat_stitched.pth`` on a base AnySplat."""
    from engine.stitching.released import ReleasedCheckpointError, load_released_stitched

    base = bundle.extra.get("anysplat", DEFAULT_ANYSPLAT_BASE)
    local = bundle.root / base
    try:
        decoder, _ = load_released_stitched(
            bundle.decoder_path, str(local) if local.exists() else base, device=device, dtype=dtype
        )
    except ReleasedCheckpointError as error:
        raise ModelLoadError(f"bundle {bundle.name!r}: {error}") from error
    return StitchedSceneDecoder(decoder, voxel_size=bundle.extra.get("voxel_size"))


register_decoder_loader(STITCHED_KIND, load_stitched)
register_decoder_loader(RELEASED_ANYSPLAT_KIND, load_released_anysplat)
