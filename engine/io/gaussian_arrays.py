"""Decoded Gaussian splats in memory (``GaussianArrays``), shared by every splat file format.

numpy only. SH degrees, the property names of the standard 3DGS PLY (the column order of
``GaussianArrays.property_columns``) and the invalid-value policy applied after any format is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import PathLike
from .ply import check_non_finite

MAX_SH_DEGREE = 3
SH_C0 = 0.28209479177387814  # degree-0 SH basis: colour = 0.5 + SH_C0 * f_dc
# Log-scales beyond +-MAX_LOG_SCALE are invalid: the squared linear scale (what renderers and the
# Blender material compute) would overflow or underflow float32 (exp(80) ~ 5.5e34 squared is inf).
MAX_LOG_SCALE = 40.0


def num_f_rest(sh_degree: int) -> int:
    """Number of ``f_rest_*`` properties for an SH degree: 3 * ((d+1)^2 - 1)."""
    if not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")
    return 3 * ((sh_degree + 1) ** 2 - 1)


def sh_degree_from_f_rest(count: int) -> int:
    """Inverse of :func:`num_f_rest`; raises ValueError for a count that is no degree's."""
    for degree in range(MAX_SH_DEGREE + 1):
        if num_f_rest(degree) == count:
            return degree
    valid = ", ".join(str(num_f_rest(d)) for d in range(MAX_SH_DEGREE + 1))
    raise ValueError(
        f"{count} f_rest properties is not 3*((d+1)^2-1) for an SH degree d in 0..{MAX_SH_DEGREE} ({valid})"
    )


def gaussian_property_names(sh_degree: int) -> list[str]:
    """The standard property names, in the standard order, for an SH degree."""
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(num_f_rest(sh_degree))]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def _float32(name: str, value, shape: tuple) -> np.ndarray:
    """``value`` as a float32 array of the given shape (None = any size); views are kept as views."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"GaussianArrays: {name} must have shape {expected}, got {array.shape}")
    return array


@dataclass
class GaussianArrays:
    """N Gaussians as float32 numpy arrays, in the units the PLY stores them.

    Attributes:
        means: (N, 3) centres.
        f_dc: (N, 3) degree-0 SH coefficient per RGB channel (colour = 0.5 + SH_C0 * f_dc).
        f_rest: (N, (d+1)^2 - 1, 3) higher-order SH coefficients, coefficient index first, then RGB:
            the layout of ``GaussianScene.sh[:, 1:]`` (not the file's channel-major order). (N, 0, 3)
            for degree 0.
        opacity: (N,) opacity logits.
        scale: (N, 3) natural logs of the standard deviations.
        rot: (N, 4) quaternions (w, x, y, z), not necessarily unit length.
        normals: (N, 3) or None (written as zeros when None).
        dropped_non_finite: how many rows the reader dropped for holding invalid values (NaN, inf or a
            log-scale beyond +-MAX_LOG_SCALE; only with ``non_finite="drop"``; 0 otherwise). Not written.

    Inputs are converted to float32 (the file's type) at construction. The reader returns views of
    one (N, P) block holding the file's values (no per-field copies of a large file), so fields may be
    non-contiguous: use ``np.ascontiguousarray`` where an API needs contiguous memory.
    """

    means: np.ndarray
    f_dc: np.ndarray
    f_rest: np.ndarray
    opacity: np.ndarray
    scale: np.ndarray
    rot: np.ndarray
    normals: Optional[np.ndarray] = None
    dropped_non_finite: int = 0

    def __post_init__(self):
        self.means = _float32("means", self.means, (None, 3))
        self.f_dc = _float32("f_dc", self.f_dc, (None, 3))
        self.f_rest = _float32("f_rest", self.f_rest, (None, None, 3))
        self.opacity = _float32("opacity", self.opacity, (None,))
        self.scale = _float32("scale", self.scale, (None, 3))
        self.rot = _float32("rot", self.rot, (None, 4))
        if self.normals is not None:
            self.normals = _float32("normals", self.normals, (None, 3))
        coeffs = self.f_rest.shape[1] + 1
        degree = int(round(coeffs**0.5)) - 1
        if (degree + 1) ** 2 != coeffs or degree > MAX_SH_DEGREE:
            raise ValueError(
                f"GaussianArrays: f_rest has {coeffs - 1} coefficients per channel; (d+1)^2 - 1 for d in 0..3 is 0, 3, 8 or 15"
            )
        for name in ("f_dc", "f_rest", "opacity", "scale", "rot", "normals"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.means):
                raise ValueError(f"GaussianArrays: {name} has {len(value)} rows but means has {len(self.means)}")

    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return int(round((self.f_rest.shape[1] + 1) ** 0.5)) - 1

    @property
    def sh(self) -> np.ndarray:
        """(N, (d+1)^2, 3) all SH coefficients (f_dc first), as in ``GaussianScene.sh``."""
        return np.concatenate([self.f_dc[:, None, :], self.f_rest], axis=1)

    def select(self, rows: np.ndarray) -> GaussianArrays:
        """The Gaussians picked by a boolean mask or index array (copies)."""
        return GaussianArrays(
            means=self.means[rows],
            f_dc=self.f_dc[rows],
            f_rest=self.f_rest[rows],
            opacity=self.opacity[rows],
            scale=self.scale[rows],
            rot=self.rot[rows],
            normals=None if self.normals is None else self.normals[rows],
        )

    def property_columns(self) -> np.ndarray:
        """(N, P) float32 block of all properties in the standard file order (normals zero if None)."""
        n, rest = len(self), self.f_rest.shape[1]
        block = np.empty((n, 17 + 3 * rest), dtype=np.float32)
        block[:, 0:3] = self.means
        block[:, 3:6] = 0.0 if self.normals is None else self.normals
        block[:, 6:9] = self.f_dc
        # Channel-major: column 9 + c * rest + k holds coefficient k of channel c.
        block[:, 9 : 9 + 3 * rest] = self.f_rest.transpose(0, 2, 1).reshape(n, 3 * rest)
        tail = 9 + 3 * rest
        block[:, tail] = self.opacity
        block[:, tail + 1 : tail + 4] = self.scale
        block[:, tail + 4 : tail + 8] = self.rot
        return block


def invalid_value_mask(names: Sequence[str], block: np.ndarray) -> np.ndarray:
    """(N, P) mask of finite values that are invalid all the same: log-scales beyond +-MAX_LOG_SCALE.

    ``names`` are the standard property names of ``block``'s columns (``scale_0..2`` are checked).
    """
    mask = np.zeros(block.shape, dtype=bool)
    for column, name in enumerate(names):
        if name in ("scale_0", "scale_1", "scale_2"):
            with np.errstate(invalid="ignore"):
                mask[:, column] = np.abs(block[:, column]) > MAX_LOG_SCALE
    return mask


def validate_gaussians(gaussians: GaussianArrays, non_finite: str, path: Optional[PathLike]) -> GaussianArrays:
    """Applies the invalid-value policy to decoded Gaussians (any file format) before they are used.

    Invalid: any NaN or infinite value, or a log-scale beyond +-MAX_LOG_SCALE (an infinite or zero
    radius once exponentiated). "error" raises :class:`engine.io.errors.InvalidValuesError` naming how
    many splats and which properties; "drop" returns the valid ones with ``dropped_non_finite`` set.
    """
    names = gaussian_property_names(gaussians.sh_degree)
    block = gaussians.property_columns()
    keep = check_non_finite(names, block, non_finite, "splats", path, out_of_range=invalid_value_mask(names, block))
    if keep is None:
        return gaussians
    kept = gaussians.select(keep)
    kept.dropped_non_finite = int((~keep).sum())
    return kept
