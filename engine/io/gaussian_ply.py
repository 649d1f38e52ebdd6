"""The standard 3DGS PLY: read and write Gaussians as numpy arrays (no torch).

File layout (what the original 3DGS code and every splat viewer write and read): one ``vertex``
element, binary little-endian, float32 properties in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_{R-1}  opacity  scale_0..2  rot_0..3

with R = 3 * ((d+1)^2 - 1) for SH degree d in 0..3 (R = 0, 9, 24, 45). ``opacity`` is a logit,
``scale_*`` are natural logs, ``rot_*`` a quaternion (w, x, y, z), and ``f_rest`` is channel-major:
all higher-order coefficients of red, then of green, then of blue. Normals are unused by 3DGS and
written as zeros unless given.

Reading is lenient about layout (ASCII or big-endian bodies, other property orders, extra properties
and elements, float or double values, bytes after the last element) and strict about content: missing
properties, an f_rest count that is no SH degree, and Gaussian properties stored as integers (which no
standard writer produces; the SuperSplat compressed PLY, whose integers are packed values, has its own
reader in :mod:`engine.io.compressed_ply`) are errors naming what is wrong. Invalid values (see
:func:`invalid_value_mask`) are refused or skipped, as the caller chooses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .compressed_ply import is_compressed_ply, read_compressed_ply
from .errors import PathLike, PlyFormatError
from .gaussian_arrays import (
    GaussianArrays,
    gaussian_property_names,
    invalid_value_mask,
    num_f_rest,
    sh_degree_from_f_rest,
)
from .ply import _WRITE_NAMES, check_non_finite, check_non_finite_policy, read_ply, write_ply

_F_REST_PATTERN = re.compile(r"f_rest_(\d+)")
_REQUIRED = (
    "x",
    "y",
    "z",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
)


def write_gaussian_ply(
    path: PathLike, gaussians: GaussianArrays, *, non_finite: str = "error", comments: Sequence[str] = ()
) -> int:
    """Writes a standard binary little-endian 3DGS PLY, atomically.

    Args:
        path: destination; an existing file is replaced only once the new one is complete.
        gaussians: what to write; its SH degree decides the number of ``f_rest`` properties.
        non_finite: "error" (default) refuses Gaussians with invalid values (NaN, inf, log-scales
            beyond +-MAX_LOG_SCALE), naming how many and in which properties; "drop" leaves them out.
        comments: extra ``comment`` header lines.

    Returns:
        The number of Gaussians dropped for non-finite values (always 0 with "error").
    """
    names = gaussian_property_names(gaussians.sh_degree)
    block = gaussians.property_columns()
    keep = check_non_finite(names, block, non_finite, "splats", path, out_of_range=invalid_value_mask(names, block))
    if keep is not None:
        block = block[keep]
    rows = np.ascontiguousarray(block).view(np.dtype([(name, "<f4") for name in names])).reshape(len(block))
    write_ply(path, [("vertex", rows)], comments=comments)
    return 0 if keep is None else int((~keep).sum())


def _standard_block(vertex: np.ndarray, names: list[str]) -> np.ndarray:
    """(N, len(names)) float32 values of the named properties of a structured vertex array.

    When every property of the file is a native float32 (what 3DGS tools write), the rows are viewed as a
    plain (N, P) float32 matrix: no copy at all for a file in the standard order, one gather otherwise.
    Any other file is converted column by column (casting other numeric types to float32).
    """
    file_names = list(vertex.dtype.names)
    if all(vertex.dtype[name] == np.dtype(np.float32) for name in file_names) and vertex.dtype.itemsize == 4 * len(
        file_names
    ):
        matrix = vertex.view(np.float32).reshape(len(vertex), len(file_names))
        columns = [file_names.index(name) for name in names]
        return matrix if columns == list(range(len(file_names))) else matrix[:, columns]
    block = np.empty((len(vertex), len(names)), dtype=np.float32)
    with np.errstate(over="ignore"):  # a double beyond float32 range becomes inf, reported as non-finite
        for column, name in enumerate(names):
            block[:, column] = vertex[name]
    return block


def read_gaussian_ply(path: PathLike, *, non_finite: str = "error") -> GaussianArrays:
    """Reads Gaussians from a 3DGS PLY written by this module or by any other tool.

    A SuperSplat / PlayCanvas compressed PLY is recognised and decoded by
    :func:`engine.io.compressed_ply.read_compressed_ply`.

    Args:
        path: the file.
        non_finite: "error" (default) raises :class:`engine.io.errors.InvalidValuesError` if any
            Gaussian has an invalid value (NaN, inf, a log-scale beyond +-MAX_LOG_SCALE) in a property
            that is read, naming how many and which properties; "drop" leaves those Gaussians out and
            reports the count in ``GaussianArrays.dropped_non_finite``.

    Returns:
        The Gaussians, float32, with SH degree inferred from the number of ``f_rest_*`` properties.
        Normals are returned when the file has nx, ny and nz as floats. Other properties are ignored.

    Raises:
        PlyFormatError: not a 3DGS PLY (missing properties, no vertex element, ...), or a Gaussian
            property stored as an integer type (named in the message).
    """
    check_non_finite_policy(non_finite)
    header, elements = read_ply(path, elements=("vertex",))
    if elements.get("vertex") is not None and "packed_position" in elements["vertex"].dtype.names:
        if is_compressed_ply(header):
            return read_compressed_ply(path, non_finite=non_finite)
    if "vertex" not in elements:
        found = ", ".join(repr(e.name) for e in header.elements) or "none"
        raise PlyFormatError(f"no 'vertex' element (elements in the file: {found})", path)
    vertex = elements["vertex"]
    present = set(vertex.dtype.names)
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        raise PlyFormatError(
            f"the vertex element lacks required properties: {', '.join(missing)} "
            f"(it has: {', '.join(vertex.dtype.names) or 'none'})",
            path,
        )
    rest_names = {name for name in present if _F_REST_PATTERN.fullmatch(name)}
    try:
        degree = sh_degree_from_f_rest(len(rest_names))
    except ValueError as error:
        raise PlyFormatError(str(error), path) from None
    expected_rest = [f"f_rest_{i}" for i in range(len(rest_names))]
    gaps = [name for name in expected_rest if name not in rest_names]
    if gaps:
        raise PlyFormatError(f"f_rest properties are not numbered 0..{len(rest_names) - 1}: {gaps[0]} is missing", path)
    # Normals are not used by 3DGS: read only when all three are there as floats, otherwise ignored.
    normal_names = [name for name in ("nx", "ny", "nz") if name in present and vertex.dtype[name].kind == "f"]
    if len(normal_names) != 3:
        normal_names = []

    names = gaussian_property_names(degree)
    if not normal_names:
        names = [name for name in names if name not in ("nx", "ny", "nz")]
    integers = [name for name in names if vertex.dtype[name].kind != "f"]
    if integers:
        kinds = ", ".join(f"{name} ({_WRITE_NAMES[vertex.dtype[name].str[1:]]})" for name in integers[:6])
        more = f" and {len(integers) - 6} more" if len(integers) > 6 else ""
        raise PlyFormatError(
            f"splat properties stored as integers cannot be read as numbers: {kinds}{more}. The standard 3DGS "
            "PLY stores them as float or double; re-export the file as a standard or SuperSplat compressed PLY",
            path,
        )
    block = _standard_block(vertex, names)
    keep = check_non_finite(names, block, non_finite, "splats", path, out_of_range=invalid_value_mask(names, block))
    dropped = 0
    if keep is not None:
        block = block[keep]
        dropped = int((~keep).sum())

    columns = {name: column for column, name in enumerate(names)}
    rest = num_f_rest(degree) // 3
    first_rest = columns["f_dc_2"] + 1
    f_rest = block[:, first_rest : first_rest + 3 * rest].reshape(len(block), 3, rest).transpose(0, 2, 1)
    return GaussianArrays(
        means=block[:, columns["x"] : columns["x"] + 3],
        f_dc=block[:, columns["f_dc_0"] : columns["f_dc_0"] + 3],
        f_rest=f_rest,
        opacity=block[:, columns["opacity"]],
        scale=block[:, columns["scale_0"] : columns["scale_0"] + 3],
        rot=block[:, columns["rot_0"] : columns["rot_0"] + 4],
        normals=block[:, columns["nx"] : columns["nx"] + 3] if normal_names else None,
        dropped_non_finite=dropped,
    )
