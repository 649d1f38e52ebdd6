"""Numbers only: 3DGS values -> Blender attribute values, OpenCV cameras -> Blender camera settings.

Nothing here touches bpy, so every conversion can be checked with plain NumPy (and is, in
tests/test_addon_conversions.py). blender_data.py turns the results into Blender data, materials.py builds
the node graphs.
"""

from dataclasses import dataclass

import numpy as np

SH_C0 = 0.28209479177387814

# 3DGS adds this many pixels^2 to each splat's screen-space covariance (a low-pass filter of the original
# rasterizer, kept by gsplat and by the engine's reference rasterizer); the materials do the same.
EPS2D = 0.3

# Each Gaussian is drawn inside a sphere (or ellipsoid) of K sigmas; the material's footprint reaches
# exp(-0.5 * K^2) ~ 1 % at the rim, so nothing visible is cut off.
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


def dc_to_display_rgb(f_dc: np.ndarray) -> np.ndarray:
    """(N, 3) degree-0 SH coefficients -> (N, 3) display-referred RGB in [0, 1] (0.5 + SH_C0 * f_dc, clamped).

    3DGS renderers blend these values as they are (in display space, not linear light); the importer
    keeps them so and renders with the Raw view transform, so Cycles blends them the same way.
    """
    return np.clip(0.5 + SH_C0 * np.asarray(f_dc, dtype=np.float64), 0.0, 1.0)


def normalized_quaternions(rot: np.ndarray) -> np.ndarray:
    """(N, 4) wxyz quaternions scaled to unit length; a zero quaternion becomes the identity."""
    rot = np.asarray(rot, dtype=np.float64)
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    identity = np.zeros_like(rot)
    identity[:, 0] = 1.0
    return np.where(norm > 0, rot / np.where(norm > 0, norm, 1.0), identity)


def quaternions_to_matrices(rot: np.ndarray) -> np.ndarray:
    """(N, 4) unit wxyz quaternions -> (N, 3, 3) rotation matrices (columns: the rotated x, y, z axes).

    The numpy twin of ``engine.geometry.rotations.quaternion_to_matrix``: the add-on runs in Blender's
    Python without torch (tests/test_addon_conversions.py checks that the two agree)."""
    w, x, y, z = np.moveaxis(np.asarray(rot, dtype=np.float64), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=-2,
    )


def ray_footprint_alpha(
    offsets: np.ndarray,
    directions: np.ndarray,
    axes: np.ndarray,
    scales: np.ndarray,
    opacity: np.ndarray,
    dilation: float | np.ndarray = 0.0,
) -> np.ndarray:
    """opacity * exp(-0.5 * d^2): the Gaussian's peak along a ray, as the splat materials compute it.

    ``offsets``: (N, 3) a point of the ray minus the centre; ``directions``: (N, 3) the ray direction
    (any length); ``axes``: (N, 3, 3) rotation matrices (column i: axis i); ``scales``: (N, 3) sigmas;
    ``dilation``: a variance added on every axis (the 3DGS screen-space term in world units). With
    p, q the offset and direction along the axes and s^2 = sigma^2 + dilation,
    d^2 = |p/s|^2 - ((p/s).(q/s))^2 / |q/s|^2 is the ray's squared distance from the centre in units of
    the Gaussian (its maximum along the ray, as in ray-traced 3DGS; equal to the splatted 2D Gaussian
    in an orthographic view). The reference for the node graphs in materials.py.
    """
    p = np.einsum("nji,nj->ni", axes, offsets)
    q = np.einsum("nji,nj->ni", axes, directions)
    u = 1.0 / (np.asarray(scales, dtype=np.float64) ** 2 + np.reshape(dilation, (-1, 1)))
    xx, xy, yy = (p * p * u).sum(axis=1), (p * q * u).sum(axis=1), (q * q * u).sum(axis=1)
    return np.asarray(opacity) * np.exp(-0.5 * np.maximum(xx - xy**2 / yy, 0.0))


@dataclass
class PointAttributes:
    """Per-Gaussian values as the point-cloud importer stores them (float32, row per Gaussian).

    color: (N, 3) display-referred RGB; opacity: (N,) in (0, 1); scale: (N, 3) linear sigmas;
    rotation: (N, 4) unit wxyz quaternions; radius: (N,) bounding-sphere radius K * largest sigma;
    axes: (N, 3, 3) rotation matrices (column i: the Gaussian's i-th axis) for the anisotropic footprint.
    """

    color: np.ndarray
    opacity: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    radius: np.ndarray
    axes: np.ndarray


def gaussian_point_attributes(
    f_dc: np.ndarray, opacity_logit: np.ndarray, log_scale: np.ndarray, rot: np.ndarray, k: float = FOOTPRINT_K
) -> PointAttributes:
    """The documented conversions from stored 3DGS values (logit opacity, log scale) to attributes."""
    scale = np.exp(np.asarray(log_scale, dtype=np.float64))
    return PointAttributes(
        color=dc_to_display_rgb(f_dc).astype(np.float32),
        opacity=sigmoid(opacity_logit).astype(np.float32),
        scale=scale.astype(np.float32),
        rotation=normalized_quaternions(rot).astype(np.float32),
        radius=(k * scale.max(axis=1)).astype(np.float32),
        axes=quaternions_to_matrices(normalized_quaternions(rot)).astype(np.float32),
    )


def _max_square_overlap(u0, u1, v0, v1, grid: int) -> int:
    """Most [u0, u1] x [v0, v1] cell ranges (inclusive, clipped to the grid) covering any one cell."""
    u0, v0 = np.clip(u0, 0, grid), np.clip(v0, 0, grid)
    u1, v1 = np.clip(u1 + 1, 0, grid), np.clip(v1 + 1, 0, grid)
    keep = (u1 > u0) & (v1 > v0)
    u0, u1, v0, v1 = u0[keep], u1[keep], v0[keep], v1[keep]
    size = (grid + 1) * (grid + 1)
    corners = lambda v, u: np.bincount(v * (grid + 1) + u, minlength=size)  # noqa: E731
    counts = corners(v0, u0) - corners(v0, u1) - corners(v1, u0) + corners(v1, u1)
    return int(counts.reshape(grid + 1, grid + 1).cumsum(axis=0).cumsum(axis=1).max(initial=0))


def max_spheres_along_ray(
    centres: np.ndarray,
    radii: np.ndarray,
    c2w: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    grid: int = 96,
) -> int:
    """An upper bound on how many of the spheres (centres (N, 3), radii (N,)) one camera ray passes.

    Cycles ends a ray after ``transparent_max_bounces`` transparent hits and the pixel turns black, so
    the import sizes that limit with this. The image is split into ``grid`` x ``grid`` cells; each sphere
    in front of the OpenCV camera (c2w 4x4, pixel intrinsics) counts in every cell its projected bounding
    box touches, and a sphere reaching the camera plane counts everywhere. The fullest cell is the answer.
    """
    centres = np.asarray(centres, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    c2w = np.asarray(c2w, dtype=np.float64)
    local = (centres - c2w[:3, 3]) @ c2w[:3, :3]  # world -> camera (rotation is orthonormal)
    x, y, z = local[:, 0], local[:, 1], local[:, 2]
    # Spheres reaching the camera plane (z - r <= 0) but not behind it count everywhere: few in practice.
    everywhere = int(np.count_nonzero((z - radii <= 0) & (z + radii > 0)))
    front = z - radii > 0
    x, y, z, r = x[front], y[front], z[front], radii[front]
    # The sphere lies in the box [x +- r] x [y +- r] x [z +- r]; x / z over that box is extreme at its
    # corners, which bounds the sphere's image (conservatively, without trigonometry).
    near, far = z - r, z + r

    def pixel_range(a, focal, centre):
        low = np.minimum((a - r) / near, (a - r) / far)
        high = np.maximum((a + r) / near, (a + r) / far)
        return focal * np.clip(low, -1e6, 1e6) + centre, focal * np.clip(high, -1e6, 1e6) + centre

    u_low, u_high = pixel_range(x, fx, cx)
    v_low, v_high = pixel_range(y, fy, cy)
    cell_u, cell_v = width / grid, height / grid
    u0 = np.floor(u_low / cell_u).astype(np.int64)
    u1 = np.floor(u_high / cell_u).astype(np.int64)
    v0 = np.floor(v_low / cell_v).astype(np.int64)
    v1 = np.floor(v_high / cell_v).astype(np.int64)
    return everywhere + _max_square_overlap(u0, u1, v0, v1, grid)


def max_spheres_along_axes(centres: np.ndarray, radii: np.ndarray, grid: int = 96) -> int:
    """Like ``max_spheres_along_ray`` for rays parallel to the x, y and z axes (when no camera is known)."""
    centres = np.asarray(centres, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    if len(centres) == 0:
        return 0
    low, high = (centres - radii[:, None]).min(axis=0), (centres + radii[:, None]).max(axis=0)
    cell = np.maximum(high - low, 1e-30) / grid
    lo = np.floor((centres - radii[:, None] - low) / cell).astype(np.int64)
    hi = np.floor((centres + radii[:, None] - low) / cell).astype(np.int64)
    return max(_max_square_overlap(lo[:, a], hi[:, a], lo[:, b], hi[:, b], grid) for a, b in ((0, 1), (1, 2), (0, 2)))


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
