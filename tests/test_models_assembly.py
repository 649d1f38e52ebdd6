"""Assembled VGGT / AnySplat on tiny configs: predictions, scene conversion, conventions, input errors."""

import pytest
import torch

from engine.models.anysplat import AnySplat
from engine.models.outputs import PredictionError, rotate_sh, sh_basis, transform_gaussian_scene
from engine.models.pose_encoding import quat_to_mat
from engine.models.reconstruction import InputError
from engine.models.vggt import VGGT
from engine.scene import Cameras, GaussianScene
from engine.testing.tiny import tiny_anysplat_config, tiny_vggt_config

VIEWS, HEIGHT, WIDTH = 3, 28, 42


def _camera_like_init(model):
    """Untrained heads predict fields of view ~0; bias them like a trained model (fov ~1 rad, w ~1)."""
    head = model.camera_head if isinstance(model, VGGT) else model.encoder.camera_head
    with torch.no_grad():
        head.pose_branch.fc2.bias[6] += 1.0
        head.pose_branch.fc2.bias[7:9] += 0.6
    return model


@pytest.fixture(scope="module")
def vggt():
    torch.manual_seed(0)
    return _camera_like_init(VGGT(tiny_vggt_config())).eval()


@pytest.fixture(scope="module")
def anysplat():
    torch.manual_seed(0)
    return _camera_like_init(AnySplat(tiny_anysplat_config())).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(VIEWS, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def vggt_pred(vggt, images):
    return vggt.predict(images)


@pytest.fixture(scope="module")
def anysplat_pred(anysplat, images):
    return anysplat.predict(images)


def test_vggt_prediction_shapes(vggt_pred):
    p = vggt_pred
    assert p.pose_enc.shape == (1, VIEWS, 9) and len(p.pose_enc_list) == 2
    assert p.depth.shape == (1, VIEWS, HEIGHT, WIDTH, 1) and (p.depth > 0).all()
    assert p.depth_conf.shape == (1, VIEWS, HEIGHT, WIDTH) and (p.depth_conf > 1).all()
    assert p.world_points.shape == (1, VIEWS, HEIGHT, WIDTH, 3)
    assert p.world_points_conf.shape == (1, VIEWS, HEIGHT, WIDTH)
    assert not p.depth.requires_grad


def test_batched_input_matches_single(vggt, images):
    both = vggt.predict(torch.stack([images, images.flip(0)]))
    single = vggt.predict(images)
    assert both.depth.shape[0] == 2
    assert torch.allclose(both.depth[0], single.depth[0], atol=1e-5)
    assert torch.allclose(both.pose_enc[0], single.pose_enc[0], atol=1e-5)


def test_prediction_is_deterministic(anysplat, images, anysplat_pred):
    again = anysplat.predict(images)
    assert torch.equal(again.gaussian_raw, anysplat_pred.gaussian_raw)
    assert torch.equal(again.pose_enc, anysplat_pred.pose_enc)


def test_first_camera_is_the_world_frame(vggt_pred, anysplat_pred):
    for pred in (vggt_pred, anysplat_pred):
        cams = pred.cameras()
        assert torch.equal(cams.camera_to_world[0], torch.eye(4))
        raw = pred.cameras(relative_to_first=False)
        assert not torch.allclose(raw.camera_to_world[0], torch.eye(4), atol=1e-3)  # learned, not forced
        # Relative cameras = world_to_camera[0] @ raw cameras.
        expected = raw.world_to_camera[0] @ raw.camera_to_world
        assert torch.allclose(cams.camera_to_world, expected, atol=1e-5)
        assert torch.equal(cams.intrinsics, raw.intrinsics)
        assert (cams.width, cams.height) == (WIDTH, HEIGHT)
        assert torch.allclose(cams.cx, torch.full((VIEWS,), WIDTH / 2))


def test_anysplat_and_vggt_intrinsics_differ_by_the_tangent_epsilon(vggt_pred):
    from engine.models.outputs import AnySplatPrediction

    fov_w = vggt_pred.pose_enc[0, :, 8]
    as_anysplat = AnySplatPrediction(
        vggt_pred.pose_enc, [], vggt_pred.depth, vggt_pred.depth_conf, vggt_pred.world_points, None, vggt_pred.images, 4
    )
    assert torch.allclose(vggt_pred.cameras().fx, (WIDTH / 2) / torch.tan(fov_w / 2))
    assert torch.allclose(as_anysplat.cameras().fx, (WIDTH / 2) / (torch.tan(fov_w / 2) + 1e-3))


def test_gaussian_count_and_layout_without_merging(anysplat_pred):
    scene = anysplat_pred.gaussian_scene()
    assert isinstance(scene, GaussianScene)
    assert len(scene) == VIEWS * HEIGHT * WIDTH
    assert scene.sh_degree == 3  # degree 4 predicted, truncated for GaussianScene
    raw = anysplat_pred.gaussians()
    assert raw.harmonics.shape == (1, VIEWS * HEIGHT * WIDTH, 3, 25)
    network = anysplat_pred.gaussian_scene(relative_to_first=False)
    assert torch.equal(network.sh, raw.harmonics[0, :, :, :16].transpose(1, 2))
    assert torch.equal(network.means, anysplat_pred.points.reshape(-1, 3))


def test_voxel_merging_reduces_the_count(anysplat_pred):
    merged = anysplat_pred.gaussian_scene(voxel_size=0.5)
    assert 0 < len(merged) < VIEWS * HEIGHT * WIDTH


def test_gaussian_means_are_the_depth_unprojected_with_the_predicted_cameras(anysplat_pred):
    """Official convention: pixel (u, v) at integer coordinates = engine cameras with principal point + 0.5."""
    for relative in (True, False):
        cams = anysplat_pred.cameras(relative_to_first=relative)
        shifted = cams.intrinsics.clone()
        shifted[:, :2, 2] += 0.5
        unprojected = Cameras(cams.camera_to_world, shifted, WIDTH, HEIGHT).unproject_depth(
            anysplat_pred.depth[0, ..., 0]
        )
        means = anysplat_pred.gaussian_scene(relative_to_first=relative).means
        assert torch.allclose(unprojected.reshape(-1, 3), means, atol=1e-4)


def test_vggt_depth_points_land_on_the_predicted_cameras(vggt_pred):
    cams = vggt_pred.cameras()
    shifted = cams.intrinsics.clone()
    shifted[:, :2, 2] += 0.5
    expected = Cameras(cams.camera_to_world, shifted, WIDTH, HEIGHT).unproject_depth(vggt_pred.depth[0, ..., 0])
    scene = vggt_pred.point_scene(source="depth")
    assert torch.allclose(scene.points, expected.reshape(-1, 3), atol=1e-4)
    assert torch.equal(scene.colors, vggt_pred.images[0].permute(0, 2, 3, 1).reshape(-1, 3))
    head_points = vggt_pred.point_scene(source="points", relative_to_first=False)
    assert torch.equal(head_points.points, vggt_pred.world_points.reshape(-1, 3))
    confident = vggt_pred.point_scene(min_confidence=float(vggt_pred.world_points_conf.median()))
    assert 0 < len(confident) < len(head_points)


def _float64(cameras: Cameras) -> Cameras:
    return Cameras(cameras.camera_to_world.double(), cameras.intrinsics.double(), cameras.width, cameras.height)


def test_relative_frame_keeps_every_projection(anysplat_pred):
    """Same pixels and depths in both frames, up to the float32 rounding of the re-expressed scene.

    The projections are computed in float64; the tolerance is the float32 error of the inputs carried
    through the projection: a means error of k·eps·|p| moves a pixel by about f·k·eps·|p|·(1/|z| + |p|/z²)
    and a depth by k·eps·|p|, so points close to a camera plane get proportionally wider bounds.
    """
    rel_cams, raw_cams = anysplat_pred.cameras(), anysplat_pred.cameras(relative_to_first=False)
    rel_means = anysplat_pred.gaussian_scene().means[::37].double()
    raw_means = anysplat_pred.gaussian_scene(relative_to_first=False).means[::37].double()
    pix_rel, depth_rel = _float64(rel_cams).project(rel_means)
    pix_raw, depth_raw = _float64(raw_cams).project(raw_means)
    eps = 64 * torch.finfo(torch.float32).eps
    # (V, N): magnitude of the point and of the camera centre, whose float32 rounding both carry over
    size = raw_means.norm(dim=-1)[None] + raw_cams.camera_to_world[:, :3, 3].double().norm(dim=-1)[:, None]
    focal = raw_cams.intrinsics[:, :2, :2].diagonal(dim1=-2, dim2=-1).abs().max(-1).values.double()[:, None]
    z = depth_raw.abs()
    pixel_tol = eps * focal * size * (1 / z + size / z**2) + 1e-6
    depth_tol = eps * (size + depth_raw.abs()) + 1e-9
    assert ((pix_rel - pix_raw).abs().amax(-1) <= pixel_tol).all()
    assert ((depth_rel - depth_raw).abs() <= depth_tol).all()


def test_sh_rotation_rotates_the_colour_function():
    generator = torch.Generator().manual_seed(0)
    sh = torch.randn(5, 16, 3, generator=generator, dtype=torch.float64)
    rotation = quat_to_mat(torch.randn(4, generator=generator, dtype=torch.float64))
    dirs = torch.nn.functional.normalize(torch.randn(20, 3, generator=generator, dtype=torch.float64), dim=-1)
    rotated = rotate_sh(sh, rotation)
    before = torch.einsum("dk,nkc->ndc", sh_basis(dirs, 3), sh)
    after = torch.einsum("dk,nkc->ndc", sh_basis(dirs @ rotation.T, 3), rotated)
    assert torch.allclose(before, after, atol=1e-9)
    assert torch.equal(rotated[:, 0], sh[:, 0])


def test_transform_gaussian_scene_moves_means_and_orientations():
    generator = torch.Generator().manual_seed(1)
    scene = GaussianScene(
        means=torch.randn(4, 3, generator=generator),
        rotations=torch.nn.functional.normalize(torch.randn(4, 4, generator=generator), dim=-1),
        log_scales=torch.randn(4, 3, generator=generator),
        opacity_logits=torch.randn(4, generator=generator),
        sh=torch.randn(4, 4, 3, generator=generator),
    )
    transform = torch.eye(4)
    transform[:3, :3] = quat_to_mat(torch.tensor([0.2, -0.4, 0.1, 0.9]))
    transform[:3, 3] = torch.tensor([1.0, 2.0, -3.0])
    moved = transform_gaussian_scene(scene, transform)
    assert torch.allclose(moved.means, scene.means @ transform[:3, :3].T + transform[:3, 3], atol=1e-6)

    def rotation_matrix(wxyz):
        return quat_to_mat(wxyz.roll(-1, dims=-1))

    assert torch.allclose(
        rotation_matrix(moved.rotations), transform[:3, :3] @ rotation_matrix(scene.rotations), atol=1e-5
    )
    assert torch.equal(moved.log_scales, scene.log_scales)


def test_forward_from_matches_predict(anysplat, images, anysplat_pred):
    tokens = anysplat.trace(images, ["patch_embed.blocks.1"])["patch_embed.blocks.1"]
    with torch.no_grad():
        again = anysplat.forward_from("patch_embed.blocks.1", tokens, images)
    assert torch.allclose(again.gaussian_raw, anysplat_pred.gaussian_raw, atol=1e-4)
    assert torch.allclose(again.depth, anysplat_pred.depth, atol=1e-5)


def test_set_gradient_checkpointing_by_name(anysplat):
    names = anysplat.set_gradient_checkpointing(True, ["encoder.aggregator.frame_blocks.1"])
    try:
        assert names == ["encoder.aggregator.frame_blocks.1"]
        assert anysplat.encoder.aggregator.frame_blocks[1].gradient_checkpointing
        assert not anysplat.encoder.aggregator.frame_blocks[0].gradient_checkpointing
        with pytest.raises(KeyError):
            anysplat.set_gradient_checkpointing(True, ["encoder.depth_head"])
    finally:
        anysplat.set_gradient_checkpointing(False)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(3, 3, 30, 42), "multiple of the patch size 14"),
        (torch.rand(1, 3, 28, 42), "at least 2 views"),
        (torch.rand(3, 3, 28, 42) * 255, "must be in \\[0, 1\\]"),
        (torch.rand(3, 4, 28, 42), "RGB"),
        (torch.randint(0, 255, (3, 3, 28, 42)), "floating-point"),
    ],
)
def test_input_contract_errors(anysplat, bad, message):
    with pytest.raises(InputError, match=message):
        anysplat.predict(bad)


def test_degenerate_cameras_are_reported(images):
    torch.manual_seed(0)
    model = VGGT(tiny_vggt_config()).eval()
    with torch.no_grad():
        model.camera_head.pose_branch.fc2.bias[7:9] = -100.0  # ReLU -> fov 0 -> infinite focal length
    with pytest.raises(PredictionError, match="degenerate cameras"):
        model.predict(images).cameras()
