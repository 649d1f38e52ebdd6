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


def test_srgb_decoding_hits_the_standard_curve():
    values = conversions.srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0]))
    np.testing.assert_allclose(values, [0.0, 0.04045 / 12.92, 0.21404114, 1.0], rtol=1e-6)


def test_dc_colour_is_clamped_before_decoding():
    f_dc = np.array([[10.0, -10.0, 0.0]])  # 0.5 + C0 * f_dc = (3.3, -2.3, 0.5)
    np.testing.assert_allclose(conversions.dc_to_linear_rgb(f_dc), [[1.0, 0.0, 0.21404114]], rtol=1e-6)


def test_sphere_sigma_keeps_flat_splats_visible():
    scales = np.array([[0.1, 0.4, 1e-6], [0.2, 0.2, 0.2]])
    np.testing.assert_allclose(conversions.isotropic_sigma(scales), [0.2, 0.2])


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
