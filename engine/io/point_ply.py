"""Coloured point clouds as PLY (no torch): what a pointmap decoder produces, viewable anywhere.

File layout: one ``vertex`` element, binary little-endian, properties ``x y z`` (float32),
``red green blue`` (uchar) and, when the points have one, ``confidence`` (float32).

Colours are floats in [0, 1] in memory (as in ``PointScene``) and 8-bit in the file: writing rounds
``colour * 255`` to the nearest integer after clipping to [0, 1], so a round trip is exact for colours
that are multiples of 1/255 and within 1/510 otherwise.

Reading takes the point clouds other tools write (scanners, photogrammetry, MeshLab, CloudCompare,
Open3D, mesh exporters):

* positions ``x y z`` of any numeric type; a ``vertex`` element of a mesh is read the same way (faces
  and other elements are skipped), normals and other properties are ignored;
* colour under the names ``red green blue``, ``r g b`` or ``diffuse_red diffuse_green diffuse_blue``
  (any letter case), with or without an alpha (ignored); none at all gives every point the neutral
  ``DEFAULT_POINT_COLOR`` and ``PointArrays.colors_from_file`` False;
* colour values by type and range: uchar /255, ushort /65535, other unsigned or signed integer types
  /255 when all values lie in 0..255 (else /65535 when in 0..65535); float or double as 0..1 unless a
  value exceeds 1.001, then as 0..255. Negative integer colours are an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import PathLike, PlyFormatError
from .ply import check_non_finite, check_non_finite_policy, read_ply, write_ply

_COLOR_NAMES = ("red", "green", "blue")
# Colour property names other tools use, in order of preference (compared case-insensitively).
COLOR_NAME_SETS = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
# Integer colour types and the value that means full intensity.
_COLOR_SCALES = {"u1": 255.0, "u2": 65535.0}
# sRGB-encoded light grey for point clouds that store no colour.
DEFAULT_POINT_COLOR = 0.8
# Float colours above this are taken as 0..255 (above float rounding of 1.0).
_FLOAT_COLOR_UNIT_MAX = 1.001


@dataclass
class PointArrays:
    """N coloured points as float32 numpy arrays.

    Attributes:
        points: (N, 3) positions.
        colors: (N, 3) RGB in [0, 1].
        confidence: (N,) or None.
        dropped_non_finite: rows the reader dropped for NaN/inf values (``non_finite="drop"``); not written.
        colors_from_file: False when the file had no colour and ``colors`` is the default grey.
    """

    points: np.ndarray
    colors: np.ndarray
    confidence: Optional[np.ndarray] = None
    dropped_non_finite: int = 0
    colors_from_file: bool = True

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


def _color_columns(vertex: np.ndarray, path) -> Optional[list[str]]:
    """The file's names of the R, G, B properties (see COLOR_NAME_SETS), or None when it has no colour."""
    by_lower = {name.lower(): name for name in vertex.dtype.names}
    for names in COLOR_NAME_SETS:
        found = [by_lower.get(name) for name in names]
        if all(found):
            return found
        if any(found):
            missing = [name for name, hit in zip(names, found) if not hit]
            raise PlyFormatError(
                f"the vertex element has colour property {next(n for n in found if n)!r} but lacks "
                f"{', '.join(missing)} (it has: {', '.join(vertex.dtype.names)})",
                path,
            )
    return None


def _decode_colors(vertex: np.ndarray, names: list[str], path) -> np.ndarray:
    """(N, 3) float32 colours in [0, 1] from the colour columns (see the module doc for the rules).

    Each channel is decoded by its own type; whether float channels are 0..1 or 0..255 is decided once,
    from the largest finite value of all float channels.
    """
    raw = [vertex[name].astype(np.float64) for name in names]
    float_values = [values[np.isfinite(values)] for name, values in zip(names, raw) if vertex.dtype[name].kind == "f"]
    float_max = max((values.max() for values in float_values if values.size), default=0.0)
    float_scale = 255.0 if float_max > _FLOAT_COLOR_UNIT_MAX else 1.0
    colors = np.empty((len(vertex), 3), dtype=np.float32)
    for channel, (name, values) in enumerate(zip(names, raw)):
        dtype = vertex.dtype[name]
        code = f"{dtype.kind}{dtype.itemsize}"
        if dtype.kind == "f":
            scale = float_scale
        elif code in _COLOR_SCALES:
            scale = _COLOR_SCALES[code]
        else:
            low = values.min() if values.size else 0
            high = values.max() if values.size else 0
            if low < 0:
                raise PlyFormatError(f"colour property values must not be negative (found {int(low)} in {name})", path)
            if high > 65535:
                raise PlyFormatError(
                    f"colour values up to {int(high)} in {name}: neither 8-bit nor 16-bit colour", path
                )
            scale = 255.0 if high <= 255 else 65535.0
        colors[:, channel] = values / scale
    return colors


def read_point_ply(path: PathLike, *, non_finite: str = "error") -> PointArrays:
    """Reads a point cloud from any PLY with ``x y z`` vertices (see the module doc for colours).

    Args:
        non_finite: "error" (default) raises :class:`engine.io.errors.InvalidValuesError` naming how many
            points and which properties hold NaN/inf; "drop" leaves them out (count in
            ``PointArrays.dropped_non_finite``).

    Raises:
        PlyFormatError: no vertex element, no x/y/z, an incomplete colour set, or colour values that
            fit no colour encoding.
    """
    check_non_finite_policy(non_finite)
    header, elements = read_ply(path, elements=("vertex",))
    if "vertex" not in elements:
        found = ", ".join(repr(e.name) for e in header.elements) or "none"
        raise PlyFormatError(f"no 'vertex' element (elements in the file: {found})", path)
    vertex = elements["vertex"]
    missing = [name for name in ("x", "y", "z") if name not in vertex.dtype.names]
    if missing:
        raise PlyFormatError(
            f"the vertex element lacks required properties: {', '.join(missing)} (it has: {', '.join(vertex.dtype.names)})",
            path,
        )
    with np.errstate(over="ignore"):  # doubles beyond float32 become inf, reported below
        points = np.stack([vertex[name].astype(np.float32) for name in ("x", "y", "z")], axis=1)
        confidence = vertex["confidence"].astype(np.float32) if "confidence" in vertex.dtype.names else None
    color_names = _color_columns(vertex, path)
    if color_names is None:
        colors = np.full((len(vertex), 3), DEFAULT_POINT_COLOR, dtype=np.float32)
    else:
        colors = _decode_colors(vertex, color_names, path)
    result = PointArrays(points, colors, confidence, colors_from_file=color_names is not None)
    names, block = result._property_block()
    if color_names is not None:
        names[3:6] = color_names
    keep = check_non_finite(names, block, non_finite, "points", path)
    if keep is None:
        return result
    kept = result.select(keep)
    kept.dropped_non_finite = int((~keep).sum())
    kept.colors_from_file = result.colors_from_file
    return kept
