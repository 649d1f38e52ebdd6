"""Inputs of the layer search: clips from disk or synthetic ones, and activations of a 3D network.

Clips are ``(1, T, 3, S, S)`` float frames in [0, 1] at the *video VAE's* resolution (512 for the
released Wan + AnySplat stitch). The 3D network sees the same frames resized to its own resolution,
chosen so that its patch grid equals the stitching conv's token grid (latent 64 -> 32x32 tokens ->
448 px for AnySplat/VGGT with 14-px patches).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.models.frames import IMAGE_SUFFIXES, FramesError, preprocess_frames, read_frames
from engine.models.reconstruction import ReconstructionModel
from engine.training.distributed import DistributedContext

log = logging.getLogger(__name__)


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def clip_sources(data_dir: str | Path) -> list[Path]:
    """The clips of a data folder: every sub-folder holding images and every video file, in natural order."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"clip folder not found: {data_dir}")
    entries = []
    for entry in sorted(data_dir.iterdir(), key=_natural_key):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or (entry.is_file() and entry.suffix.lower() not in IMAGE_SUFFIXES):
            entries.append(entry)
    if not entries:
        raise FramesError(f"{data_dir} holds no clips (expected sub-folders of images or video files)")
    return entries


def folder_clips(
    data_dir: str | Path,
    num_frames: int,
    size: int,
    stride: int = 1,
    *,
    max_clips: int | None = None,
    context: DistributedContext | None = None,
) -> Iterator[torch.Tensor]:
    """Yield (1, T, 3, size, size) clips from ``data_dir`` (see :func:`clip_sources`), read lazily.

    The first ``num_frames`` frames (every ``stride``-th) of each clip, resized on the shorter side and
    centre-cropped to size x size (AnySplat's official preprocessing). Clips with fewer frames are skipped
    and reported in the log. ``max_clips`` keeps the first clips of the folder; in a data-parallel run
    (``context``) each process reads only its round-robin share of them.
    """
    sources = clip_sources(data_dir)[:max_clips]
    if context is not None:
        sources = context.shard(sources)
    skipped = 0
    for source in sources:
        frames = read_frames(source, stride=stride, max_frames=num_frames)
        if len(frames) < num_frames:
            skipped += 1
            log.warning("skipping %s: %d frames, %d needed", source, len(frames), num_frames)
            continue
        yield preprocess_frames(frames, "anysplat", size)[None]
    if skipped:
        log.warning("%d clips were skipped for having fewer than %d frames", skipped, num_frames)


def synthetic_clips(
    count: int, num_frames: int, size: int, seed: int = 0, *, context: DistributedContext | None = None
) -> Iterator[torch.Tensor]:
    """Yield ``count`` clips of smooth random colour fields (1, T, 3, size, size): a wiring check with no
    data, not a meaningful search (no 3D structure). With ``context``, this process's round-robin share."""
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        coarse = torch.rand(1, 3, num_frames, 4, 4, generator=generator)
        if context is not None and index % context.world_size != context.rank:
            continue
        clip = F.interpolate(coarse, size=(num_frames, size, size), mode="trilinear", align_corners=True)
        yield clip.permute(0, 2, 1, 3, 4).contiguous()


def world_clips(
    count: int, num_frames: int, size: int, cache: Path | None = None, *, context: DistributedContext | None = None
) -> Iterator[torch.Tensor]:
    """Yield ``count`` training orbit clips of the procedural world (1, T, 3, size, size) in [0, 1]
    (``engine.stitching.clips.WorldClips``); with ``context``, this process's round-robin share."""
    from engine.stitching.clips import WorldClips

    source = WorldClips(count, cache=cache, frames=num_frames, size=size)
    for index in range(count):
        if context is not None and index % context.world_size != context.rank:
            continue
        yield source.clip(index).unsqueeze(0)


def stage_prefix_tokens(model: ReconstructionModel, stage: str) -> int:
    """Tokens in front of the patch tokens in a stage's output (cls/registers, or camera/registers)."""
    aggregator = model.aggregator
    if stage == "patch_embed.patch_embed":
        return 0
    if stage.startswith("patch_embed."):
        return aggregator.patch_embed.num_prefix_tokens
    return aggregator.patch_start_idx


class ModelActivations:
    """Activation source for :func:`engine.stitching.search.find_stitch_layer` over a VGGT/AnySplat model.

    ``self(frames (B, T, 3, H, W) in [0, 1]) -> [tokens (B, T, P, D) per stage]``: frames are resized
    (bilinear, antialiased) to ``image_size`` and traced through the model up to the last stage.
    ``prefix_tokens`` gives, per stage, how many tokens precede the patch tokens.
    """

    def __init__(self, model: ReconstructionModel, stages: Sequence[str], image_size: tuple[int, int]):
        known = set(model.stage_names())
        unknown = [stage for stage in stages if stage not in known]
        if unknown:
            raise ValueError(f"unknown stages {unknown}; this model has: {', '.join(model.stage_names())}")
        self.model = model
        self.stages = list(stages)
        self.image_size = tuple(image_size)
        self.prefix_tokens = [stage_prefix_tokens(model, stage) for stage in self.stages]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, frames: torch.Tensor) -> list[torch.Tensor]:
        batch, num_frames = frames.shape[:2]
        images = frames.to(self.device, torch.float32).flatten(0, 1)
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        images = images.clamp(0, 1).unflatten(0, (batch, num_frames))
        traced = self.model.trace(images, self.stages)
        # DINOv2 stages are (B*T, N, D), aggregator stages (B, T, N, D): bring all to (B, T, N, D)
        return [traced[stage].reshape(batch, num_frames, *traced[stage].shape[-2:]) for stage in self.stages]
