"""The widened world: composite objects, more colours, sky tints, and the fixed held-out split."""

import numpy as np
import pytest
import torch

from engine.data import (
    COMPOSITE_SHAPES,
    HELDOUT_COMBINATIONS,
    HELDOUT_SEED_MODULUS,
    OBJECT_COLORS,
    OBJECT_SHAPES,
    SKY_COLORS,
    ReferenceView,
    SceneObject,
    SyntheticClipDataset,
    build_scene,
    describe_layout,
    generate_scene,
    seed_in_split,
    split_of_seed,
)
from engine.data.scenes import _TRUNK_COLOR

VIEW = ReferenceView(center=(0.0, 0.0, 0.3), distance=4.0, elevation_deg=20.0, azimuth_deg=0.0)


def object_points(scene):
    on_object = scene.gaussians.means[:, 2] > 1e-4
    return scene.gaussians.means[on_object].double(), scene.gaussians.base_colors()[on_object].double()


@pytest.mark.parametrize("shape", COMPOSITE_SHAPES)
def test_composite_objects_fill_their_stated_extent(shape):
    obj = SceneObject(shape, "blue", (0.3, -0.2), 0.4, yaw_deg=20.0)
    scene = build_scene([obj], "grey", VIEW, surface_spacing=0.04)
    means, colors = object_points(scene)
    local = means - torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)
    radial = torch.linalg.vector_norm(local[:, :2], dim=1)
    assert local[:, 2].max() <= obj.height + 1e-5 and local[:, 2].max() >= 0.97 * obj.height
    assert radial.max() <= obj.footprint_radius + 1e-5 and radial.max() >= 0.9 * obj.footprint_radius
    assert obj.indefinite == f"a blue {shape}" and obj.name in scene.caption
    # Shading only scales a base colour: blue dominates the object, and only a tree has a brown part.
    blue = torch.tensor(OBJECT_COLORS["blue"], dtype=torch.float64)
    trunk = torch.tensor(_TRUNK_COLOR, dtype=torch.float64)

    def cosine(rgb, base):
        return (rgb @ base) / (torch.linalg.vector_norm(rgb, dim=1) * torch.linalg.vector_norm(base))

    is_blue = cosine(colors, blue) > 0.98
    is_trunk = cosine(colors, trunk) > 0.995
    assert is_blue.float().mean() > 0.8
    if shape == "tree":
        assert is_trunk.any() and local[is_trunk, 2].max() <= 0.9 * 0.4 + 1e-5  # the trunk is at the bottom
    else:
        assert (is_blue | ~is_trunk).all()


def test_composites_are_told_apart_by_their_shape():
    """Same colour and size, different composites: different heights and silhouettes."""
    heights = {shape: SceneObject(shape, "red", (0, 0), 0.4).height for shape in COMPOSITE_SHAPES}
    assert len(set(np.round(list(heights.values()), 6))) == len(COMPOSITE_SHAPES)
    # A table is hollow under its top: no Gaussians near the axis between the floor and the top.
    table = build_scene([SceneObject("table", "red", (0.0, 0.0), 0.4)], "grey", VIEW)
    means, _ = object_points(table)
    under = (torch.linalg.vector_norm(means[:, :2], dim=1) < 0.1) & (means[:, 2] < 0.4)
    assert not under.any()


def test_the_world_has_more_colours_and_sky_tints():
    assert {"cyan", "black", "magenta"} <= set(OBJECT_COLORS) and len(OBJECT_COLORS) == 11
    assert set(SKY_COLORS) == {"clear", "sunset", "cloudy"}
    # Sky names are never colour words of objects or floors (a colour word names an object or the floor).
    assert not set(SKY_COLORS) & set(OBJECT_COLORS)
    caption, _ = describe_layout([SceneObject("house", "cyan", (0, 0), 0.3)], "beige", VIEW, "sunset")
    assert caption == "a cyan house on a beige floor under a sunset sky"
    with pytest.raises(ValueError, match="sky_color_name"):
        describe_layout([SceneObject("house", "cyan", (0, 0), 0.3)], "beige", VIEW, "green")


def test_seed_split_is_fixed_and_scenes_follow_it():
    assert [split_of_seed(s) for s in range(12)] == ["heldout"] + ["train"] * 9 + ["heldout", "train"]
    seen_train_pairs = set()
    for seed in range(1, 150):
        if split_of_seed(seed) != "train":
            continue
        scene = generate_scene(seed)
        pairs = {(o.color_name, o.shape) for o in scene.objects}
        assert not pairs & HELDOUT_COMBINATIONS and scene.split == "train"
        seen_train_pairs |= pairs
    # Training still shows every colour and every shape on its own.
    assert {c for c, _ in seen_train_pairs} == set(OBJECT_COLORS)
    assert {s for _, s in seen_train_pairs} == set(OBJECT_SHAPES)
    heldout_pairs = set()
    for seed in range(0, 400, HELDOUT_SEED_MODULUS):
        scene = generate_scene(seed)
        pairs = {(o.color_name, o.shape) for o in scene.objects}
        assert pairs & HELDOUT_COMBINATIONS and scene.split == "heldout"
        assert any(f"{c} {s}" in scene.caption for c, s in pairs & HELDOUT_COMBINATIONS)
        heldout_pairs |= pairs & HELDOUT_COMBINATIONS
    assert len(heldout_pairs) >= len(HELDOUT_COMBINATIONS) - 2  # the captions cover the held-out pairs
    # One-object held-out scenes are the held-out pair itself.
    single = generate_scene(20, num_objects=1)
    assert (single.objects[0].color_name, single.objects[0].shape) in HELDOUT_COMBINATIONS


def test_seed_in_split_and_split_datasets():
    for seed in [0, 1, 9, 10, 11, 123456789, 2**32 - 1]:
        for split in ("train", "heldout"):
            moved = seed_in_split(seed, split)
            assert split_of_seed(moved) == split and 0 <= moved - seed < HELDOUT_SEED_MODULUS
            assert seed_in_split(moved, split) == moved
    train = SyntheticClipDataset(40, seed=3, split="train", num_frames=1, height=8, width=8)
    heldout = SyntheticClipDataset(40, seed=3, split="heldout", num_frames=1, height=8, width=8)
    train_seeds = {train.item_seed(i) for i in range(40)}
    heldout_seeds = {heldout.item_seed(i) for i in range(40)}
    assert len(train_seeds) == 40 and len(heldout_seeds) == 40 and not train_seeds & heldout_seeds
    assert all(split_of_seed(s) == "train" for s in train_seeds)
    assert all(split_of_seed(s) == "heldout" for s in heldout_seeds)
    assert heldout[0].caption == generate_scene(heldout.item_seed(0)).caption
    with pytest.raises(ValueError, match="split"):
        SyntheticClipDataset(2, split="test")
    with pytest.raises(ValueError, match="split"):
        seed_in_split(5, "validation")
