"""Numbers only: 3DGS values -> Blender attribute values, OpenCV cameras -> Blender camera settings.

Nothing here touches bpy, so every conversion can be checked with plain NumPy (and is, in
tests/test_addon_conversions.py). importer.py turns the results into Blender data.
"""

from dataclasses import dataclass

import numpy as np

SH_C0 = 0.28209479177387814

# The point-cloud approximation draws each Gaussian as a sphere of radius K * sigma; the material's
# footprint reaches exp(-0.5 * K^2) ~ 1 % at the rim, so nothing visible is cut off.
FOOTPRINT_K = 3.0

# OpenCV camera axes (x right, y down, z forward) -> Blender camera axes (x right, y up, looking along -z).
OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])

# Rotation of -90 degrees about X: OpenCV world "up" (-y) becomes Blender's +Z and "forward" (+z)
# becomes +Y, so a scene generated in the first camera's frame stands upright in Blender.
OPENCV_WORLD_TO_Z_UP = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, written to avoid overflow warnings for large negative logits."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (the IEC 61966-2-1 curve)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def dc_to_linear_rgb(f_dc: np.ndarray) -> np.ndarray:
    """(N, 3) degree-0 SH coefficients -> (N, 3) linear RGB in [0, 1].

    3DGS colours are display-referred (trained against sRGB images): 0.5 + SH_C0 * f_dc is an sRGB
    value, so it is clamped to [0, 1] and decoded to linear before it reaches a Blender shader.
    """
    return srgb_to_linear(np.clip(0.5 + SH_C0 * np.asarray(f_dc, dtype=np.float64), 0.0, 1.0))


def normalized_quaternions(rot: np.ndarray) -> np.ndarray:
    """(N, 4) wxyz quaternions scaled to unit length; a zero quaternion becomes the identity."""
    rot = np.asarray(rot, dtype=np.float64)
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    identity = np.zeros_like(rot)
    identity[:, 0] = 1.0
    return np.where(norm > 0, rot / np.where(norm > 0, norm, 1.0), identity)


def isotropic_sigma(scales: np.ndarray) -> np.ndarray:
    """(N, 3) linear standard deviations -> (N,) one sigma per Gaussian for the sphere approximation.

    The geometric mean of the two largest axes: trained splats are often flat (one axis near zero),
    and this keeps the area of a flat splat seen face-on, where the geometric mean of all three
    axes would shrink it to nothing and the maximum would blow needles up into large balls.
    """
    two_largest = np.sort(np.asarray(scales, dtype=np.float64), axis=1)[:, 1:]
    return np.sqrt(two_largest[:, 0] * two_largest[:, 1])


@dataclass
class PointAttributes:
    """Per-Gaussian values as the point-cloud importer stores them (float32, row per Gaussian).

    color: (N, 3) linear RGB; opacity: (N,) in (0, 1); scale: (N, 3) linear sigmas;
    rotation: (N, 4) unit wxyz quaternions; radius: (N,) sphere radius K * sigma.
    """

    color: np.ndarray
    opacity: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    radius: np.ndarray


def gaussian_point_attributes(
    f_dc: np.ndarray, opacity_logit: np.ndarray, log_scale: np.ndarray, rot: np.ndarray, k: float = FOOTPRINT_K
) -> PointAttributes:
    """The documented conversions from stored 3DGS values (logit opacity, log scale) to attributes."""
    scale = np.exp(np.asarray(log_scale, dtype=np.float64))
    return PointAttributes(
        color=dc_to_linear_rgb(f_dc).astype(np.float32),
        opacity=sigmoid(opacity_logit).astype(np.float32),
        scale=scale.astype(np.float32),
        rotation=normalized_quaternions(rot).astype(np.float32),
        radius=(k * isotropic_sigma(scale)).astype(np.float32),
    )


@dataclass
class BlenderCameraSettings:
    """What a Blender camera and scene need to reproduce one OpenCV pinhole camera.

    matrix_world is in the importer's local frame (before any parent transform). The sensor is
    fitted horizontally, so lens / sensor_width = fx / width; shifts are fractions of the width
    (Blender measures both shifts in the larger, here horizontal, dimension).
    """

    matrix_world: np.ndarray
    lens: float
    sensor_width: float
    shift_x: float
    shift_y: float
    pixel_aspect_x: float
    pixel_aspect_y: float
    width: int
    height: int


def opencv_camera_to_blender(
    c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float, width: int, height: int, sensor_width: float = 36.0
) -> BlenderCameraSettings:
    """OpenCV camera-to-world + pixel intrinsics -> Blender camera settings.

    Blender's projection with a horizontal sensor fit, pixel aspect (ax, ay) and shifts (sx, sy) maps
    a camera-space direction (x, y, -1) to the pixel
        u = W/2 + fx_b * x - sx * W,     v_from_bottom = H/2 + fy_b * y - sy * W * ax / ay
    with fx_b = lens / sensor_width * W and fy_b = fx_b * ax / ay. Matching it to OpenCV's
    u = cx + fx * x', v = cy + fy * y' (y' = -y, v measured from the top) gives the values below.
    Blender wants pixel aspects >= 1, so the smaller of the two is 1.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"camera image size must be positive, got {width} x {height}")
    if not (fx > 0 and fy > 0):
        raise ValueError(f"camera focal lengths must be positive, got fx={fx}, fy={fy}")
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        raise ValueError(f"camera c2w must be a finite 4x4 matrix, got shape {c2w.shape}")
    # ax / ay = fy / fx: a pixel that is wider than tall has more pixels per unit vertically.
    if fy >= fx:
        aspect_x, aspect_y = fy / fx, 1.0
    else:
        aspect_x, aspect_y = 1.0, fx / fy
    return BlenderCameraSettings(
        matrix_world=c2w @ OPENCV_TO_BLENDER_CAMERA,
        lens=fx * sensor_width / width,
        sensor_width=sensor_width,
        shift_x=(width / 2 - cx) / width,
        shift_y=(cy - height / 2) / width * aspect_y / aspect_x,
        pixel_aspect_x=aspect_x,
        pixel_aspect_y=aspect_y,
        width=int(width),
        height=int(height),
    )
