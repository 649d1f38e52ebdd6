"""Rendered multi-view clips of synthetic scenes, and a deterministic dataset of them.

A clip is what a text-to-video model would produce for the scene's caption along a camera path: T
frames with depth, the cameras and the caption. The clips are the test data of the stitching and
alignment code and the training data of the small default model, so they are cheap (a few thousand
Gaussians, small images) and fully determined by a seed.

Seeding: ``synthetic_clip(seed)`` builds its scene from ``seed`` and draws its camera path from an
independent stream spawned from the same seed, so changing the path kind or image size never changes
the scene. ``SyntheticClipDataset(num_clips, seed)`` gives item i the seed derived from (seed, i);
with ``split="train"`` or ``"heldout"`` that seed is moved into the split (see
:func:`engine.data.scenes.split_of_seed`), so training and held-out datasets never share a scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from engine.data.camera_paths import flythrough_cameras, orbit_cameras, pan_cameras
from engine.data.scenes import HELDOUT_SEED_MODULUS, SPLITS, SyntheticScene, generate_scene
from engine.render import rasterize
from engine.scene import Cameras

PATHS = ("orbit", "flythrough", "pan")

_PATH_STREAM_TAG = 0x70617468  # "path"

# Orbit clips sweep a fixed half orbit, counter-clockwise seen from above (towards each camera's right).
# The default world has one camera motion, as the method's prompt template asks the video model for one:
# the miniature decoders then identify a clip's cameras from its content (elevation, distance, scale)
# instead of also guessing an arc length, and the generator need not model a random orbit speed.
ORBIT_ARC_DEG = 180.0
# World version: bumped whenever a change alters rendered clips (caches key on it).
WORLD_VERSION = 2

# Camera path sampling ranges for synthetic_clip.
_FLY_HEIGHT_RANGE = (1.3, 1.8)
_FLY_END_FRACTION_RANGE = (0.1, 0.4)  # where the flight ends, as a fraction of the start's distance
_FLY_LOOK_DOWN_RANGE_DEG = (25.0, 35.0)
_PAN_ARC_RANGE_DEG = (40.0, 90.0)


@dataclass
class Clip:
    """T rendered frames of a scene along a camera path.

    Attributes:
        frames: (T, H, W, 3) RGB in [0, 1], over the scene's sky colour.
        depth: (T, H, W) expected camera-z depth; 0 where nothing was hit (alpha 0).
        alpha: (T, H, W) accumulated opacity in [0, 1] (1 on surfaces, 0 on the sky).
        cameras: the T cameras (OpenCV axes).
        caption: the scene's text description.
    """

    frames: Tensor
    depth: Tensor
    alpha: Tensor
    cameras: Cameras
    caption: str

    def __len__(self) -> int:
        return self.frames.shape[0]


def render_clip(scene: SyntheticScene, cameras: Cameras, *, background=None) -> Clip:
    """Renders ``scene`` from every camera with the project rasterizer, over ``background`` (3,)
    (default: the scene's sky colour).

    Returns:
        Clip with frames (T, H, W, 3) clamped to [0, 1], depth and alpha (T, H, W).
    """
    if not isinstance(scene, SyntheticScene):
        raise TypeError(f"render_clip: scene must be a SyntheticScene, got {type(scene).__name__}")
    if background is None:
        background = scene.sky_color
    with torch.no_grad():
        out = rasterize(scene.gaussians, cameras.to(device=scene.gaussians.device), background=background)
    return Clip(
        frames=out.rgb.clamp(0.0, 1.0),
        depth=out.depth,
        alpha=out.alpha.clamp(0.0, 1.0),
        cameras=cameras,
        caption=scene.caption,
    )


OBJECT_MIN_HEIGHT = 0.15  # world units above the floor (z = 0); the floor's rendered surface reaches ~0.1


def object_pixels(clip: Clip, min_height: float = OBJECT_MIN_HEIGHT) -> Tensor:
    """(T, H, W) bool: the pixels of ``clip`` that show an object, not the floor or the sky.

    Read from the clip's own geometry: a pixel is an object's when it is covered (alpha > 0.5) and its
    surface point (the rendered depth unprojected through the clip's camera) lies more than ``min_height``
    above the floor plane z = 0. An object's lowest ``min_height`` (where it touches the floor) is left out:
    the floor's Gaussians, blended, render up to about 0.1 above z = 0.
    """
    points = clip.cameras.unproject_depth(clip.depth)
    return (clip.alpha > 0.5) & (points[..., 2] > min_height)


def clip_cameras(
    scene: SyntheticScene,
    path: str,
    num_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    fov_deg: float = 60.0,
) -> Cameras:
    """A camera path of kind ``path`` for ``scene``, with free parameters drawn from ``rng``.

    All paths start from the scene's reference view, so the caption's relations hold in the view
    they refer to: the orbit starts at the reference camera and circles the centre; the fly-through
    starts above the reference camera and flies towards and over the centre; the pan stands at the
    reference camera and sweeps across the centre, passing the reference direction half-way.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    view = scene.reference_view
    if path == "orbit":
        return orbit_cameras(
            num_frames,
            width,
            height,
            center=view.center,
            distance=view.distance,
            elevation_deg=view.elevation_deg,
            start_azimuth_deg=view.azimuth_deg,
            arc_deg=ORBIT_ARC_DEG,
            fov_deg=fov_deg,
        )
    az = math.radians(view.azimuth_deg)
    outward = np.array([math.cos(az), math.sin(az), 0.0])  # from the centre towards the reference camera
    centre = np.asarray(view.center)
    horizontal_distance = view.distance * math.cos(math.radians(view.elevation_deg))
    if path == "flythrough":
        height_above_floor = float(rng.uniform(*_FLY_HEIGHT_RANGE))
        end_fraction = float(rng.uniform(*_FLY_END_FRACTION_RANGE))
        start = centre + horizontal_distance * outward
        end = centre + end_fraction * horizontal_distance * outward
        start[2] = end[2] = height_above_floor
        return flythrough_cameras(
            num_frames,
            width,
            height,
            start=start.tolist(),
            end=end.tolist(),
            look_down_deg=float(rng.uniform(*_FLY_LOOK_DOWN_RANGE_DEG)),
            fov_deg=fov_deg,
        )
    eye = centre + horizontal_distance * outward
    eye[2] = centre[2] + view.distance * math.sin(math.radians(view.elevation_deg))
    arc = float(rng.uniform(*_PAN_ARC_RANGE_DEG))
    return pan_cameras(
        num_frames,
        width,
        height,
        position=eye.tolist(),
        start_yaw_deg=view.azimuth_deg + 180.0 - arc / 2,
        arc_deg=arc,
        look_down_deg=view.elevation_deg,
        fov_deg=fov_deg,
    )


def synthetic_scene_and_cameras(
    seed: int,
    num_frames: int = 13,
    height: int = 64,
    width: int = 64,
    path: str = "orbit",
    *,
    fov_deg: float = 60.0,
    num_objects: Optional[int] = None,
) -> tuple[SyntheticScene, Cameras]:
    """The scene ``generate_scene(seed)`` and the ``path`` cameras that ``synthetic_clip`` renders."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    scene = generate_scene(seed, num_objects=num_objects)
    # An independent stream for the path (tagged so that it never equals the scene's stream): the
    # scene does not depend on the path and vice versa.
    path_rng = np.random.default_rng(np.random.SeedSequence([int(seed), _PATH_STREAM_TAG, PATHS.index(path)]))
    return scene, clip_cameras(scene, path, num_frames, height, width, path_rng, fov_deg=fov_deg)


def synthetic_clip(
    seed: int,
    num_frames: int = 13,
    height: int = 64,
    width: int = 64,
    path: str = "orbit",
    *,
    fov_deg: float = 60.0,
    num_objects: Optional[int] = None,
) -> Clip:
    """One rendered clip of the scene ``generate_scene(seed)`` along a ``path`` camera path.

    The same arguments always give bit-identical frames, depth, cameras and caption.
    """
    scene, cameras = synthetic_scene_and_cameras(
        seed, num_frames, height, width, path, fov_deg=fov_deg, num_objects=num_objects
    )
    return render_clip(scene, cameras)


def seed_in_split(seed: int, split: str) -> int:
    """``seed`` if it lies in ``split`` ("train" or "heldout"), else the nearest seed of that split
    above it (held-out seeds are the multiples of HELDOUT_SEED_MODULUS, see ``split_of_seed``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    seed = int(seed)
    residue = seed % HELDOUT_SEED_MODULUS
    if split == "heldout":
        return seed if residue == 0 else seed + HELDOUT_SEED_MODULUS - residue
    return seed + 1 if residue == 0 else seed


class SyntheticClipDataset(Dataset):
    """``num_clips`` synthetic clips; item i is always the same clip for a given ``seed``.

    Args:
        num_clips: dataset length.
        seed: base seed; item i uses the seed derived from (seed, i).
        num_frames, height, width, fov_deg: clip format.
        path: a camera path kind (see PATHS), or "mixed" to draw one per item from its seed.
        num_objects: objects per scene, or None for 2 to 4 drawn per scene.
        split: None for seeds of both splits, "train" or "heldout" for seeds of that split only
            (each item's seed moved into the split by :func:`seed_in_split`).
    """

    def __init__(
        self,
        num_clips: int,
        seed: int = 0,
        *,
        num_frames: int = 13,
        height: int = 64,
        width: int = 64,
        path: str = "orbit",
        fov_deg: float = 60.0,
        num_objects: Optional[int] = None,
        split: Optional[str] = None,
    ):
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        if not isinstance(num_clips, int) or num_clips < 0:
            raise ValueError(f"num_clips must be a non-negative int, got {num_clips!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if path not in PATHS and path != "mixed":
            raise ValueError(f"path must be one of {PATHS} or 'mixed', got {path!r}")
        self.num_clips = num_clips
        self.seed = seed
        self.num_frames = num_frames
        self.height = height
        self.width = width
        self.path = path
        self.fov_deg = fov_deg
        self.num_objects = num_objects
        self.split = split

    def __len__(self) -> int:
        return self.num_clips

    def item_seed(self, index: int) -> int:
        """The scene seed of item ``index`` (a hash of the base seed and the index, moved into the split)."""
        seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
        return seed if self.split is None else seed_in_split(seed, self.split)

    def item_path(self, index: int) -> str:
        if self.path != "mixed":
            return self.path
        return PATHS[self.item_seed(index) % len(PATHS)]

    def __getitem__(self, index: int) -> Clip:
        if not -self.num_clips <= index < self.num_clips:
            raise IndexError(f"index {index} out of range for {self.num_clips} clips")
        index %= self.num_clips
        return synthetic_clip(
            self.item_seed(index),
            self.num_frames,
            self.height,
            self.width,
            self.item_path(index),
            fov_deg=self.fov_deg,
            num_objects=self.num_objects,
        )


def collate_clips(clips: list[Clip]) -> dict:
    """Stacks clips of one format into a batch (for ``DataLoader(collate_fn=collate_clips)``).

    Returns:
        dict with frames (B, T, H, W, 3), depth (B, T, H, W), alpha (B, T, H, W),
        camera_to_world (B, T, 4, 4), intrinsics (B, T, 3, 3), captions (list of B str).
    """
    if not clips:
        raise ValueError("collate_clips needs at least one clip")
    formats = {(len(c), c.cameras.height, c.cameras.width) for c in clips}
    if len(formats) != 1:
        raise ValueError(f"collate_clips: clips differ in (frames, height, width): {sorted(formats)}")
    return {
        "frames": torch.stack([c.frames for c in clips]),
        "depth": torch.stack([c.depth for c in clips]),
        "alpha": torch.stack([c.alpha for c in clips]),
        "camera_to_world": torch.stack([c.cameras.camera_to_world for c in clips]),
        "intrinsics": torch.stack([c.cameras.intrinsics for c in clips]),
        "captions": [c.caption for c in clips],
    }
