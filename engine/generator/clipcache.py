"""Rendered clips of the procedural world, stored once per (split, format) as uint8 files.

Rendering a 13-frame 128x128 clip costs about half a second on one CPU core; a training run visits
each clip many times, so :class:`ClipCache` renders clip i on first use and keeps it as
``<folder>/<split>_s<seed>_<frames>x<height>x<width>_<path>_w<world version>/clip_<i>.npz`` (frames uint8 (T, H, W, 3), the
caption and the scene seed). Clip i is item i of ``SyntheticClipDataset(num_clips, seed, split=...)``,
so the files are a cache, never a source of truth: deleting them changes nothing but speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from engine.data import WORLD_VERSION, SyntheticClipDataset
from engine.io.atomic import atomic_write


class ClipCache:
    """Clips of one split and format, rendered on first use and kept on disk (and in memory).

    Args:
        folder: cache root (created), or None to keep the clips in memory only.
        split: "train" or "heldout" (see ``engine.data.split_of_seed``).
        num_clips: how many distinct clips the split offers here.
        seed: dataset seed (item i's scene seed derives from it and i).
        num_frames, height, width, path: clip format (``engine.data.synthetic_clip``).
    """

    def __init__(
        self,
        folder: Optional[Path],
        split: str,
        num_clips: int,
        *,
        seed: int = 0,
        num_frames: int = 13,
        height: int = 128,
        width: int = 128,
        path: str = "orbit",
    ):
        self.dataset = SyntheticClipDataset(
            num_clips, seed, num_frames=num_frames, height=height, width=width, path=path, split=split
        )
        self.folder = None
        if folder is not None:
            self.folder = Path(folder) / f"{split}_s{seed}_{num_frames}x{height}x{width}_{path}_w{WORLD_VERSION}"
            self.folder.mkdir(parents=True, exist_ok=True)
        self._memory: dict[int, tuple[np.ndarray, str]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def get(self, index: int) -> tuple[np.ndarray, str]:
        """(frames uint8 (T, H, W, 3), caption) of clip ``index``."""
        if index in self._memory:
            return self._memory[index]
        file = None if self.folder is None else self.folder / f"clip_{index:06d}.npz"
        seed = self.dataset.item_seed(index)
        item = None
        if file is not None and file.is_file():
            with np.load(file) as data:
                if int(data["seed"]) == seed:
                    item = (data["frames"], str(data["caption"]))
        if item is None:
            clip = self.dataset[index]
            frames = (clip.frames.numpy() * 255.0).round().astype(np.uint8)
            item = (frames, clip.caption)
            if file is not None:
                with atomic_write(file) as f:
                    np.savez(f, frames=frames, caption=np.array(clip.caption), seed=np.array(seed))
        self._memory[index] = item
        return item

    def frames(self, index: int) -> torch.Tensor:
        """(T, 3, H, W) float32 in [-1, 1] (the Wan VAE's input range) of clip ``index``."""
        frames, _ = self.get(index)
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def caption(self, index: int) -> str:
        return self.get(index)[1]
