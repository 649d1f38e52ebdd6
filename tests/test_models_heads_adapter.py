"""AnySplat post-processing: activations, voxel merging, depth unprojection, scene conversion."""

from __future__ import annotations

import math

import pytest
import torch

from engine.models.gaussian_adapter import (
    GaussianAdapter,
    gaussian_head_output_dim,
    gaussians_from_raw,
    sh_mask,
    unproject_depth_official,
    voxel_merge,
)


def _raw_features(count: int, sh_degree: int) -> torch.Tensor:
    """(count, 1 + 3 + 4 + 3*d_sh) zeros with a valid quaternion (identity, xyzw)."""
    raw = torch.zeros(count, gaussian_head_output_dim(sh_degree) - 1)
    raw[:, 7] = 1.0
    return raw


# -- activations ------------------------------------------------------------------------------------


def test_channel_counts():
    assert gaussian_head_output_dim(4) == 84
    assert gaussian_head_output_dim(0) == 12
    assert GaussianAdapter(4).num_raw_features == 83


def test_sh_mask_values():
    mask = sh_mask(2)
    assert mask.tolist() == pytest.approx([1.0] + [0.025] * 3 + [0.1 * 0.25**2] * 5)


def test_adapter_activations_on_hand_made_inputs():
    raw = _raw_features(3, sh_degree=1)
    raw[0, 0] = 0.0  # density -> opacity 0.5
    raw[1, 0] = math.log(3.0)  # sigmoid = 0.75
    raw[2, 0] = -math.log(3.0)  # sigmoid = 0.25
    raw[0, 1:4] = torch.tensor([0.0, 100.0, 1000.0])  # 0.001*ln2, 0.1, clamped to 0.3
    raw[1, 4:8] = torch.tensor([0.0, 0.0, 0.0, 2.0])  # xyzw, normalised to identity
    raw[2, 4:8] = torch.tensor([0.0, 0.0, 3.0, 3.0])  # 90 degrees about z
    raw[:, 8:20] = 1.0  # 3 colours x 4 coefficients
    means = torch.arange(9.0).view(3, 3)

    g = GaussianAdapter(sh_degree=1)(means, raw)

    assert g.opacities.tolist() == pytest.approx([0.5, 0.75, 0.25], abs=1e-6)
    assert torch.equal(g.opacity_logits, raw[:, 0])
    assert g.scales[0].tolist() == pytest.approx([0.001 * math.log(2.0), 0.1, 0.3], rel=1e-5)
    assert g.rotations_xyzw[1].tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0], abs=1e-7)
    assert g.rotations_wxyz[1].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-7)
    s = math.sqrt(0.5)
    assert g.rotations_wxyz[2].tolist() == pytest.approx([s, 0.0, 0.0, s], abs=1e-6)
    assert g.harmonics.shape == (3, 3, 4)
    assert g.harmonics[0, 0].tolist() == pytest.approx([1.0, 0.025, 0.025, 0.025])
    assert torch.equal(g.means, means)
    assert g.valid.all()

    # Covariance = R diag(s^2) R^T: identity rotation keeps the diagonal, 90 deg about z swaps x and y.
    s0 = 0.001 * math.log(2.0)
    assert torch.allclose(g.covariances[1], torch.diag(torch.tensor([s0, s0, s0]) ** 2))
    scaled = raw.clone()
    scaled[2, 1:4] = torch.tensor([0.0, 100.0, 1000.0])
    cov = GaussianAdapter(sh_degree=1)(means, scaled).covariances[2]
    assert torch.allclose(cov, torch.diag(torch.tensor([0.1, s0, 0.3]) ** 2), atol=1e-9)


def test_adapter_rejects_a_wrong_channel_count():
    with pytest.raises(ValueError, match="channels for SH degree 4"):
        GaussianAdapter(4)(torch.zeros(2, 3), torch.zeros(2, 20))


# -- voxel merging ----------------------------------------------------------------------------------


def test_points_in_one_voxel_merge_to_the_confidence_weighted_mean():
    points = torch.tensor([[0.10, 0.20, 0.30], [0.12, 0.22, 0.28], [0.14, 0.18, 0.33]])
    features = torch.tensor([[1.0, -2.0], [3.0, 0.0], [5.0, 4.0]])
    conf = torch.tensor([0.0, 1.0, 2.0])
    merged_points, merged_features = voxel_merge(points, features, conf, voxel_size=1.0)
    weights = torch.softmax(conf, dim=0)[:, None]
    assert merged_points.shape == (1, 3) and merged_features.shape == (1, 2)
    # The official denominator has +1e-6, hence the tolerance.
    assert torch.allclose(merged_points[0], (weights * points).sum(0), atol=1e-6)
    assert torch.allclose(merged_features[0], (weights * features).sum(0), atol=1e-5)


def test_far_apart_points_stay_separate_in_sorted_voxel_order():
    points = torch.tensor([[5.0, 0.0, 0.0], [-5.0, 1.0, 0.0]])
    features = torch.tensor([[1.0], [2.0]])
    merged_points, merged_features = voxel_merge(points, features, torch.tensor([3.0, -3.0]), voxel_size=0.01)
    # torch.unique sorts voxel ids lexicographically, so x = -5 comes first.
    assert torch.allclose(merged_points, points.flip(0), atol=1e-5)
    assert torch.allclose(merged_features, features.flip(0), atol=1e-5)


def test_voxel_ids_round_to_the_nearest_multiple_of_the_voxel_size():
    # 0.9 and 1.4 both round to voxel 1 (size 1); 1.6 rounds to 2.
    points = torch.tensor([[0.9, 0.0, 0.0], [1.4, 0.0, 0.0], [1.6, 0.0, 0.0]])
    merged_points, _ = voxel_merge(points, torch.zeros(3, 1), torch.zeros(3), voxel_size=1.0)
    assert merged_points.shape == (2, 3)
    assert merged_points[:, 0].tolist() == pytest.approx([1.15, 1.6], abs=1e-5)


def test_merging_off_keeps_one_gaussian_per_pixel_in_view_row_column_order():
    batch, views, height, width, degree = 2, 2, 3, 4, 1
    channels = gaussian_head_output_dim(degree)
    raw = torch.randn(batch, views, channels, height, width)
    points = torch.randn(batch, views, height, width, 3)
    g = gaussians_from_raw(raw, points, sh_degree=degree, voxel_size=None)
    assert g.means.shape == (batch, views * height * width, 3)
    assert torch.equal(g.means, points.reshape(batch, -1, 3))
    # Pixel (view 1, row 2, column 3) of element 1 is the last Gaussian.
    assert torch.equal(g.opacity_logits[1, -1], raw[1, 1, 0, 2, 3])
    assert g.valid.all()


def test_merging_pads_shorter_batch_elements_like_upstream():
    degree = 0
    raw = torch.randn(2, 1, gaussian_head_output_dim(degree), 2, 2)
    points = torch.zeros(2, 1, 2, 2, 3)
    points[1, 0, :, :, 0] = torch.tensor([[0.0, 10.0], [20.0, 30.0]])  # element 1: 4 separate voxels
    g = gaussians_from_raw(raw, points, sh_degree=degree, voxel_size=1.0)
    assert g.means.shape == (2, 4, 3)
    assert g.valid.tolist() == [[True, False, False, False], [True, True, True, True]]
    assert (g.opacities[0, 1:] == 0).all()  # padded with density -1e10
    assert (g.means[0, 1:] == -1e4).all()
    scene = g.to_scene(batch_index=0)
    assert len(scene) == 1


# -- unprojection -----------------------------------------------------------------------------------


def _camera(height, width, focal, rotation, translation):
    extrinsic = torch.cat([rotation, translation.view(3, 1)], dim=1).view(1, 1, 3, 4)
    intrinsic = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    return extrinsic, intrinsic


def test_unprojection_with_identity_camera_uses_integer_pixel_indices():
    height, width = 4, 6
    depth = torch.full((1, 1, height, width, 1), 4.0)
    extrinsic, intrinsic = _camera(height, width, 2.0, torch.eye(3), torch.zeros(3))
    points = unproject_depth_official(depth, extrinsic, intrinsic)
    assert points.shape == (1, 1, height, width, 3)
    # Pixel index (u=3, v=2) sits exactly on the principal point (W/2, H/2).
    assert points[0, 0, 2, 3].tolist() == pytest.approx([0.0, 0.0, 4.0])
    # Pixel (u=0, v=0): x = (0 - 3) * 4 / 2, y = (0 - 2) * 4 / 2.
    assert points[0, 0, 0, 0].tolist() == pytest.approx([-6.0, -4.0, 4.0])


def test_unprojection_inverts_a_rotated_translated_world_to_camera_pose():
    height, width = 2, 2
    # World-to-camera rotation about y: world x becomes camera z, world z becomes camera -x.
    rotation = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    translation = torch.tensor([1.0, 2.0, 3.0])
    extrinsic, intrinsic = _camera(height, width, 1.0, rotation, translation)
    depth = torch.full((1, 1, height, width), 5.0)
    points = unproject_depth_official(depth, extrinsic, intrinsic)
    # Pixel (1, 1) is the principal point: camera point (0, 0, 5); world = R^T (x_c - t).
    camera_point = torch.tensor([0.0, 0.0, 5.0])
    expected = rotation.T @ (camera_point - translation)
    assert torch.allclose(points[0, 0, 1, 1], expected)
    # And the forward transform maps every world point back to its camera point with z = depth.
    back = points[0, 0].reshape(-1, 3) @ rotation.T + translation
    assert torch.allclose(back[:, 2], torch.full((4,), 5.0))


def test_unprojection_validates_shapes():
    with pytest.raises(ValueError, match="intrinsic must be"):
        unproject_depth_official(torch.ones(1, 2, 3, 3), torch.zeros(1, 2, 3, 4), torch.zeros(1, 1, 3, 3))


# -- conversion to the engine's scene type ----------------------------------------------------------


def test_to_scene_reorders_quaternions_logs_scales_and_truncates_sh():
    degree = 4
    raw = torch.zeros(1, 1, gaussian_head_output_dim(degree), 1, 2)
    raw[:, :, 0] = 2.0
    raw[:, :, 4:8] = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 4, 1, 1)  # xyzw
    raw[:, :, 8:83] = torch.arange(75.0).view(1, 1, 75, 1, 1)
    points = torch.randn(1, 1, 1, 2, 3)
    g = gaussians_from_raw(raw, points, sh_degree=degree)
    scene = g.to_scene()
    assert len(scene) == 2
    s = math.sqrt(0.5)
    assert scene.rotations[0].tolist() == pytest.approx([s, 0.0, s, 0.0], abs=1e-6)
    assert torch.allclose(scene.log_scales, torch.log(g.scales[0]))
    assert torch.equal(scene.opacity_logits, torch.full((2,), 2.0))
    # Degree 3 kept: (N, 16, 3), coefficient-major; colour 1's DC term is raw channel 8 + 25.
    assert scene.sh.shape == (2, 16, 3)
    assert scene.sh[0, 0].tolist() == pytest.approx([0.0, 25.0, 50.0])
    assert scene.sh[0, 1, 0].item() == pytest.approx(1.0 * 0.025)
