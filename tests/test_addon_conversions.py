"""The add-on's numbers-only conversions (addon/conversions.py needs no Blender, so no subprocess here)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "vist3a_addon_conversions", Path(__file__).resolve().parents[1] / "addon" / "conversions.py"
)
conversions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conversions)


def test_dc_colour_is_clamped_display_rgb():
    f_dc = np.array([[10.0, -10.0, 0.0]])  # 0.5 + C0 * f_dc = (3.3, -2.3, 0.5)
    np.testing.assert_allclose(conversions.dc_to_display_rgb(f_dc), [[1.0, 0.0, 0.5]], rtol=1e-6)


def test_zero_quaternion_becomes_identity_and_others_unit():
    q = conversions.normalized_quaternions(np.array([[0.0, 0, 0, 0], [2.0, 0, 0, 0], [1.0, 1, 1, 1]]))
    np.testing.assert_allclose(q, [[1, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]])


@pytest.mark.parametrize(("fx", "fy", "aspect"), [(100.0, 120.0, (1.2, 1.0)), (120.0, 100.0, (1.0, 1.2))])
def test_camera_settings_keep_pixel_aspects_at_least_one(fx, fy, aspect):
    s = conversions.opencv_camera_to_blender(np.eye(4), fx, fy, 30.0, 20.0, 64, 48)
    assert (s.pixel_aspect_x, s.pixel_aspect_y) == pytest.approx(aspect)
    assert s.lens == pytest.approx(fx * 36.0 / 64)
    assert s.shift_x == pytest.approx((32 - 30) / 64)
    np.testing.assert_array_equal(s.matrix_world, np.diag([1.0, -1.0, -1.0, 1.0]))


def test_bad_camera_values_are_rejected_with_their_names():
    with pytest.raises(ValueError, match="focal"):
        conversions.opencv_camera_to_blender(np.eye(4), 0.0, 1.0, 1.0, 1.0, 4, 4)
    with pytest.raises(ValueError, match="image size"):
        conversions.opencv_camera_to_blender(np.eye(4), 1.0, 1.0, 1.0, 1.0, 0, 4)


def test_ray_footprint_is_the_projected_gaussian_for_parallel_rays():
    # Orthographic view along z: the peak along the ray equals the marginal 2D Gaussian of the
    # (dilated) covariance in the xy-plane, for any rotation and anisotropy.
    rng = np.random.default_rng(3)
    n = 200
    rot = rng.normal(size=(n, 4))
    scales = np.exp(rng.uniform(-3, 0, size=(n, 3)))
    axes = conversions.quaternions_to_matrices(conversions.normalized_quaternions(rot))
    np.testing.assert_allclose(np.einsum("nji,njk->nik", axes, axes), np.broadcast_to(np.eye(3), (n, 3, 3)), atol=1e-12)
    dilation = 0.01
    covariance = np.einsum("nij,nj,nkj->nik", axes, scales**2, axes) + dilation * np.eye(3)
    offsets = rng.normal(size=(n, 3)) * 0.3  # centre -> a point of the ray
    expected = np.exp(
        -0.5 * np.einsum("ni,nij,nj->n", offsets[:, :2], np.linalg.inv(covariance[:, :2, :2]), offsets[:, :2])
    )
    directions = np.tile([0.0, 0.0, 2.0], (n, 1))
    alpha = conversions.ray_footprint_alpha(offsets, directions, axes, scales, np.ones(n), dilation)
    np.testing.assert_allclose(alpha, expected, rtol=1e-9, atol=1e-12)
    # Any point of the same ray gives the same value; the opacity scales it.
    moved = offsets + directions * rng.normal(size=(n, 1))
    np.testing.assert_allclose(
        conversions.ray_footprint_alpha(moved, directions, axes, scales, 0.5, dilation),
        0.5 * expected,
        rtol=1e-9,
        atol=1e-12,
    )


def test_sphere_layers_along_camera_rays():
    camera = np.eye(4)  # OpenCV: looking along +z
    # Ten spheres in a row along the optical axis, two off to the side, one behind the camera.
    centres = np.concatenate(
        [[[0.0, 0.0, 2.0 + i] for i in range(10)], [[5.0, 0.0, 3.0], [-5.0, 0.0, 3.0]], [[0.0, 0.0, -3.0]]]
    )
    radii = np.full(len(centres), 0.2)
    layers = conversions.max_spheres_along_ray(centres, radii, camera, 50.0, 50.0, 32.0, 32.0, 64, 64)
    assert layers == 10
    # A sphere around the camera is crossed by every ray.
    layers = conversions.max_spheres_along_ray(
        np.vstack([centres, [[0.0, 0.0, 0.1]]]), np.append(radii, 1.0), camera, 50.0, 50.0, 32.0, 32.0, 64, 64
    )
    assert layers == 11
    # Turned away, the camera sees none of the row.
    back = np.diag([-1.0, 1.0, -1.0, 1.0])
    assert conversions.max_spheres_along_ray(centres[:10], radii[:10], back, 50.0, 50.0, 32.0, 32.0, 64, 64) == 0
    assert conversions.max_spheres_along_axes(centres[:10], radii[:10]) == 10


def test_quaternion_matrices_agree_with_the_engine_geometry():
    import torch

    from engine.geometry.rotations import quaternion_to_matrix

    q = conversions.normalized_quaternions(np.random.default_rng(4).normal(size=(64, 4)))
    ours = conversions.quaternions_to_matrices(q)
    engine = quaternion_to_matrix(torch.from_numpy(q)).numpy()
    np.testing.assert_allclose(ours, engine, atol=1e-12)
    np.testing.assert_allclose(ours @ ours.transpose(0, 2, 1), np.broadcast_to(np.eye(3), ours.shape), atol=1e-12)
