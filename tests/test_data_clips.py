"""Rendered synthetic clips and the clip dataset (small images to stay fast on a shared CPU)."""

import math

import pytest
import torch
from torch.utils.data import DataLoader

from engine.data import (
    ORBIT_ARC_DEG,
    PATHS,
    SKY_COLOR,
    SKY_COLORS,
    ReferenceView,
    SceneObject,
    SyntheticClipDataset,
    build_scene,
    collate_clips,
    generate_scene,
    orbit_cameras,
    render_clip,
    synthetic_clip,
    synthetic_scene_and_cameras,
)


def clip_tensors(clip):
    return [clip.frames, clip.depth, clip.alpha, clip.cameras.camera_to_world, clip.cameras.intrinsics]


@pytest.mark.parametrize("path", PATHS)
def test_clip_shapes_and_ranges_for_odd_length_and_non_square_images(path):
    clip = synthetic_clip(4, num_frames=3, height=21, width=28, path=path)
    assert len(clip) == 3
    assert clip.frames.shape == (3, 21, 28, 3) and clip.frames.dtype == torch.float32
    assert clip.depth.shape == (3, 21, 28) and clip.alpha.shape == (3, 21, 28)
    assert len(clip.cameras) == 3 and (clip.cameras.width, clip.cameras.height) == (28, 21)
    assert clip.frames.min() >= 0 and clip.frames.max() <= 1
    assert clip.alpha.min() >= 0 and clip.alpha.max() <= 1
    assert torch.isfinite(clip.depth).all() and clip.depth.min() >= 0
    assert clip.caption == generate_scene(4).caption
    # Every frame shows the scene (mostly solid surfaces) and not an empty sky.
    assert (clip.alpha.mean(dim=(1, 2)) > 0.3).all()
    # Surfaces are opaque: pixels are either sky or fully covered, hardly anything in between.
    assert ((clip.alpha > 0.05) & (clip.alpha < 0.95)).float().mean() < 0.1


def test_clip_is_deterministic_and_seeds_differ():
    a, b = synthetic_clip(9, num_frames=2, height=16, width=16), synthetic_clip(9, num_frames=2, height=16, width=16)
    assert a.caption == b.caption
    for ta, tb in zip(clip_tensors(a), clip_tensors(b)):
        assert torch.equal(ta, tb)
    c = synthetic_clip(10, num_frames=2, height=16, width=16)
    assert c.caption != a.caption
    assert not torch.equal(c.frames, a.frames)


def test_the_camera_path_does_not_change_the_scene():
    orbit = synthetic_clip(2, num_frames=3, height=12, width=12, path="orbit")
    pan = synthetic_clip(2, num_frames=3, height=12, width=12, path="pan")
    assert orbit.caption == pan.caption
    # The orbit starts at the scene's reference view (the view the caption refers to), and the pan
    # passes through it half-way.
    reference = generate_scene(2).reference_view.cameras(12, 12).camera_to_world[0]
    assert torch.allclose(orbit.cameras.camera_to_world[0], reference, atol=1e-5)
    assert torch.allclose(pan.cameras.camera_to_world[1], reference, atol=1e-5)


def test_sky_shows_the_background_colour_where_nothing_is_hit():
    skies = set()
    for seed in (1, 2, 3, 6):  # a clear, a sunset and a cloudy sky among them
        scene = generate_scene(seed)
        skies.add(scene.sky_color_name)
        clip = synthetic_clip(seed, num_frames=2, height=24, width=24)
        sky = clip.alpha < 1e-3
        assert sky.any()  # the camera looks down at the floor but sees the sky above its far edge
        expected = torch.tensor(SKY_COLORS[scene.sky_color_name])
        assert torch.allclose(clip.frames[sky], expected.expand(int(sky.sum()), 3), atol=1e-5)
        assert clip.caption.endswith(f"under a {scene.sky_color_name} sky")
    assert skies == set(SKY_COLORS)
    # An explicit background still wins, and the default scene sky is the clear one.
    scene = build_scene([SceneObject("cube", "red", (0.0, 0.0), 0.3)], "grey", generate_scene(1).reference_view)
    assert scene.sky_color == SKY_COLOR == SKY_COLORS["clear"]
    clip = render_clip(scene, scene.reference_view.cameras(24, 24), background=(0.0, 1.0, 0.0))
    sky = clip.alpha < 1e-3
    assert torch.allclose(clip.frames[sky], torch.tensor([0.0, 1.0, 0.0]).expand(int(sky.sum()), 3), atol=1e-5)


def test_centre_pixel_depth_is_the_distance_to_the_visible_surface():
    """Odd image sizes put a pixel centre exactly on the optical axis, which hits the orbit's target."""
    sphere = SceneObject("sphere", "blue", (0.0, 0.0), 0.5)  # top of the floor at z = 0, centre at z = 0.5
    distance = 3.0
    view = ReferenceView(center=(0.0, 0.0, 0.5), distance=distance, elevation_deg=20.0, azimuth_deg=0.0)
    scene = build_scene([sphere], "grey", view)
    cams = orbit_cameras(3, 33, 33, center=view.center, distance=distance, elevation_deg=20.0, arc_deg=240.0)
    clip = render_clip(scene, cams)
    # The ray to the sphere's centre meets its surface one radius before the centre.
    assert torch.allclose(clip.depth[:, 16, 16], torch.full((3,), distance - 0.5), atol=0.05)
    assert (clip.alpha[:, 16, 16] > 0.99).all()

    # Aimed at a bare patch of floor, the centre ray ends on the floor at the target.
    far_sphere = SceneObject("sphere", "blue", (2.0, 2.0), 0.3)
    floor_target = (-1.0, 0.0, 0.0)
    view = ReferenceView(center=floor_target, distance=distance, elevation_deg=35.0, azimuth_deg=180.0)
    cams = orbit_cameras(1, 33, 33, center=floor_target, distance=distance, elevation_deg=35.0, start_azimuth_deg=180.0)
    clip = render_clip(build_scene([far_sphere], "grey", view), cams)
    # Looser: expected depth blends the centre depths of the overlapping floor discs (spacing 0.2),
    # and at an oblique view front-to-back compositing favours the nearer ones.
    assert math.isclose(float(clip.depth[0, 16, 16]), distance, abs_tol=0.15)


def test_a_default_clip_renders():
    """The default format: 13 frames of 64 x 64 (speed is a benchmark's business, not a test's)."""
    clip = synthetic_clip(0)
    assert clip.frames.shape == (13, 64, 64, 3)
    assert clip.depth.shape == (13, 64, 64)
    for obj in generate_scene(0).objects:
        assert obj.name in clip.caption


def test_dataset_items_are_deterministic_and_batch():
    dataset = SyntheticClipDataset(3, seed=5, num_frames=3, height=12, width=20, path="mixed")
    assert len(dataset) == 3
    first = dataset[1]
    again = SyntheticClipDataset(3, seed=5, num_frames=3, height=12, width=20, path="mixed")[1]
    assert first.caption == again.caption and torch.equal(first.frames, again.frames)
    assert dataset[-2].caption == first.caption
    other_seed = SyntheticClipDataset(3, seed=6, num_frames=3, height=12, width=20, path="mixed")[1]
    assert not torch.equal(other_seed.frames, first.frames)
    assert len({dataset.item_seed(i) for i in range(3)}) == 3
    with pytest.raises(IndexError):
        dataset[3]

    batch = next(iter(DataLoader(dataset, batch_size=2, collate_fn=collate_clips)))
    assert batch["frames"].shape == (2, 3, 12, 20, 3)
    assert batch["depth"].shape == (2, 3, 12, 20) and batch["alpha"].shape == (2, 3, 12, 20)
    assert batch["camera_to_world"].shape == (2, 3, 4, 4) and batch["intrinsics"].shape == (2, 3, 3, 3)
    assert batch["captions"][1] == first.caption
    assert torch.equal(batch["frames"][1], first.frames)


def test_bad_requests_are_rejected():
    with pytest.raises(ValueError, match="path"):
        synthetic_clip(0, path="zoom")
    with pytest.raises(ValueError, match="path"):
        SyntheticClipDataset(2, path="zoom")
    with pytest.raises(TypeError, match="SyntheticScene"):
        render_clip(generate_scene(0).gaussians, orbit_cameras(1, 8, 8, distance=2.0))
    a = synthetic_clip(0, num_frames=2, height=8, width=8)
    b = synthetic_clip(0, num_frames=2, height=8, width=10)
    with pytest.raises(ValueError, match="differ"):
        collate_clips([a, b])


def test_preview_command_writes_a_contact_sheet(tmp_path, capsys):
    import imageio.v3 as iio

    from engine.data.__main__ import main

    sheet = tmp_path / "sheet.png"
    main(["--seed", "3", "--frames", "3", "--height", "10", "--width", "14", "--sheet", str(sheet)])
    image = iio.imread(sheet)
    assert image.shape == (2 * 10, 3 * 14, 3) and image.dtype == "uint8"
    clip = synthetic_clip(3, num_frames=3, height=10, width=14)
    expected_top = (torch.cat(list(clip.frames), dim=1) * 255).round().to(torch.uint8).numpy()
    assert (image[:10] == expected_top).all()
    assert clip.caption in capsys.readouterr().out


@pytest.mark.parametrize("seed", [3, 40, 517])
def test_orbit_clips_sweep_the_fixed_half_orbit_counter_clockwise(seed):
    scene, cams = synthetic_scene_and_cameras(seed, 13, 16, 16, "orbit")
    eyes = cams.camera_to_world[:, :3, 3].double()
    centre = torch.tensor(scene.reference_view.center, dtype=torch.float64)
    offsets = eyes - centre
    azimuths = torch.atan2(offsets[:, 1], offsets[:, 0])
    steps = torch.remainder(azimuths[1:] - azimuths[:-1], 2 * math.pi)  # counter-clockwise increments
    expected = math.radians(ORBIT_ARC_DEG) / 12
    assert torch.allclose(steps, torch.full_like(steps, expected), atol=1e-5)
    assert ORBIT_ARC_DEG == 180.0
    # the first camera is the caption's reference view
    reference = scene.reference_view.cameras(16, 16).camera_to_world[0, :3, 3].double()
    assert torch.allclose(eyes[0], reference, atol=1e-5)
