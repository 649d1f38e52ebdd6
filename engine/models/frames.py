"""Reading ordered frames (an image folder or a video) and the official preprocessing of both networks.

* Folder: every ``.png``/``.jpg``/``.jpeg`` file (any case), in natural order (``frame2`` < ``frame10``).
* Video: any format imageio's ffmpeg plugin reads; every ``stride``-th frame.

Preprocessing (``preprocess_frames``), producing float RGB in [0, 1] as (S, 3, H, W):

* ``"anysplat"`` (``process_image`` of the official inference): the shorter side is resized to ``size``
  (448) with PIL's default filter, the longer side to ``int(long * size / short)``, then a centre crop
  to size x size.
* ``"vggt"`` (``load_and_preprocess_images(mode="crop")``): the width is resized to ``size`` (518) and
  the height to ``round(h * size / w / 14) * 14`` with PIL bicubic, then the height is centre-cropped to
  ``size`` if taller. Frames of different aspect ratios would end up with different heights: an error.
* ``"none"``: frames are used as they are; the network then requires H and W to be multiples of 14.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PREPROCESS_MODES = ("anysplat", "vggt", "none")
DEFAULT_SIZES = {"anysplat": 448, "vggt": 518}
_VGGT_MULTIPLE = 14


class FramesError(ValueError):
    """Frames could not be read or brought to a valid network input."""


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_frame_files(directory: Path) -> list[Path]:
    files = [p for p in Path(directory).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FramesError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {directory}")
    return sorted(files, key=_natural_key)


def read_frames(source, stride: int = 1, max_frames: int | None = None) -> list[np.ndarray]:
    """Frames as uint8 RGB arrays (H, W, 3) from a folder of images or a video file."""
    import imageio.v3 as iio

    source = Path(source)
    if stride < 1:
        raise FramesError(f"stride must be >= 1, got {stride}")
    if source.is_dir():
        frames = [_to_rgb(iio.imread(path), path) for path in list_frame_files(source)[::stride]]
    elif source.is_file():
        try:
            frames = [_to_rgb(f, source) for i, f in enumerate(iio.imiter(source)) if i % stride == 0]
        except Exception as error:
            raise FramesError(f"cannot read {source} as a video: {error}") from error
    else:
        raise FramesError(f"frames not found: {source} (expected a folder of images or a video file)")
    if not frames:
        raise FramesError(f"{source} holds no frames")
    return frames[:max_frames] if max_frames else frames


def _to_rgb(image: np.ndarray, path) -> np.ndarray:
    """uint8 (H, W, 3): grey is repeated, alpha dropped (as the official loaders convert to RGB)."""
    if image.dtype != np.uint8:
        raise FramesError(f"{path}: only 8-bit images are supported, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise FramesError(f"{path}: expected an RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def _preprocess_one(image: np.ndarray, mode: str, size: int) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(image)
    width, height = pil.size
    if mode == "anysplat":
        if width > height:
            new_w, new_h = int(width * (size / height)), size
        else:
            new_w, new_h = size, int(height * (size / width))
        pil = pil.resize((new_w, new_h))
        left, top = (new_w - size) // 2, (new_h - size) // 2
        pil = pil.crop((left, top, left + size, top + size))
    elif mode == "vggt":
        new_h = round(height * (size / width) / _VGGT_MULTIPLE) * _VGGT_MULTIPLE
        pil = pil.resize((size, new_h), Image.Resampling.BICUBIC)
        if new_h > size:
            top = (new_h - size) // 2
            pil = pil.crop((0, top, size, top + size))
    return np.asarray(pil)


def preprocess_frames(frames: list[np.ndarray], mode: str, size: int | None = None) -> Tensor:
    """uint8 frames -> float (S, 3, H, W) in [0, 1] (see the module doc for the modes)."""
    if mode not in PREPROCESS_MODES:
        raise FramesError(f"preprocess mode must be one of {PREPROCESS_MODES}, got {mode!r}")
    if mode != "none":
        size = size or DEFAULT_SIZES[mode]
        frames = [_preprocess_one(f, mode, size) for f in frames]
    shapes = sorted({f.shape for f in frames})
    if len(shapes) != 1:
        raise FramesError(f"frames have different sizes after preprocessing: {shapes}")
    stacked = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    return stacked.float() / 255.0
