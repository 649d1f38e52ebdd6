"""Synthetic multi-view data: procedural Gaussian scenes with captions, camera paths, rendered clips.

Typical use::

    from engine.data import synthetic_clip, SyntheticClipDataset
    clip = synthetic_clip(seed=7)                # 13 frames, 64 x 64, orbit
    clip.frames, clip.depth, clip.cameras, clip.caption
    dataset = SyntheticClipDataset(1000, seed=0, path="mixed")
"""

from engine.data.camera_paths import flythrough_cameras, orbit_cameras, pan_cameras
from engine.data.clips import (
    ORBIT_ARC_DEG,
    PATHS,
    WORLD_VERSION,
    Clip,
    SyntheticClipDataset,
    clip_cameras,
    collate_clips,
    object_pixels,
    render_clip,
    seed_in_split,
    synthetic_clip,
    synthetic_scene_and_cameras,
)
from engine.data.scenes import (
    COMPOSITE_SHAPES,
    FLOOR_COLORS,
    HELDOUT_COMBINATIONS,
    HELDOUT_SEED_MODULUS,
    OBJECT_COLORS,
    OBJECT_SHAPES,
    SKY_COLOR,
    SKY_COLORS,
    SPLITS,
    ReferenceView,
    SceneObject,
    SpatialRelation,
    SyntheticScene,
    build_scene,
    describe_layout,
    generate_scene,
    split_of_seed,
)

__all__ = [
    "COMPOSITE_SHAPES",
    "FLOOR_COLORS",
    "HELDOUT_COMBINATIONS",
    "HELDOUT_SEED_MODULUS",
    "OBJECT_COLORS",
    "OBJECT_SHAPES",
    "ORBIT_ARC_DEG",
    "PATHS",
    "SKY_COLOR",
    "SKY_COLORS",
    "SPLITS",
    "Clip",
    "ReferenceView",
    "SceneObject",
    "SpatialRelation",
    "SyntheticClipDataset",
    "SyntheticScene",
    "WORLD_VERSION",
    "build_scene",
    "clip_cameras",
    "collate_clips",
    "describe_layout",
    "flythrough_cameras",
    "generate_scene",
    "object_pixels",
    "orbit_cameras",
    "pan_cameras",
    "render_clip",
    "seed_in_split",
    "split_of_seed",
    "synthetic_clip",
    "synthetic_scene_and_cameras",
]
