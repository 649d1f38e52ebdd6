"""The stitched decoder: video latent -> stitching conv -> the rest of a 3D network -> 3D predictions.

VIST3A (method.md §4) feeds a video VAE's latent into a 3D reconstruction network (AnySplat or VGGT)
*after* its layer k*: ``D_stitched = F_{k*+1..l} ∘ S``. Here k* is named by an aggregator stage
(``engine.models.aggregator``):

* ``"patch_embed.patch_embed"``: the conv tokens replace the DINOv2 patch projections; every DINOv2
  block runs.
* ``"patch_embed.blocks.{k-1}"``: the cut after DINOv2 block k-1 (the released Wan + AnySplat stitch
  is ``"patch_embed.blocks.1"``, i.e. "enc_blocks_2": blocks 0 and 1 are removed).

Wiring (as the released AnySplat stitch): the stitching layer's tokens take the place of the patch
projections, ``patch_embed.add_prefix_tokens`` prepends the cls token, adds DINOv2's interpolated
positional embedding again and inserts the register tokens, then DINOv2 blocks k.., the DINOv2 norm, the
aggregator and the heads run unchanged. No pixels enter the aggregator, so ImageNet normalisation does not
apply. RGB frames are still needed: AnySplat's Gaussian head reads them (at generation time, the frames
the video VAE decodes from the same latent, resized to the network's resolution) and they fix the image
size and the colours of VGGT's points.

Cuts inside the alternating-attention aggregator are not supported: there the camera/register tokens
of a frame are image-dependent outputs of the cut-away blocks and have no learned stand-in.

Memory: the cut-away modules are *removed* (their parameters are freed), not skipped. Removed DINOv2
blocks leave a parameter-free ``CutAway`` placeholder so that the kept blocks keep their original index
(``blocks.2`` stays ``blocks.2``), which keeps the network's own ``forward_from`` and our checkpoint keys
identical to the base model's; the released checkpoint re-indexes the kept blocks from 0, which
``engine.stitching.released`` maps.

Parameter names: ``stitching_layer.{weight,bias}`` and ``network.<key of the base model>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from engine.io.atomic import atomic_directory
from engine.models.anysplat import AnySplat
from engine.models.checkpoint import listing
from engine.models.config import AnySplatConfig, VGGTConfig, config_from_dict
from engine.models.loading import build_model
from engine.models.reconstruction import ReconstructionModel
from engine.models.vggt import VGGT
from engine.stitching.checkpoint import (
    CONFIG_FILE,
    FORMAT,
    WEIGHTS_FILE,
    StitchedCheckpointError,
    assign_state_dict,
    check_state_dict,
    read_stitched_config,
    stitched_config,
)
from engine.stitching.layer_spec import ConvSpec, StitchingLayer, format_spec, parse_spec
from engine.strict_config import dataclass_from_dict

EMBED_STAGE = "patch_embed.patch_embed"
_DINO_STAGE = re.compile(r"^patch_embed\.blocks\.(\d+)$")
SUPPORTED_MODELS = {"anysplat": AnySplat, "vggt": VGGT}


class CutAway(nn.Module):
    """A parameter-free placeholder for a module that stitching removed; calling it is an error."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.name} was removed by stitching; the stitched decoder starts after it")

    def extra_repr(self) -> str:
        return self.name


def removed_dino_blocks(cut_stage: str, dino_depth: int) -> int:
    """Number of leading DINOv2 blocks a cut removes (0 for the patch-embedding stage).

    Raises ValueError naming the valid stages for anything else (including aggregator stages).
    """
    if cut_stage == EMBED_STAGE:
        return 0
    match = _DINO_STAGE.match(cut_stage)
    if match is None or int(match.group(1)) >= dino_depth:
        raise ValueError(
            f"unsupported cut stage {cut_stage!r}: the stitched decoder cuts at {EMBED_STAGE!r} or "
            f"'patch_embed.blocks.<i>' with i in 0..{dino_depth - 1} (cuts inside the aggregator are not supported)"
        )
    return int(match.group(1)) + 1


def aggregator_prefix(network: ReconstructionModel) -> str:
    """Module path of the aggregator inside the network ("encoder.aggregator" / "aggregator")."""
    return "encoder.aggregator" if isinstance(network, AnySplat) else "aggregator"


def cut_network(network: ReconstructionModel, cut_stage: str) -> list[str]:
    """Removes, in place, the modules that run up to and including ``cut_stage``; returns their names.

    Idempotent: modules that are already placeholders are left alone (and not listed).
    """
    dino = network.aggregator.patch_embed
    count = removed_dino_blocks(cut_stage, len(dino.blocks))
    prefix = aggregator_prefix(network) + ".patch_embed"
    removed = []
    if not isinstance(dino.patch_embed, CutAway):
        dino.patch_embed = CutAway(f"{prefix}.patch_embed")
        removed.append(f"{prefix}.patch_embed")
    for i in range(count):
        if not isinstance(dino.blocks[i], CutAway):
            dino.blocks[i] = CutAway(f"{prefix}.blocks.{i}")
            removed.append(f"{prefix}.blocks.{i}")
    return removed


@dataclass(frozen=True)
class VAEReference:
    """Which video VAE produces the latents a stitched decoder reads.

    Attributes:
        class_name: the diffusers class (``AutoencoderKLWan``, ...), or any tag for a stand-in.
        latent_channels: C of the latent.
        spatial_factor: pixels per latent pixel.
        temporal_factor: frames per latent frame after the first (1: one latent frame per frame).
        name_or_path: where the VAE comes from (hub id or folder), None if unknown.
    """

    class_name: str
    latent_channels: int
    spatial_factor: int
    temporal_factor: int
    name_or_path: Optional[str] = None

    @classmethod
    def from_adapter(cls, adapter, name_or_path: Optional[str] = None) -> VAEReference:
        """From an ``engine.stitching.vae.VideoVAEAdapter``."""
        return cls(
            class_name=adapter.vae_class.__name__,
            latent_channels=int(adapter.latent_channels),
            spatial_factor=int(adapter.spatial_factor),
            temporal_factor=int(adapter.temporal_factor),
            name_or_path=None if name_or_path is None else str(name_or_path),
        )

    def latent_frames(self, num_frames: int) -> int:
        """T_lat for T frames (T = factor·k + 1); ValueError for a T the VAE cannot encode."""
        if num_frames < 1 or (num_frames - 1) % self.temporal_factor:
            raise ValueError(f"{self.class_name} encodes T = {self.temporal_factor}k+1 frames, got T={num_frames}")
        return (num_frames - 1) // self.temporal_factor + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VAEReference:
        return dataclass_from_dict(cls, data, "VAE description")


# Released Wan 2.1 + AnySplat stitch (method.md §3/§4, NOTES.md §8).
RELEASED_CUT_STAGE = "patch_embed.blocks.1"
RELEASED_SPEC = "conv3d_k5x3x3_o1024_s1x2x2_p2x1x1"
WAN_VAE = VAEReference("AutoencoderKLWan", 16, 8, 4, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


class StitchedDecoder(nn.Module):
    """Stitching layer + the part of a 3D network after ``cut_stage``.

    Build it from an original network with :meth:`from_network` (cuts that network in place) or empty
    from a config with :meth:`from_config` (for loading checkpoints).

    ``forward(latent, frames)`` returns the base network's prediction type (``AnySplatPrediction`` /
    ``VGGTPrediction``), so ``.cameras()``, depth + confidence, ``.gaussian_scene()`` / ``.point_scene()``
    work as for the 3D decoders.
    """

    def __init__(
        self, network: ReconstructionModel, cut_stage: str, stitching_layer: StitchingLayer, vae: VAEReference
    ) -> None:
        super().__init__()
        model_type = getattr(getattr(network, "config", None), "model_type", None)
        if model_type not in SUPPORTED_MODELS or not isinstance(network, SUPPORTED_MODELS[model_type]):
            raise TypeError(f"network must be an AnySplat or VGGT model, got {type(network).__name__}")
        embed_dim = network.aggregator.config.patch_embed.embed_dim
        if stitching_layer.spec.out_channels != embed_dim:
            raise ValueError(
                f"stitching layer {stitching_layer.spec} gives {stitching_layer.spec.out_channels}-d tokens, "
                f"the network's DINOv2 takes {embed_dim}-d tokens"
            )
        if stitching_layer.in_channels != vae.latent_channels:
            raise ValueError(
                f"stitching layer reads {stitching_layer.in_channels} latent channels, "
                f"the VAE {vae.class_name} has {vae.latent_channels}"
            )
        self.cut_stage = cut_stage
        self.vae = vae
        # LoRA settings the kept weights were finetuned with (recorded in checkpoints), None if untrained
        self.lora_info: Optional[dict] = None
        self.removed_modules = cut_network(network, cut_stage)
        self.network = network
        self.stitching_layer = stitching_layer

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_network(
        cls,
        network: ReconstructionModel,
        cut_stage: str,
        spec: Union[str, ConvSpec],
        vae: VAEReference,
        stitching_layer: Optional[StitchingLayer] = None,
    ) -> StitchedDecoder:
        """Stitches ``network`` (modified in place: its cut-away modules are deleted).

        ``stitching_layer``: e.g. the layer-search fit; None makes a freshly initialised one of ``spec``.
        """
        if stitching_layer is None:
            param = next(network.parameters())
            stitching_layer = StitchingLayer(spec, vae.latent_channels, dtype=param.dtype, device=param.device)
        elif format_spec(stitching_layer.spec) != format_spec(parse_spec(spec) if isinstance(spec, str) else spec):
            raise ValueError(f"stitching layer has spec {stitching_layer.spec}, expected {spec}")
        return cls(network, cut_stage, stitching_layer, vae)

    @classmethod
    def from_config(
        cls,
        model_config: Union[AnySplatConfig, VGGTConfig],
        cut_stage: str,
        spec: Union[str, ConvSpec],
        vae: VAEReference,
        device: Union[str, torch.device, None] = None,
    ) -> StitchedDecoder:
        """An uninitialised decoder (``device="meta"`` allocates nothing; fill it with a state dict)."""
        network = build_model(model_config, device=device)
        removed_dino_blocks(cut_stage, network.aggregator.config.patch_embed.depth)
        with torch.device(device or "cpu"):
            layer = StitchingLayer(spec, vae.latent_channels)
        return cls(network, cut_stage, layer, vae)

    @classmethod
    def from_pretrained(
        cls, path: Union[str, Path], device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32
    ) -> StitchedDecoder:
        """Loads a checkpoint folder written by :meth:`save_pretrained` (strict); returns it in eval mode.

        Raises:
            StitchedCheckpointError: the folder, its config or its weights are missing, malformed or do not fit.
        """
        from safetensors.torch import load_file

        data = read_stitched_config(path)
        weights = Path(path) / WEIGHTS_FILE
        if not weights.is_file():
            raise StitchedCheckpointError(f"{path} has no {WEIGHTS_FILE}")
        try:
            model_config = config_from_dict(data["model"]["config"])
            vae = VAEReference.from_dict(data["vae"])
            decoder = cls.from_config(model_config, data["cut_stage"], data["stitching_spec"], vae, "meta")
        except (TypeError, ValueError) as error:
            raise StitchedCheckpointError(f"{Path(path) / CONFIG_FILE}: {error}") from error
        state = load_file(str(weights), device="cpu")
        check_state_dict(decoder, state, str(weights))
        assign_state_dict(decoder, state, device, dtype)
        decoder.lora_info = data["lora"]
        return decoder.eval()

    def save_pretrained(
        self, directory: Union[str, Path], replace: bool = True, dtype: Optional[torch.dtype] = None
    ) -> Path:
        """Writes this decoder (LoRA already merged) into ``directory`` atomically; returns the folder.

        ``dtype``: the floating-point tensors are stored in it (e.g. ``torch.float16``, as the default
        model ships its weights); None keeps the decoder's own. ``from_pretrained`` loads either.

        Raises StitchedCheckpointError if the decoder still holds unmerged LoRA layers (merge them first,
        e.g. with ``engine.stitching.train.merge_lora``).
        """
        from safetensors.torch import save_file

        state = self.state_dict()
        unmerged = [k for k in state if "lora_" in k or ".base_layer." in k]
        if unmerged:
            raise StitchedCheckpointError(
                f"the decoder still has unmerged LoRA tensors {listing(unmerged)}; merge the adapters before saving"
            )
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        directory = Path(directory)
        with atomic_directory(directory, replace=replace) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
            config = stitched_config(self)
            if dtype is not None:  # the dtype the weights are stored in
                config["dtype"] = str(dtype).removeprefix("torch.")
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1), encoding="utf-8")
        return directory

    # ------------------------------------------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return self.network.config.model_type

    @property
    def spec(self) -> str:
        return format_spec(self.stitching_layer.spec)

    @property
    def removed_dino_blocks(self) -> int:
        return removed_dino_blocks(self.cut_stage, len(self.network.aggregator.patch_embed.blocks))

    def set_precision(self, dtype: torch.dtype) -> StitchedDecoder:
        """The official precision policy (``ReconstructionModel.set_precision``) for the kept network.

        The stitching layer keeps float32 parameters and runs under the aggregator's autocast; the heads
        stay float32. Returns self.
        """
        self.network.set_precision(dtype)
        self.stitching_layer.float()
        return self

    def set_gradient_checkpointing(self, enabled: bool = True) -> list[str]:
        """Activation recomputation for every kept transformer block (see ``ReconstructionModel``)."""
        return self.network.set_gradient_checkpointing(enabled)

    def stitched_tokens(self, latent: Tensor, num_frames: int, image_size: tuple[int, int]) -> Tensor:
        """Latent (B, C, T_lat, h, w) -> the tokens handed to the network, (B*T, N, D).

        N = h'·w' patch tokens for the patch-embedding cut, 1 + R + h'·w' (cls, registers, patches) for a
        cut after a DINOv2 block. ``image_size`` is the (H, W) the tokens stand for.
        """
        if latent.ndim != 5 or latent.shape[1] != self.vae.latent_channels:
            raise ValueError(
                f"latent must be (B, {self.vae.latent_channels}, T_lat, h, w) for {self.vae.class_name}, "
                f"got {tuple(latent.shape)}"
            )
        expected_lat = self.vae.latent_frames(num_frames)
        if latent.shape[2] != expected_lat:
            raise ValueError(f"{num_frames} frames need {expected_lat} latent frames, the latent has {latent.shape[2]}")
        patch = self.network.aggregator.patch_size
        grid = (image_size[0] // patch, image_size[1] // patch)
        frames_out, grid_h, grid_w = self.stitching_layer.output_grid(num_frames, *latent.shape[-2:])
        if frames_out != num_frames or (grid_h, grid_w) != grid:
            raise ValueError(
                f"stitching layer {self.spec} turns a {tuple(latent.shape[-2:])} latent of {num_frames} frames into "
                f"{frames_out} frames of {grid_h}x{grid_w} tokens, but {image_size[0]}x{image_size[1]} frames need "
                f"{num_frames} frames of {grid[0]}x{grid[1]} tokens (patch {patch})"
            )
        layer_dtype = self.stitching_layer.weight.dtype
        tokens = self.stitching_layer(latent.to(layer_dtype), num_frames)  # (B, T, h*w, D)
        tokens = tokens.reshape(-1, *tokens.shape[2:])
        if self.cut_stage == EMBED_STAGE:
            return tokens
        return self.network.aggregator.patch_embed.add_prefix_tokens(tokens, *image_size)

    def forward(self, latent: Tensor, frames: Tensor, frames_chunk_size: Optional[int] = 8):
        """Decodes a latent into the network's prediction.

        Args:
            latent: (B, C, T_lat, h, w), the raw VAE latent (``VideoVAEAdapter.encode(...,
                normalized=False)``; at generation time the video model's latent un-normalised), as the
                released VIST3A stitch reads it.
            frames: (B, T, 3, H, W) RGB in [0, 1] at the network's resolution (the token grid times the
                patch size, e.g. 448² for the released stitch): the clip's frames in training, the
                VAE-decoded frames resized at generation time. T fixes the number of views.
            frames_chunk_size: frames per DPT-head chunk (memory only).
        Returns:
            ``AnySplatPrediction`` or ``VGGTPrediction`` (see ``engine.models.outputs``).
        """
        if not isinstance(frames, Tensor) or frames.ndim != 5:
            raise ValueError(f"frames must be (B, T, 3, H, W) in [0, 1], got {getattr(frames, 'shape', frames)}")
        if latent.shape[0] != frames.shape[0]:
            raise ValueError(f"latent batch {latent.shape[0]} != frames batch {frames.shape[0]}")
        # The stitching conv runs under the aggregator's autocast, as the official stitched decoder.
        with self.network._autocast(frames):
            tokens = self.stitched_tokens(latent, frames.shape[1], tuple(frames.shape[-2:]))
        return self.network.forward_from(self.cut_stage, tokens, frames, frames_chunk_size)

    @torch.no_grad()
    def predict(self, latent: Tensor, frames: Tensor, frames_chunk_size: Optional[int] = 8):
        """Inference: eval mode and no gradients, otherwise as ``forward``."""
        was_training = self.training
        self.eval()
        try:
            return self(latent, frames, frames_chunk_size)
        finally:
            self.train(was_training)
