"""Coloured point clouds as PLY (no torch): what a pointmap decoder produces, viewable anywhere.

File layout: one ``vertex`` element, binary little-endian, properties ``x y z`` (float32),
``red green blue`` (uchar) and, when the points have one, ``confidence`` (float32).

Colours are floats in [0, 1] in memory (as in ``PointScene``) and 8-bit in the file: writing rounds
``colour * 255`` to the nearest integer after clipping to [0, 1], so a round trip is exact for colours
that are multiples of 1/255 and within 1/510 otherwise. Reading accepts colours stored as uchar
(/255), ushort (/65535) or float/double (taken as already in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import PathLike, PlyFormatError
from .ply import check_non_finite, check_non_finite_policy, read_ply, write_ply

_COLOR_NAMES = ("red", "green", "blue")
# Integer colour types and the value that means full intensity.
_COLOR_SCALES = {"u1": 255.0, "u2": 65535.0}


@dataclass
class PointArrays:
    """N coloured points as float32 numpy arrays.

    Attributes:
        points: (N, 3) positions.
        colors: (N, 3) RGB in [0, 1].
        confidence: (N,) or None.
        dropped_non_finite: rows the reader dropped for NaN/inf values (``non_finite="drop"``); not written.
    """

    points: np.ndarray
    colors: np.ndarray
    confidence: Optional[np.ndarray] = None
    dropped_non_finite: int = 0

    def __post_init__(self):
        self.points = np.ascontiguousarray(self.points, dtype=np.float32)
        self.colors = np.ascontiguousarray(self.colors, dtype=np.float32)
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"PointArrays: points must have shape (N, 3), got {self.points.shape}")
        if self.colors.shape != self.points.shape:
            raise ValueError(f"PointArrays: colors must have shape {self.points.shape}, got {self.colors.shape}")
        if self.confidence is not None:
            self.confidence = np.ascontiguousarray(self.confidence, dtype=np.float32)
            if self.confidence.shape != (len(self.points),):
                raise ValueError(
                    f"PointArrays: confidence must have shape ({len(self.points)},), got {self.confidence.shape}"
                )

    def __len__(self) -> int:
        return len(self.points)

    def select(self, rows: np.ndarray) -> PointArrays:
        """The points picked by a boolean mask or index array (copies)."""
        return PointArrays(
            self.points[rows], self.colors[rows], None if self.confidence is None else self.confidence[rows]
        )

    def _property_block(self) -> tuple[list[str], np.ndarray]:
        """File property names and the (N, P) float32 values behind them (colours still in [0, 1])."""
        names = ["x", "y", "z", *_COLOR_NAMES]
        parts = [self.points, self.colors]
        if self.confidence is not None:
            names.append("confidence")
            parts.append(self.confidence[:, None])
        return names, np.concatenate(parts, axis=1)


def write_point_ply(
    path: PathLike, points: PointArrays, *, non_finite: str = "error", comments: Sequence[str] = ()
) -> int:
    """Writes a binary little-endian point-cloud PLY, atomically.

    Args:
        non_finite: "error" (default) refuses points with a NaN/inf position, colour or confidence;
            "drop" leaves them out.

    Returns:
        The number of points dropped for non-finite values (always 0 with "error").
    """
    keep = check_non_finite(*points._property_block(), non_finite, "points", path)
    if keep is not None:
        points = points.select(keep)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if points.confidence is not None:
        fields.append(("confidence", "<f4"))
    rows = np.empty(len(points), dtype=np.dtype(fields))
    quantised = np.rint(np.clip(points.colors, 0.0, 1.0) * 255.0).astype(np.uint8)
    for axis, name in enumerate(("x", "y", "z")):
        rows[name] = points.points[:, axis]
    for channel, name in enumerate(_COLOR_NAMES):
        rows[name] = quantised[:, channel]
    if points.confidence is not None:
        rows["confidence"] = points.confidence
    write_ply(path, [("vertex", rows)], comments=comments)
    return 0 if keep is None else int((~keep).sum())


def read_point_ply(path: PathLike, *, non_finite: str = "error") -> PointArrays:
    """Reads a coloured point cloud (``x y z red green blue`` [+ ``confidence``]) from any PLY.

    Args:
        non_finite: "error" (default) raises :class:`PlyFormatError` naming how many points and which
            properties hold NaN/inf; "drop" leaves them out (count in ``PointArrays.dropped_non_finite``).
    """
    check_non_finite_policy(non_finite)
    header, elements = read_ply(path, elements=("vertex",))
    if "vertex" not in elements:
        found = ", ".join(repr(e.name) for e in header.elements) or "none"
        raise PlyFormatError(f"no 'vertex' element (elements in the file: {found})", path)
    vertex = elements["vertex"]
    missing = [name for name in ("x", "y", "z", *_COLOR_NAMES) if name not in vertex.dtype.names]
    if missing:
        raise PlyFormatError(
            f"the vertex element lacks required properties: {', '.join(missing)} (it has: {', '.join(vertex.dtype.names)})",
            path,
        )
    with np.errstate(over="ignore"):  # doubles beyond float32 become inf, reported below
        points = np.stack([vertex[name].astype(np.float32) for name in ("x", "y", "z")], axis=1)
        confidence = vertex["confidence"].astype(np.float32) if "confidence" in vertex.dtype.names else None
    colors = np.empty((len(vertex), 3), dtype=np.float32)
    for channel, name in enumerate(_COLOR_NAMES):
        code = f"{vertex.dtype[name].kind}{vertex.dtype[name].itemsize}"
        if code in _COLOR_SCALES:
            colors[:, channel] = vertex[name] / _COLOR_SCALES[code]
        elif code[0] == "f":
            colors[:, channel] = vertex[name]
        else:
            raise PlyFormatError(
                f"colour property {name!r} has an unsupported type ({vertex.dtype[name]}); expected uchar, ushort or float",
                path,
            )
    result = PointArrays(points, colors, confidence)
    keep = check_non_finite(*result._property_block(), non_finite, "points", path)
    if keep is None:
        return result
    result = result.select(keep)
    result.dropped_non_finite = int((~keep).sum())
    return result
