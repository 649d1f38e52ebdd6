"""The generation pipeline's 3D decoder interface (``SceneDecoder`` -> ``DecodedScene``) and its built-in kinds.

Two bundle decoder kinds are built in (``DECODER_LOADERS``; ``register_decoder_loader`` adds others):

* ``stitched``: our checkpoint folder (``StitchedDecoder.save_pretrained``: ``model.safetensors`` +
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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.pipeline.settings import ModelBundle, ModelLoadError
from engine.scene import Cameras, GaussianScene, PointScene
from engine.stitching.decoder import StitchedDecoder

STITCHED_KIND = "stitched"
RELEASED_ANYSPLAT_KIND = "anysplat-stitched"
DEFAULT_ANYSPLAT_BASE = "lhjiang/anysplat"
# AnySplat's released configuration merges Gaussians in voxels of this edge (network units).
RELEASED_VOXEL_SIZE = 0.002


# ----------------------------------------------------------------------------- decoder interface


@dataclass
class DecodedScene:
    """What a 3D decoder returns for one video.

    Attributes:
        cameras: V cameras, one per video frame.
        gaussians: the Gaussians, or None for a points-only decoder.
        points: coloured points, or None (then they are derived from the Gaussians when asked for).
        depth: (V, H, W) z-depth per camera at the cameras' image size, or None.
        frames: (V, 3, H, W) the RGB the network read (float, [0, 1]), or None.
    """

    cameras: Cameras
    gaussians: Optional[GaussianScene] = None
    points: Optional[PointScene] = None
    depth: Optional[Tensor] = None
    frames: Optional[Tensor] = None

    def __post_init__(self):
        if self.gaussians is None and self.points is None:
            raise ValueError("DecodedScene: a decoder must return Gaussians, points or both")
        if self.depth is not None:
            expected = (len(self.cameras), self.cameras.height, self.cameras.width)
            if tuple(self.depth.shape) != expected:
                raise ValueError(f"DecodedScene: depth has shape {tuple(self.depth.shape)}, expected {expected}")


class SceneDecoder(Protocol):
    def __call__(self, latent: Tensor, frames: Tensor) -> DecodedScene: ...


class StitchedSceneDecoder(torch.nn.Module):
    """``decoder(latent, frames, voxel_merge=None) -> DecodedScene`` for the pipeline.

    Args:
        decoder: the stitched decoder (eval mode), with its precision policy already set
            (``StitchedDecoder.set_precision``).
        voxel_size: AnySplat voxel merging edge (network units) used by default, or None for one Gaussian
            per pixel by default.
        min_confidence: VGGT points below this confidence are dropped (None keeps all).
        clamp_frames: clamp the resized frames to [0, 1]. The released VIST3A inference hands the VAE
            output to its stitched decoder unclamped (``inference_t23d.py``: trilinear resize of the VAE
            samples, then ``(x + 1) / 2`` in ``AnySplatStitched.forward``), so the released kind passes
            False.
    """

    def __init__(
        self,
        decoder: StitchedDecoder,
        voxel_size: Optional[float] = None,
        min_confidence: Optional[float] = None,
        clamp_frames: bool = True,
    ):
        super().__init__()
        self.decoder = decoder.eval()
        self.voxel_size = voxel_size
        self.min_confidence = min_confidence
        self.clamp_frames = clamp_frames

    @property
    def default_voxel_size(self) -> Optional[float]:
        """The voxel edge used when ``voxel_merge`` is not given (None: no merging)."""
        return self.voxel_size

    def input_size(self, num_frames: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the frames the network reads for a latent of spatial size ``latent_hw``."""
        _, grid_h, grid_w = self.decoder.stitching_layer.output_grid(num_frames, *latent_hw)
        patch = self.decoder.network.aggregator.patch_size
        return grid_h * patch, grid_w * patch

    def network_frames(self, frames: Tensor, latent_hw: tuple[int, int], clamp: Optional[bool] = None) -> Tensor:
        """Frames (T, 3, H, W) -> (T, 3, h, w) float32 at the network's input size (``input_size``).

        Bilinear per frame (align_corners=False) = the official trilinear resize that keeps the frame
        count; clamped to [0, 1] when ``clamp`` (default: the decoder's ``clamp_frames``). Differentiable.
        """
        size = self.input_size(frames.shape[0], tuple(latent_hw))
        resized = F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False)
        if self.clamp_frames if clamp is None else clamp:
            resized = resized.clamp(0, 1)
        return resized

    def _merge_voxel_size(self, voxel_merge: Optional[bool]) -> Optional[float]:
        if voxel_merge is False:
            return None
        if voxel_merge is True and self.voxel_size is None:
            raise ValueError("this model has no voxel size for merging Gaussians (set extra.voxel_size in its bundle)")
        return self.voxel_size

    def decode(
        self,
        latent: Tensor,
        frames: Tensor,
        voxel_merge: Optional[bool] = None,
        *,
        relative_to_first: bool = True,
        clamp_frames: Optional[bool] = None,
        input_dtype: torch.dtype = torch.float32,
    ) -> DecodedScene:
        """The differentiable decode: latent + frames -> ``DecodedScene`` (gradients flow to both inputs).

        Args:
            latent: (1, C, T_lat, h, w) un-normalised video latent.
            frames: (1, T, 3, H, W), (VAE output + 1) / 2; resized by ``network_frames`` (which the
                returned ``DecodedScene.frames`` holds: the RGB the network read, (T, 3, h, w) float32).
            voxel_merge: None uses ``voxel_size`` (the model's default); False gives one Gaussian per
                pixel; True merges at ``voxel_size`` (ValueError when the model has none). Merging is not
                differentiable with respect to the Gaussians' count; pass False when training.
            relative_to_first: cameras and scene in the first camera's frame (True, the pipeline's
                convention) or in the network's own frame (False, the reward finetuning's).
            clamp_frames: clamp the resized frames to [0, 1] (default: the decoder's ``clamp_frames``).
            input_dtype: the dtype latent and frames are handed to the network in.

        Runs the network in its current mode (``forward`` is the inference wrapper: eval mode, no grad).
        Raises ValueError for frames not shaped (1, T, 3, H, W).
        """
        if frames.ndim != 5 or frames.shape[0] != 1:
            raise ValueError(f"frames must be (1, T, 3, H, W), got {tuple(frames.shape)}")
        voxel_size = self._merge_voxel_size(voxel_merge)
        resized = self.network_frames(frames[0], tuple(latent.shape[-2:]), clamp_frames)
        device = next(self.decoder.parameters()).device
        prediction = self.decoder(
            latent.to(device=device, dtype=input_dtype), resized[None].to(device=device, dtype=input_dtype)
        )
        cameras = prediction.cameras(0, relative_to_first=relative_to_first).to(dtype=torch.float32)
        depth = prediction.depth[0, ..., 0].float()
        if self.decoder.model_type == "anysplat":
            gaussians = prediction.gaussian_scene(0, voxel_size=voxel_size, relative_to_first=relative_to_first)
            return DecodedScene(
                cameras=cameras, gaussians=gaussians.to(dtype=torch.float32), depth=depth, frames=resized
            )
        points = prediction.point_scene(0, min_confidence=self.min_confidence, relative_to_first=relative_to_first)
        return DecodedScene(cameras=cameras, points=points.to(dtype=torch.float32), depth=depth, frames=resized)

    def forward(self, latent: Tensor, frames: Tensor, voxel_merge: Optional[bool] = None) -> DecodedScene:
        """Inference: :meth:`decode` in eval mode without gradients (cameras relative to the first).

        latent (1, C, T_lat, h, w) un-normalised; frames (1, T, 3, H, W), (VAE output + 1) / 2.
        """
        was_training = self.decoder.training
        self.decoder.eval()
        try:
            with torch.no_grad():
                return self.decode(latent, frames, voxel_merge)
        finally:
            self.decoder.train(was_training)


def _voxel_size(bundle: ModelBundle, default: Optional[float]) -> Optional[float]:
    """``extra.voxel_size`` of the bundle (a positive number, or null for no merging), else ``default``."""
    if "voxel_size" not in bundle.extra:
        return default
    value = bundle.extra["voxel_size"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise ModelLoadError(
            f"bundle {bundle.name!r}: extra.voxel_size must be a positive number or null, got {value!r}"
        )
    return None if value is None else float(value)


def load_stitched(bundle: ModelBundle, device: torch.device, dtype: torch.dtype) -> StitchedSceneDecoder:
    """Bundle kind ``stitched``: our checkpoint folder, with the official precision policy for ``dtype``."""
    from engine.stitching.checkpoint import StitchedCheckpointError

    try:
        decoder = StitchedDecoder.from_pretrained(bundle.decoder_path, device=device, dtype=torch.float32)
    except StitchedCheckpointError as error:
        raise ModelLoadError(f"bundle {bundle.name!r}: {error}") from error
    decoder.set_precision(dtype)
    return StitchedSceneDecoder(decoder, voxel_size=_voxel_size(bundle, None))


def load_released_anysplat(bundle: ModelBundle, device: torch.device, dtype: torch.dtype) -> StitchedSceneDecoder:
    """Bundle kind ``anysplat-stitched``: the released ``anysplat_stitched.pth`` on a base AnySplat.

    The base is ``extra.anysplat``: a folder (relative to the bundle) or a hub id resolved through the
    Hugging Face cache (default ``lhjiang/anysplat``). Gaussians are voxel-merged at the released
    configuration's 0.002 by default (``extra.voxel_size``: another edge, or null for one per pixel),
    and the frames reach the decoder unclamped, as in the official inference.
    """
    from engine.models.checkpoint import CheckpointError
    from engine.stitching.released import ReleasedCheckpointError, load_released_stitched

    base = bundle.extra.get("anysplat", DEFAULT_ANYSPLAT_BASE)
    if not isinstance(base, str) or not base:
        raise ModelLoadError(f"bundle {bundle.name!r}: extra.anysplat must be a folder or a hub id, got {base!r}")
    local = bundle.root / base
    try:
        decoder, _ = load_released_stitched(
            bundle.decoder_path, str(local) if local.exists() else base, device=device, dtype=torch.float32, spec=None
        )
    except (ReleasedCheckpointError, CheckpointError) as error:
        raise ModelLoadError(f"bundle {bundle.name!r}: {error}") from error
    decoder.set_precision(dtype)
    return StitchedSceneDecoder(decoder, voxel_size=_voxel_size(bundle, RELEASED_VOXEL_SIZE), clamp_frames=False)


# ----------------------------------------------------------------------------- kinds

DecoderLoader = Callable[[ModelBundle, torch.device, torch.dtype], SceneDecoder]
# bundle ``decoder.kind`` -> loader(bundle, device, dtype); the built-in kinds, listed here
DECODER_LOADERS: dict[str, DecoderLoader] = {
    STITCHED_KIND: load_stitched,
    RELEASED_ANYSPLAT_KIND: load_released_anysplat,
}


def register_decoder_loader(kind: str, loader: DecoderLoader) -> None:
    """Makes bundles whose ``decoder.kind`` is ``kind`` loadable (or replaces a kind's loader):
    ``loader(bundle, device, dtype) -> SceneDecoder``."""
    DECODER_LOADERS[kind] = loader


def decoder_kinds() -> list[str]:
    return sorted(DECODER_LOADERS)


def load_decoder(bundle: ModelBundle, device: torch.device, dtype: torch.dtype) -> SceneDecoder:
    """The 3D decoder of ``bundle``, by its ``decoder.kind``; ``ModelLoadError`` for an unknown kind."""
    loader = DECODER_LOADERS.get(bundle.decoder_kind)
    if loader is None:
        raise ModelLoadError(
            f"bundle {bundle.name!r}: unknown decoder kind {bundle.decoder_kind!r} (known: {', '.join(decoder_kinds())})"
        )
    return loader(bundle, device, dtype)
