"""Reading ordered frames (an image folder or a video) and the official preprocessing of both networks.

Reading gives uint8 RGB frames (H, W, 3), whatever the source holds:

* Folder: every image file (``.png .jpg .jpeg .webp .bmp .tif .tiff``, any case) in natural order
  (``frame2`` < ``frame10``). Hidden and system files are skipped: names starting with ``.`` (macOS
  ``._*`` AppleDouble files, ``.DS_Store``), ``Thumbs.db`` and ``desktop.ini``. A file that cannot be
  decoded, or a HEIC / camera-raw photo, stops the reading with :class:`FramesError` naming it (one line).
* Video: any format imageio's ffmpeg plugin reads; every ``stride``-th frame.
* Colour modes: the photo's orientation tag (EXIF) is applied first, so portrait photos are upright;
  transparency (RGBA, grey + alpha, palettes with a transparent colour, premultiplied modes) is
  composited onto white at 8 bits, as the official VGGT and AnySplat loaders do (``alpha_composite`` onto
  a white RGBA image, then RGB); palette, grey, bilevel, CMYK, YCbCr and other modes are converted to
  RGB by Pillow; 16-bit grey (``I;16``, ``I``) is scaled by 255/65535 (Pillow would clip it), float
  grey (``F``) in 0..1 is scaled by 255; 16-bit RGB(A) is reduced to 8 bits by Pillow.

Preprocessing (``preprocess_frames``), producing float RGB in [0, 1] as (S, 3, H, W), following
``load_and_preprocess_images`` of facebookresearch/vggt and AnySplat's ``process_image``:

* ``"anysplat"``: the shorter side is resized to ``size`` (448) with PIL's default filter, the longer
  side to ``int(long * size / short)``, then a centre crop to size x size.
* ``"vggt"`` (the official ``mode="crop"``): the width is resized to ``size`` (518) and the height to
  ``round(h * size / w / 14) * 14`` with PIL bicubic, then the height is centre-cropped to ``size`` if
  taller. Frames that end up with different shapes are padded with white to the largest height and
  width, centred (extra row or column at the bottom / right), as the official loader does.
* ``"vggt-pad"`` (the official ``mode="pad"``): the longer side is resized to ``size`` and the other to
  ``round(other * size / longer / 14) * 14`` (bicubic), then padded with white to size x size, centred.
  What ``official_mode`` picks for VGGT when the frames differ in aspect ratio (mixed sizes or
  portrait and landscape photos), so no frame loses its top and bottom.
* ``"none"``: frames are used as they are; the network then requires H and W to be multiples of 14.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Photo formats people have that Pillow cannot decode here: refused by name rather than skipped silently.
UNREADABLE_PHOTO_SUFFIXES = (".heic", ".heif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2")
SYSTEM_FILE_NAMES = ("thumbs.db", "desktop.ini")
PREPROCESS_MODES = ("anysplat", "vggt", "vggt-pad", "none")
DEFAULT_SIZES = {"anysplat": 448, "vggt": 518, "vggt-pad": 518}
_VGGT_MULTIPLE = 14
_WHITE = 255


class FramesError(ValueError):
    """Frames could not be read or brought to a valid network input."""


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def is_hidden_or_system_file(path: Path) -> bool:
    """True for names starting with '.' (``._*``, ``.DS_Store``) and for ``Thumbs.db`` / ``desktop.ini``."""
    name = Path(path).name
    return name.startswith(".") or name.lower() in SYSTEM_FILE_NAMES


def list_frame_files(directory: Path) -> list[Path]:
    """The image files of a folder in natural order, without hidden and system files.

    Raises:
        FramesError: no images, or HEIC / camera-raw photos among them (named; they cannot be decoded
            here, and leaving them out would silently drop frames).
    """
    visible = [p for p in Path(directory).iterdir() if p.is_file() and not is_hidden_or_system_file(p)]
    unreadable = sorted((p for p in visible if p.suffix.lower() in UNREADABLE_PHOTO_SUFFIXES), key=_natural_key)
    if unreadable:
        more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
        raise FramesError(
            f"{unreadable[0]}{more}: HEIC and camera-raw photos cannot be read; export them as JPEG or PNG"
        )
    files = [p for p in visible if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FramesError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {directory}")
    return sorted(files, key=_natural_key)


def read_frames(source, stride: int = 1, max_frames: int | None = None) -> list[np.ndarray]:
    """Frames as uint8 RGB arrays (H, W, 3) from a folder of images or a video file (see the module doc).

    Raises:
        FramesError: no frames, a missing source, an image that cannot be decoded (named), an
            unreadable video.
    """
    import imageio.v3 as iio

    source = Path(source)
    if stride < 1:
        raise FramesError(f"stride must be >= 1, got {stride}")
    if source.is_dir():
        files = list_frame_files(source)[::stride]
        frames = [load_image_rgb(path) for path in (files[:max_frames] if max_frames else files)]
    elif source.is_file():
        try:
            frames = [_array_to_rgb(f, source) for i, f in enumerate(iio.imiter(source)) if i % stride == 0]
        except FramesError:
            raise
        except Exception as error:
            raise FramesError(f"cannot read {source} as a video: {_one_line(error)}") from error
    else:
        raise FramesError(f"frames not found: {source} (expected a folder of images or a video file)")
    if not frames:
        raise FramesError(f"{source} holds no frames")
    return frames[:max_frames] if max_frames else frames


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_image_rgb(path) -> np.ndarray:
    """One image file -> uint8 RGB (H, W, 3), upright, transparency on white (see the module doc)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise FramesError(f"{path}: cannot be decoded as an image ({_one_line(error)})") from None
    return pil_to_rgb(image)


def pil_to_rgb(image) -> np.ndarray:
    """A PIL image of any mode -> uint8 RGB (H, W, 3), transparency composited onto white."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.clip(np.asarray(image, dtype=np.float64) * (255.0 / 65535.0), 0, 255)
        return np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=-1)
    if mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        finite = grey[np.isfinite(grey)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        grey = np.clip(np.nan_to_num(grey * scale), 0, 255)
        return np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (_WHITE, _WHITE, _WHITE, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _array_to_rgb(image: np.ndarray, path) -> np.ndarray:
    """A decoded video frame -> uint8 (H, W, 3): grey repeated, alpha composited onto white."""
    if image.dtype != np.uint8:
        raise FramesError(f"{path}: only 8-bit video frames are supported, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise FramesError(f"{path}: expected RGB frames, got shape {image.shape}")
    if image.shape[-1] == 4:
        alpha = image[..., 3:].astype(np.float64) / 255.0
        image = np.rint(image[..., :3] * alpha + _WHITE * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image)


def official_mode(model_type: str, frames: list[np.ndarray]) -> str:
    """The official preprocessing for a model type: AnySplat's crop; VGGT's crop, or its pad mode when
    the frames differ in aspect ratio (mixed sizes or orientations)."""
    if model_type != "vggt":
        return model_type
    ratios = {round(f.shape[1] / f.shape[0], 3) for f in frames}
    return "vggt-pad" if len(ratios) > 1 else "vggt"


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
    elif mode == "vggt-pad":
        if width >= height:
            new_w, new_h = size, round(height * (size / width) / _VGGT_MULTIPLE) * _VGGT_MULTIPLE
        else:
            new_w, new_h = round(width * (size / height) / _VGGT_MULTIPLE) * _VGGT_MULTIPLE, size
        pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC)
        return _pad_white(np.asarray(pil), size, size)
    return np.asarray(pil)


def _pad_white(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centres ``image`` on a white canvas (the extra row / column goes to the bottom / right)."""
    top = (height - image.shape[0]) // 2
    left = (width - image.shape[1]) // 2
    canvas = np.full((height, width, 3), _WHITE, dtype=np.uint8)
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


def preprocess_frames(frames: list[np.ndarray], mode: str, size: int | None = None) -> Tensor:
    """uint8 frames -> float (S, 3, H, W) in [0, 1] (see the module doc for the modes)."""
    if mode not in PREPROCESS_MODES:
        raise FramesError(f"preprocess mode must be one of {PREPROCESS_MODES}, got {mode!r}")
    if mode != "none":
        size = size or DEFAULT_SIZES[mode]
        frames = [_preprocess_one(f, mode, size) for f in frames]
    shapes = sorted({f.shape for f in frames})
    if mode == "vggt" and len(shapes) > 1:  # the official loader pads to the largest shape with white
        height, width = max(s[0] for s in shapes), max(s[1] for s in shapes)
        frames = [_pad_white(f, height, width) for f in frames]
        shapes = [(height, width, 3)]
    if len(shapes) != 1:
        raise FramesError(f"frames have different sizes after preprocessing: {shapes}")
    stacked = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    return stacked.float() / 255.0
