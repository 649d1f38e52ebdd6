"""Scene types: validation at construction and the geometry helpers."""

import math

import pytest
import torch

from engine.geometry.cameras import look_at
from engine.scene import SH_C0, Cameras, GaussianScene, PointScene, SceneValidationError, rgb_to_sh_dc, sh_dc_to_rgb


def gaussians(n=4, degree=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return GaussianScene(
        means=torch.randn(n, 3, generator=g, dtype=dtype),
        rotations=torch.randn(n, 4, generator=g, dtype=dtype),
        log_scales=torch.randn(n, 3, generator=g, dtype=dtype),
        opacity_logits=torch.randn(n, generator=g, dtype=dtype),
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_gaussian_scene_accepts_every_sh_degree(degree):
    scene = gaussians(degree=degree)
    assert scene.sh_degree == degree
    assert len(scene) == 4


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("means", torch.zeros(4, 2), r"means must have shape \(N, 3\), got \(4, 2\)"),
        ("rotations", torch.zeros(4, 3), r"rotations must have shape \(N, 4\)"),
        ("opacity_logits", torch.zeros(3), r"opacity_logits has 3 rows but means has 4"),
        ("sh", torch.zeros(4, 5, 3), r"SH coefficient count 5"),
        ("sh", torch.zeros(4, 25, 3), r"SH coefficient count 25"),
        ("log_scales", torch.zeros(4, 3, dtype=torch.int64), r"log_scales must be a floating-point tensor"),
        (
            "log_scales",
            torch.zeros(4, 3, dtype=torch.float64),
            r"log_scales is torch.float64 but means is torch.float32",
        ),
        ("means", [[0.0, 0.0, 0.0]] * 4, r"means must be a torch.Tensor, got list"),
    ],
)
def test_gaussian_scene_rejects_bad_fields(field, value, message):
    scene = gaussians()
    kwargs = {f: getattr(scene, f) for f in ("means", "rotations", "log_scales", "opacity_logits", "sh")}
    kwargs[field] = value
    with pytest.raises(SceneValidationError, match=message):
        GaussianScene(**kwargs)


def test_activated_values_round_trip():
    scales = torch.tensor([[0.1, 0.2, 0.3]])
    opac = torch.tensor([0.25])
    scene = GaussianScene.from_activated(
        torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), scales, opac, torch.zeros(1, 1, 3)
    )
    torch.testing.assert_close(scene.scales, scales)
    torch.testing.assert_close(scene.opacities, opac)
    torch.testing.assert_close(scene.log_scales, scales.log())


def test_selection_concatenation_and_sh_degree_change():
    scene = gaussians(n=5, degree=1)
    picked = scene[torch.tensor([True, False, True, False, True])]
    assert len(picked) == 3
    torch.testing.assert_close(picked.means, scene.means[[0, 2, 4]])
    joined = GaussianScene.concatenate([scene, picked])
    assert len(joined) == 8
    padded = scene.with_sh_degree(3)
    assert padded.sh.shape == (5, 16, 3)
    torch.testing.assert_close(padded.sh[:, :4], scene.sh)
    assert torch.all(padded.sh[:, 4:] == 0)
    assert scene.with_sh_degree(0).sh.shape == (5, 1, 3)
    with pytest.raises(SceneValidationError, match="mixed SH degrees"):
        GaussianScene.concatenate([scene, padded])


def test_dc_colour_conversion_inverts():
    rgb = torch.tensor([[0.0, 0.5, 1.0]])
    torch.testing.assert_close(sh_dc_to_rgb(rgb_to_sh_dc(rgb)), rgb)
    assert math.isclose(SH_C0, 0.5 / math.sqrt(math.pi), rel_tol=1e-12)


def test_point_scene_validation():
    pts = PointScene(torch.zeros(3, 3), torch.ones(3, 3), torch.ones(3))
    assert len(pts) == 3
    with pytest.raises(SceneValidationError, match=r"confidence must have shape \(N,\)"):
        PointScene(torch.zeros(3, 3), torch.ones(3, 3), torch.ones(3, 1))
    with pytest.raises(SceneValidationError, match="colors has 2 rows but points has 3"):
        PointScene(torch.zeros(3, 3), torch.ones(2, 3))


def orbit_cameras(width=64, height=48):
    eyes = torch.tensor([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [-2.0, -2.0, 0.5]])
    c2w = look_at(eyes, torch.zeros(3, 3), torch.tensor([0.0, 0.0, 1.0]))
    k = Cameras.intrinsics_from_fov(math.radians(60), width, height).expand(3, 3, 3)
    return Cameras(c2w, k, width, height)


def test_look_at_gives_rigid_opencv_frames_that_see_the_target():
    cams = orbit_cameras()
    rot = cams.camera_to_world[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(3, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(3))
    pix, depth = cams.project(torch.zeros(1, 3))
    torch.testing.assert_close(pix[:, 0], torch.tensor([[32.0, 24.0]] * 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(depth[:, 0], cams.centers.norm(dim=-1))
    # World up (+z) appears above the image centre: image y grows downwards.
    pix_up, _ = cams.project(torch.tensor([[0.0, 0.0, 0.5]]))
    assert torch.all(pix_up[:, 0, 1] < 24.0)


def test_world_to_camera_inverts_camera_to_world():
    cams = orbit_cameras()
    torch.testing.assert_close(
        cams.world_to_camera @ cams.camera_to_world, torch.eye(4).expand(3, 4, 4), atol=1e-6, rtol=0
    )


def test_unprojected_depth_projects_back_to_pixel_centres():
    cams = orbit_cameras(width=8, height=6)
    depth = torch.rand(3, 6, 8) + 1.0
    points = cams.unproject_depth(depth)
    assert points.shape == (3, 6, 8, 3)
    for v in range(3):
        pix, z = cams[v].project(points[v].reshape(-1, 3))
        vs, us = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
        expected = torch.stack([us + 0.5, vs + 0.5], -1).reshape(-1, 2)
        torch.testing.assert_close(pix[0], expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(z[0], depth[v].reshape(-1), atol=1e-5, rtol=0)
    with pytest.raises(SceneValidationError, match="depth is"):
        cams.unproject_depth(torch.ones(3, 5, 8))


def test_cameras_validation():
    with pytest.raises(SceneValidationError, match="width must be a positive int"):
        Cameras(torch.eye(4)[None], torch.eye(3)[None], 0, 10)
    with pytest.raises(SceneValidationError, match=r"intrinsics must have shape \(N, 3, 3\)"):
        Cameras(torch.eye(4)[None], torch.eye(4)[None], 10, 10)
    with pytest.raises(SceneValidationError, match="intrinsics has 2 rows but camera_to_world has 1"):
        Cameras(torch.eye(4)[None], torch.eye(3).expand(2, 3, 3), 10, 10)
    with pytest.raises(SceneValidationError, match="mixed image sizes"):
        Cameras.concatenate([orbit_cameras(64, 48), orbit_cameras(32, 32)])
