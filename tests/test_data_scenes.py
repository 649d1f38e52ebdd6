"""Procedural scenes: Gaussians from primitives, layouts, captions and seeding."""

import math

import numpy as np
import pytest
import torch

from engine.data import primitives
from engine.data.scenes import (
    ReferenceView,
    SceneObject,
    build_scene,
    describe_layout,
    generate_scene,
)
from engine.geometry.rotations import matrix_to_quaternion
from engine.scene import GaussianScene

SHAPE_NAMES = primitives.SHAPES


def quaternion_to_matrix(q):
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def scene_tensors(scene):
    g = scene.gaussians
    return [g.means, g.rotations, g.log_scales, g.opacity_logits, g.sh]


def test_same_seed_gives_identical_scene_and_caption():
    a, b = generate_scene(11), generate_scene(11)
    assert a.caption == b.caption
    assert a.objects == b.objects and a.reference_view == b.reference_view
    for ta, tb in zip(scene_tensors(a), scene_tensors(b)):
        assert torch.equal(ta, tb)


def test_different_seeds_give_different_scenes():
    scenes = [generate_scene(seed) for seed in range(6)]
    assert len({s.caption for s in scenes}) == 6
    assert len({s.objects for s in scenes}) == 6
    means = [s.gaussians.means for s in scenes]
    assert all(m.shape != means[0].shape or not torch.equal(m, means[0]) for m in means[1:])


def test_generated_scene_is_a_moderate_valid_gaussian_scene():
    for seed in range(5):
        scene = generate_scene(seed)
        g = scene.gaussians
        assert isinstance(g, GaussianScene) and g.sh_degree == 0 and g.dtype == torch.float32
        assert 1000 <= len(g) <= 5000
        assert 2 <= len(scene.objects) <= 4
        assert len(scene.relations) == len(scene.objects) - 1
        colors = g.base_colors()
        assert colors.min() >= 0 and colors.max() <= 1
        assert (g.opacities > 0.9).all()
        # Flat Gaussians: the thinnest axis is much thinner than the widest.
        scales = g.scales
        assert (scales.min(dim=1).values < 0.2 * scales.max(dim=1).values).all()
        # Everything lies on or above the floor, within it.
        assert g.means[:, 2].min() >= -1e-6
        assert g.means[:, :2].abs().max() <= scene.floor_half_size


def test_caption_names_every_object_and_the_floor():
    for seed in range(8):
        scene = generate_scene(seed)
        for obj in scene.objects:
            assert f"{obj.color_name} {obj.shape}" in scene.caption
        assert scene.caption.endswith(f"on a {scene.floor_color_name} floor under a {scene.sky_color_name} sky")


def reference(azimuth_deg):
    return ReferenceView(center=(0.0, 0.0, 0.3), distance=4.0, elevation_deg=20.0, azimuth_deg=azimuth_deg)


def test_caption_left_right_follows_positions_in_the_reference_view():
    # A camera at azimuth 0 sits on +x looking towards -x, so image right is world +y.
    red_cube = SceneObject("cube", "red", (0.0, -1.0), 0.3)
    blue_sphere = SceneObject("sphere", "blue", (0.0, 1.0), 0.3)
    caption, relations = describe_layout([blue_sphere, red_cube], "grey", reference(0.0))
    assert caption == "a red cube to the left of a blue sphere on a grey floor"
    assert (relations[0].subject, relations[0].relation, relations[0].anchor) == (1, "to the left of", 0)
    # Seen from the other side the same layout reads the other way round.
    caption, _ = describe_layout([blue_sphere, red_cube], "grey", reference(180.0))
    assert caption == "a red cube to the right of a blue sphere on a grey floor"


def test_caption_front_behind_and_several_objects():
    near = SceneObject("cone", "orange", (1.0, 0.0), 0.3)  # closer to a camera on +x
    far = SceneObject("torus", "green", (-1.0, 0.1), 0.3)
    side = SceneObject("cylinder", "white", (-1.0, 1.5), 0.3)
    caption, relations = describe_layout([far, near, side], "beige", reference(0.0))
    assert caption == (
        "an orange cone in front of a green torus and a white cylinder to the right of the green torus, on a beige floor"
    )
    assert [r.anchor for r in relations] == [0, 0]
    assert describe_layout([near], "brown", reference(0.0))[0] == "an orange cone on a brown floor"


def test_generated_relations_match_projected_positions():
    """Every stated relation agrees with where the objects appear in the reference camera."""
    for seed in range(12):
        scene = generate_scene(seed)
        cams = scene.reference_view.cameras(64, 64)
        centers = torch.tensor(np.stack([o.center for o in scene.objects]), dtype=torch.float32)
        pixels, depth = cams.project(centers)
        u, z = pixels[0, :, 0], depth[0]
        for rel in scene.relations:
            s, a = rel.subject, rel.anchor
            assert rel.clarity >= 1.5
            if rel.relation == "to the left of":
                assert u[s] < u[a]
            elif rel.relation == "to the right of":
                assert u[s] > u[a]
            elif rel.relation == "in front of":
                assert z[s] < z[a]
            else:
                assert rel.relation == "behind" and z[s] > z[a]


def test_generated_objects_do_not_overlap_even_when_crowded():
    for seed in range(30):
        objects = generate_scene(seed, num_objects=4).objects
        assert len(objects) == 4
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                gap = np.linalg.norm(np.subtract(a.position, b.position))
                assert gap > a.footprint_radius + b.footprint_radius


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_primitive_gaussians_lie_on_the_surface_with_outward_normals(shape):
    obj = SceneObject(shape, "red", (0.5, -0.25), 0.4, yaw_deg=30.0)
    scene = build_scene([obj], "grey", reference(0.0), surface_spacing=0.05)
    g = scene.gaussians
    on_object = g.means[:, 2] > 1e-4
    means = g.means[on_object].double()
    local = means - torch.tensor([0.5, -0.25, 0.0], dtype=torch.float64)
    radial = torch.linalg.vector_norm(local[:, :2], dim=1)
    if shape == "sphere":
        assert torch.allclose(
            torch.linalg.vector_norm(local - torch.tensor([0, 0, 0.4]), dim=1), torch.tensor(0.4).double(), atol=1e-5
        )
    elif shape == "torus":
        tube = torch.stack([radial - 0.4, local[:, 2] - 0.16], dim=1)
        assert torch.allclose(torch.linalg.vector_norm(tube, dim=1), torch.tensor(0.16).double(), atol=1e-5)
    elif shape == "cylinder":  # radius 0.8 * size, height 2 * size: wall or top cap
        on_wall = (radial - 0.32).abs() < 1e-5
        on_cap = ((local[:, 2] - 0.8).abs() < 1e-5) & (radial <= 0.32)
        assert (on_wall | on_cap).all() and on_wall.any() and on_cap.any()
    elif shape == "cone":  # radius = size at the base, shrinking linearly to the apex at 2.2 * size
        assert torch.allclose(radial, 0.4 * (1 - local[:, 2] / 0.88), atol=1e-5)
    elif shape == "cube":
        # Every point is on the boundary of the cube: max-norm (in the cube's turned frame) is the half edge.
        c, s = math.cos(math.radians(-30.0)), math.sin(math.radians(-30.0))
        xy = torch.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1]], 1)
        box = torch.cat([xy, (local[:, 2:] - 0.4)], 1).abs().max(dim=1).values
        assert torch.allclose(box, torch.tensor(0.4).double(), atol=1e-5)
    assert local[:, 2].max() <= obj.height + 1e-5
    assert radial.max() <= obj.footprint_radius + 1e-5
    # The Gaussians' third axis is the normal: it points away from an interior point (the middle of the
    # axis; for the torus the nearest point of the tube's centre circle).
    normals = quaternion_to_matrix(g.unit_rotations[on_object].double())[:, :, 2]
    interior = torch.tensor([0.0, 0.0, obj.height / 2], dtype=torch.float64).expand_as(local).clone()
    if shape == "torus":
        interior[:, :2] = 0.4 * local[:, :2] / radial[:, None]
    assert ((local - interior) * normals).sum(dim=1).min() > -1e-6
    assert torch.allclose(torch.linalg.vector_norm(normals, dim=1), torch.ones(len(normals)).double(), atol=1e-5)


def test_quaternions_reproduce_the_sample_frames():
    samples = primitives.SurfaceSamples.concatenate(
        [primitives.sphere(0.5, 0.1), primitives.torus(0.5, 0.2, 0.1), primitives.cube(0.3, 0.1)]
    )
    matrices = samples.rotation_matrices()
    quaternions = matrix_to_quaternion(torch.from_numpy(matrices)).numpy()
    assert (quaternions[:, 0] >= 0).all()
    assert np.allclose(quaternion_to_matrix(torch.from_numpy(quaternions)).numpy(), matrices, atol=1e-9)


def test_surface_spacing_controls_the_gaussian_count():
    obj = SceneObject("sphere", "blue", (0.0, 0.0), 0.4)
    coarse = build_scene([obj], "grey", reference(0.0), surface_spacing=0.1, floor_spacing=0.5)
    fine = build_scene([obj], "grey", reference(0.0), surface_spacing=0.05, floor_spacing=0.5)
    floor = (2 * 3.5 / 0.5) ** 2
    assert math.isclose((len(fine.gaussians) - floor) / (len(coarse.gaussians) - floor), 4.0, rel_tol=0.05)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SceneObject("pyramid", "red", (0, 0), 0.3), "shape"),
        (lambda: SceneObject("cube", "teal", (0, 0), 0.3), "color_name"),
        (lambda: SceneObject("cube", "red", (0, 0), -1.0), "size"),
        (lambda: generate_scene(-1), "seed"),
        (lambda: generate_scene(0, num_objects=9), "num_objects"),
        (
            lambda: describe_layout(
                [SceneObject("cube", "red", (0, 0), 0.3), SceneObject("cone", "red", (1, 0), 0.3)], "grey", reference(0)
            ),
            "distinct",
        ),
        (lambda: describe_layout([SceneObject("cube", "red", (0, 0), 0.3)], "pink", reference(0)), "floor_color_name"),
    ],
)
def test_bad_layouts_are_rejected_with_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
