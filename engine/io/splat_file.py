"""The ``.splat`` format of the web splat viewers: read and write Gaussians as numpy arrays (no torch).

A ``.splat`` file has no header: it is a sequence of 32-byte records, one per splat (the layout the
antimatter15 WebGL viewer introduced and other viewers adopted; facts from its public converter):

=======  =========  =====================================================================
bytes    type       meaning
=======  =========  =====================================================================
0-11     3 float32  position x, y, z
12-23    3 float32  linear scales (standard deviations), not logs
24-27    4 uint8    colour r, g, b = (0.5 + SH_C0 * f_dc) * 255 and alpha = sigmoid(opacity) * 255
28-31    4 uint8    rotation (w, x, y, z) of the unit quaternion, each q * 128 + 128
=======  =========  =====================================================================

Reading gives degree-0 Gaussians (the format keeps no higher SH). An alpha of 0 or 255 is decoded as
the edge of its quantisation step (0.5/255 from 0 or 1), so opacity logits stay finite; a scale of 0 is
a log-scale of -inf, which the validation treats as invalid.

Writing sorts the splats by decreasing size x opacity, as the viewers' own converter does (viewers that
stream the file show the most visible splats first), and drops higher-order SH.
"""

from __future__ import annotations

import numpy as np

from .atomic import atomic_write
from .errors import FormatError, PathLike
from .gaussian_arrays import SH_C0, GaussianArrays, validate_gaussians
from .ply import check_non_finite_policy

RECORD = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rot", "u1", (4,))])
_ALPHA_EDGE = 0.5 / 255.0


class SplatFormatError(FormatError):
    """A ``.splat`` file cannot be read (its size is not a whole number of 32-byte records)."""


def read_splat(path: PathLike, *, non_finite: str = "error") -> GaussianArrays:
    """Reads a ``.splat`` file.

    Args:
        non_finite: "error" refuses a file with invalid values (NaN/inf positions or scales, zero or
            negative scales); "drop" leaves those splats out (count in ``dropped_non_finite``).

    Returns:
        float32 Gaussians of SH degree 0 in the standard units (log-scales, opacity logits, wxyz
        quaternions, not normalised).

    Raises:
        SplatFormatError: the size is not a multiple of 32 bytes.
        InvalidValuesError: invalid values with ``non_finite="error"``.
    """
    check_non_finite_policy(non_finite)
    with open(path, "rb") as file:
        data = file.read()
    if len(data) % RECORD.itemsize:
        raise SplatFormatError(
            f"not a .splat file: its size ({len(data)} bytes) is not a multiple of the {RECORD.itemsize}-byte "
            "splat record",
            path,
        )
    records = np.frombuffer(data, RECORD)
    rgba = records["rgba"].astype(np.float64) / 255.0
    alpha = np.clip(rgba[:, 3], _ALPHA_EDGE, 1.0 - _ALPHA_EDGE)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_scale = np.log(records["scale"].astype(np.float64))
    gaussians = GaussianArrays(
        means=records["position"],
        f_dc=(rgba[:, :3] - 0.5) / SH_C0,
        f_rest=np.zeros((len(records), 0, 3), np.float32),
        opacity=np.log(alpha) - np.log1p(-alpha),
        scale=log_scale,
        rot=(records["rot"].astype(np.float64) - 128.0) / 128.0,
    )
    return validate_gaussians(gaussians, non_finite, path)


def write_splat(path: PathLike, gaussians: GaussianArrays, *, non_finite: str = "error") -> int:
    """Writes a ``.splat`` file atomically (sorted by size x opacity; higher SH dropped).

    Returns:
        How many Gaussians were left out as invalid (always 0 with "error").
    """
    gaussians = validate_gaussians(gaussians, non_finite, path)
    g = gaussians
    scale = np.exp(g.scale.astype(np.float64))
    opacity = 1.0 / (1.0 + np.exp(-g.opacity.astype(np.float64)))
    order = np.argsort(-(np.exp(g.scale.astype(np.float64).sum(axis=1)) * opacity), kind="stable")
    records = np.empty(len(g), dtype=RECORD)
    records["position"] = g.means[order]
    records["scale"] = scale[order]
    color = np.clip(np.rint((0.5 + SH_C0 * g.f_dc.astype(np.float64)) * 255.0), 0, 255)
    records["rgba"][:, :3] = color[order]
    records["rgba"][:, 3] = np.clip(np.rint(opacity * 255.0), 0, 255)[order]
    rot = g.rot.astype(np.float64)
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    rot = np.where(norm > 0, rot / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    records["rot"] = np.clip(np.rint(rot * 128.0 + 128.0), 0, 255)[order]
    with atomic_write(path, "wb") as file:
        file.write(records.tobytes())
    return gaussians.dropped_non_finite
