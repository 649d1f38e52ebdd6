"""Training clips for the stitched-decoder finetuning: ordered frames from disk and synthetic scenes.

A clip source answers ``sample(num_frames, size, generator) -> (T, 3, size, size)`` float frames in
[0, 1], so the trainer can ask for a different number of views at every step.

* :class:`FolderClips`: DL3DV-style data. Every sub-folder of the given roots that holds images is a
  scene (its images in natural order; an ``images/`` sub-folder is used when the scene keeps its frames
  there), every video file is a scene too. A sample is a random window of ``num_frames`` consecutive
  frames (every ``stride``-th) whose first frame is kept as view 0, the reference view that defines the
  world frame; frames are resized on the shorter side and centre-cropped (AnySplat's preprocessing).
  Video files are decoded whole for each sample (fine for short clips; convert long videos to frames).
* :class:`SyntheticClips`: procedural scenes of ``engine.data`` rendered along random camera paths.
* :class:`WorldClips`: the procedural world's orbit clips, the very clips the default generator learns
  (``engine.generator.clipcache``): what the default model's stitched decoder must decode.
* :class:`MixedClips`: picks one of several sources per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, Union

import torch
from torch import Tensor

from engine.data.clips import PATHS, synthetic_clip
from engine.models.frames import (
    IMAGE_SUFFIXES,
    FramesError,
    is_hidden_or_system_file,
    list_frame_files,
    load_image_rgb,
    preprocess_frames,
    read_frames,
)


class ClipSource(Protocol):
    def sample(self, num_frames: int, size: int, generator: torch.Generator) -> Tensor:
        """(num_frames, 3, size, size) frames in [0, 1], ordered, the reference view first."""
        ...


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=generator))


class FolderClips:
    """Scenes of ordered frames (image folders or video files) under one or more roots."""

    def __init__(self, roots: Union[str, Path, Sequence[Union[str, Path]]], stride: int = 1) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        self.stride = stride
        self.scenes: list[Path] = []
        for root in map(Path, roots):
            if not root.is_dir():
                raise FileNotFoundError(f"clip root not found: {root}")
            self.scenes += self._scenes_in(root)
        if not self.scenes:
            raise FramesError(f"no scenes (image folders or video files) under {', '.join(map(str, roots))}")

    @staticmethod
    def _scenes_in(root: Path) -> list[Path]:
        scenes = []
        for entry in sorted(root.rglob("*")):
            if is_hidden_or_system_file(entry):
                continue
            if entry.is_file() and entry.suffix.lower() not in IMAGE_SUFFIXES:
                if entry.suffix.lower() in (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif"):
                    scenes.append(entry)
            elif entry.is_dir() and any(
                p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden_or_system_file(p)
                for p in entry.iterdir()
                if p.is_file()
            ):
                if entry.name == "images" and entry.parent in scenes:
                    continue
                scenes.append(entry)
        return scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def sample(self, num_frames: int, size: int, generator: torch.Generator) -> Tensor:
        span = (num_frames - 1) * self.stride + 1
        for _ in range(len(self.scenes)):  # scenes too short for the window are passed over
            scene = self.scenes[_randint(len(self.scenes), generator)]
            if scene.is_dir():
                files = list_frame_files(scene)
                if len(files) < span:
                    continue
                start = _randint(len(files) - span + 1, generator)
                chosen = files[start : start + span : self.stride]
                frames = [load_image_rgb(path) for path in chosen]  # as reconstruct reads photos
            else:
                all_frames = read_frames(scene)
                if len(all_frames) < span:
                    continue
                start = _randint(len(all_frames) - span + 1, generator)
                frames = all_frames[start : start + span : self.stride]
            return preprocess_frames(frames, "anysplat", size)
        raise FramesError(f"no scene has the {span} frames a {num_frames}-view clip (stride {self.stride}) needs")


class SyntheticClips:
    """Procedural scenes (``engine.data.synthetic_clip``) on random camera paths, rendered at ``size``."""

    def __init__(self, paths: Sequence[str] = PATHS, num_objects: int | None = None) -> None:
        unknown = [p for p in paths if p not in PATHS]
        if unknown or not paths:
            raise ValueError(f"camera paths must be a non-empty subset of {PATHS}, got {list(paths)}")
        self.paths = list(paths)
        self.num_objects = num_objects

    def sample(self, num_frames: int, size: int, generator: torch.Generator) -> Tensor:
        seed = _randint(2**31 - 1, generator)
        path = self.paths[_randint(len(self.paths), generator)]
        clip = synthetic_clip(seed, num_frames, size, size, path, num_objects=self.num_objects)
        return clip.frames.permute(0, 3, 1, 2).float().clamp(0, 1)


class WorldClips:
    """Orbit clips of the procedural world (``engine.data``, current world version), one split.

    Clip i is clip i of the default generator's training data (a :class:`ClipCache` over
    ``SyntheticClipDataset``), rendered at ``frames`` x ``size``² on first use and kept under ``cache``
    (None: in memory only). A sample of T <= ``frames`` views is the clip's first T frames (the caption's
    reference view first, the orbit in order), resized to the asked size when it differs.

    Raises ValueError for a count below 1 or an unknown split.
    """

    def __init__(
        self, count: int, *, split: str = "train", cache: Path | None = None, frames: int = 13, size: int = 128
    ) -> None:
        from engine.generator.clipcache import ClipCache

        if count < 1:
            raise ValueError(f"the world source needs at least one clip, got {count}")
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        self.cache = ClipCache(cache, split, count, num_frames=frames, height=size, width=size, path="orbit")
        self.frames = frames

    def __len__(self) -> int:
        return len(self.cache)

    def clip(self, index: int, num_frames: int | None = None, size: int | None = None) -> Tensor:
        """(T, 3, size, size) frames in [0, 1] of clip ``index``."""
        num_frames = self.frames if num_frames is None else num_frames
        if not 1 <= num_frames <= self.frames:
            raise ValueError(f"world clips have {self.frames} frames; {num_frames} asked")
        frames, _ = self.cache.get(index)
        clip = torch.from_numpy(frames[:num_frames]).permute(0, 3, 1, 2).float().div(255.0)
        if size is not None and clip.shape[-1] != size:
            clip = torch.nn.functional.interpolate(clip, size=(size, size), mode="bilinear", antialias=True)
            clip = clip.clamp(0, 1)
        return clip

    def sample(self, num_frames: int, size: int, generator: torch.Generator) -> Tensor:
        return self.clip(_randint(len(self), generator), num_frames, size)


class MixedClips:
    """Draws each sample from one of ``sources`` with probability proportional to ``weights``."""

    def __init__(self, sources: Sequence[ClipSource], weights: Sequence[float] | None = None) -> None:
        if not sources:
            raise ValueError("MixedClips needs at least one source")
        weights = [1.0] * len(sources) if weights is None else list(weights)
        if len(weights) != len(sources) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights {weights} must be non-negative, one per source, not all zero")
        self.sources = list(sources)
        self.weights = torch.tensor(weights, dtype=torch.float64)

    def sample(self, num_frames: int, size: int, generator: torch.Generator) -> Tensor:
        index = int(torch.multinomial(self.weights, 1, generator=generator))
        return self.sources[index].sample(num_frames, size, generator)
