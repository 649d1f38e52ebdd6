"""Training and held-out samples for the 3D teachers: procedural orbits with known depth and cameras.

A *sample* is one procedural scene (``engine.data.generate_scene``) seen along its orbit of 2T-1 views
at 112 x 112: the even views (0, 2, ..., 2T-2) are the T network inputs (exactly the cameras of the
T-frame clip ``synthetic_clip(seed, T)`` draws), the odd views lie half-way between them and are the
held-out (novel) views of the same scene.

Samples are rendered once and cached in shards (``shard_<k>.pt``: uint8 frames, float16 depth, uint8
alpha, float32 cameras, captions; read with ``torch.load(weights_only=True)``), because rendering costs
more than a training step's data handling.

Normalisation (:func:`normalise`) follows VGGT's training convention, which AnySplat inherits: all
cameras are re-expressed in the first input camera's frame (its camera-to-world is the identity), and
translations and depths are divided by the mean distance to the origin of the valid (surface) points of
the input views, so the scene's mean point distance is 1.

Splits: training scenes are ``SyntheticClipDataset(n, seed=TRAIN_SEED, split="train").item_seed(i)``,
held-out scenes ``SyntheticClipDataset(n, seed=HELDOUT_SEED, split="heldout")``: the world's own split
by seed (held-out scenes hold colour-shape pairs never drawn for training seeds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from engine.data import SyntheticClipDataset, render_clip, synthetic_scene_and_cameras
from engine.io.atomic import atomic_write
from engine.scene import Cameras

log = logging.getLogger(__name__)

TRAIN_SEED = 1401
HELDOUT_SEED = 1499
SHARD_SIZE = 25
CACHE_VERSION = 2  # 2: the world's fixed half-orbit (engine.data.WORLD_VERSION 2)
VALID_ALPHA = 0.5  # pixels whose accumulated opacity exceeds this are surface pixels (others: sky)
SKY_DEPTH = 3.0  # normalised depth target of sky pixels (beyond the floor's far edge)


def split_seeds(split: str, count: int) -> list[int]:
    """Scene seeds of the ``split`` ("train" or "heldout")."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    base = TRAIN_SEED if split == "train" else HELDOUT_SEED
    dataset = SyntheticClipDataset(count, seed=base, split=split)
    return [dataset.item_seed(i) for i in range(count)]


def render_sample(seed: int, num_views: int = 13, size: int = 112) -> dict:
    """One scene's 2T-1 orbit views (raw, world frame) as a dict of compact tensors."""
    scene, cameras = synthetic_scene_and_cameras(seed, 2 * num_views - 1, size, size, "orbit")
    clip = render_clip(scene, cameras)
    background = torch.as_tensor(scene.sky_color, dtype=torch.float32)
    return {
        "seed": int(seed),
        "frames": (clip.frames * 255).round().to(torch.uint8),  # (2T-1, H, W, 3)
        "depth": clip.depth.to(torch.float16),
        "alpha": (clip.alpha * 255).round().to(torch.uint8),
        "camera_to_world": cameras.camera_to_world.float(),
        "intrinsics": cameras.intrinsics.float(),
        "background": background.float(),
        "caption": clip.caption,
    }


def build_cache(
    folder, split: str, count: int, num_views: int = 13, size: int = 112, progress: bool = True
) -> list[Path]:
    """Renders the first ``count`` scenes of ``split`` into ``folder/<split>/shard_<k>.pt`` (resumable:
    finished shards are kept)."""
    from tqdm import tqdm

    folder = Path(folder) / split
    folder.mkdir(parents=True, exist_ok=True)
    seeds = split_seeds(split, count)
    shards = []
    bar = tqdm(total=count, desc=f"rendering {split} scenes", disable=not progress)
    for index, start in enumerate(range(0, count, SHARD_SIZE)):
        path = folder / f"shard_{index:04d}.pt"
        chunk = seeds[start : start + SHARD_SIZE]
        if path.is_file():
            meta = torch.load(path, weights_only=True)
            if meta.get("version") == CACHE_VERSION and meta["seeds"] == chunk and meta["size"] == size:
                shards.append(path)
                bar.update(len(chunk))
                continue
        samples = []
        for seed in chunk:
            samples.append(render_sample(seed, num_views, size))
            bar.update(1)
        data = {
            "version": CACHE_VERSION,
            "seeds": chunk,
            "size": size,
            "num_views": num_views,
            "samples": samples,
        }
        with atomic_write(path, "wb") as f:
            torch.save(data, f)
        shards.append(path)
    bar.close()
    return shards


def load_cache(folder, split: str, count: Optional[int] = None) -> list[dict]:
    """The cached samples of ``split`` (all, or the first ``count``)."""
    paths = sorted((Path(folder) / split).glob("shard_*.pt"))
    samples: list[dict] = []
    for path in paths:
        try:
            samples.extend(torch.load(path, weights_only=True)["samples"])
        except Exception as error:  # a shard being written is not there yet (atomic), a broken one is named
            raise ValueError(f"cannot read the cached samples {path}: {error}") from error
        if count is not None and len(samples) >= count:
            break
    if count is not None:
        if len(samples) < count:
            raise FileNotFoundError(f"{folder}/{split} holds {len(samples)} samples, {count} were asked for")
        samples = samples[:count]
    return samples


@dataclass
class TeacherBatch:
    """One normalised sample, batch dimension 1. T input views, K held-out views, H x W images.

    Attributes:
        images: (1, T, 3, H, W) input frames in [0, 1].
        depth: (1, T, H, W) normalised z-depth of the input views (0 on the sky).
        valid: (1, T, H, W) bool, surface pixels (alpha > 0.5).
        camera_to_world: (1, T, 4, 4) input cameras in view 0's frame, normalised translation.
        intrinsics: (1, T, 3, 3) pixel intrinsics.
        points: (1, T, H, W, 3) normalised world points of the input pixels (view 0's frame).
        sky_points: (1, T, H, W, 3) the points at normalised z-depth ``SKY_DEPTH`` through every pixel (the
            world-point target of sky pixels, as ``SKY_DEPTH`` is their depth target).
        target_images: (K, H, W, 3) held-out frames; target_cameras: their ``Cameras``.
        background: (3,) sky colour (what the renders are composited over).
        scale: the world units per normalised unit; caption: the scene's caption.
    """

    images: Tensor
    depth: Tensor
    valid: Tensor
    camera_to_world: Tensor
    intrinsics: Tensor
    points: Tensor
    sky_points: Tensor
    target_images: Tensor
    target_cameras: Cameras
    input_cameras: Cameras
    background: Tensor
    scale: float
    caption: str


def _unproject_centres(depth: Tensor, camera_to_world: Tensor, intrinsics: Tensor) -> Tensor:
    """(V, H, W) depth -> (V, H, W, 3) points through pixel centres (the renderer's convention)."""
    _, height, width = depth.shape
    cams = Cameras(camera_to_world, intrinsics, width=width, height=height)
    return cams.unproject_depth(depth)


def normalise(sample: dict, reverse: bool = False) -> TeacherBatch:
    """A cached sample -> a :class:`TeacherBatch` in the networks' convention (see the module doc).

    ``reverse``: use the orbit backwards (the last input view becomes view 0), a free augmentation.
    """
    frames = sample["frames"].float() / 255.0
    depth = sample["depth"].float()
    alpha = sample["alpha"].float() / 255.0
    c2w = sample["camera_to_world"].double()
    intrinsics = sample["intrinsics"].float()
    order = torch.arange(frames.shape[0])
    if reverse:
        order = order.flip(0)
    frames, depth, alpha, c2w, intrinsics = (x[order] for x in (frames, depth, alpha, c2w, intrinsics))
    inputs = torch.arange(0, frames.shape[0], 2)
    held = torch.arange(1, frames.shape[0], 2)

    reference = torch.linalg.inv(c2w[0])
    c2w = reference @ c2w  # view 0 is the identity
    valid = alpha[inputs] > VALID_ALPHA
    points = _unproject_centres(depth[inputs].double(), c2w[inputs], intrinsics[inputs].double())
    distances = points.norm(dim=-1)[valid]
    if distances.numel() == 0:
        raise ValueError(f"scene {sample['seed']}: no surface pixel in the input views")
    scale = float(distances.mean())
    c2w[:, :3, 3] /= scale
    depth = depth / scale
    points = points / scale
    sky = torch.full_like(depth[inputs], SKY_DEPTH, dtype=torch.float64)
    sky_points = _unproject_centres(sky, c2w[inputs], intrinsics[inputs].double())
    c2w = c2w.float()
    height, width = frames.shape[1:3]
    return TeacherBatch(
        images=frames[inputs].permute(0, 3, 1, 2)[None].contiguous(),
        depth=(depth[inputs] * valid)[None],
        valid=valid[None],
        camera_to_world=c2w[inputs][None],
        intrinsics=intrinsics[inputs][None],
        points=points.float()[None],
        sky_points=sky_points.float()[None],
        target_images=frames[held],
        target_cameras=Cameras(c2w[held], intrinsics[held], width=width, height=height),
        input_cameras=Cameras(c2w[inputs], intrinsics[inputs], width=width, height=height),
        background=sample["background"].float(),
        scale=scale,
        caption=sample["caption"],
    )


def gt_pose_encoding(batch: TeacherBatch, fov_eps: float) -> Tensor:
    """(1, T, 9) pose encoding of the normalised input cameras, for a network whose intrinsics use
    ``f = (size / 2) / (tan(fov / 2) + fov_eps)`` (VGGT: 0, AnySplat: 1e-3)."""
    from engine.models.pose_encoding import closed_form_inverse_se3, mat_to_quat

    w2c = closed_form_inverse_se3(batch.camera_to_world[0].double())[:, :3]
    quat = mat_to_quat(w2c[:, :3, :3])
    height, width = batch.images.shape[-2:]
    k = batch.intrinsics[0].double()
    fov_h = 2 * torch.atan((height / 2) / k[:, 1, 1] - fov_eps)
    fov_w = 2 * torch.atan((width / 2) / k[:, 0, 0] - fov_eps)
    return torch.cat([w2c[:, :, 3], quat, fov_h[:, None], fov_w[:, None]], dim=-1).float()[None]


def random_reverse(generator: torch.Generator) -> bool:
    return bool(torch.rand((), generator=generator) < 0.5)


__all__ = [
    "HELDOUT_SEED",
    "SKY_DEPTH",
    "TRAIN_SEED",
    "TeacherBatch",
    "build_cache",
    "gt_pose_encoding",
    "load_cache",
    "normalise",
    "render_sample",
    "split_seeds",
]
