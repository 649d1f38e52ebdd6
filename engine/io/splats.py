"""Every splat file format behind one pair of functions, plus "splats or points?" for scene files (no torch).

Formats (``SPLAT_FORMATS``):

* ``ply`` - the standard 3DGS PLY (:mod:`engine.io.gaussian_ply`);
* ``compressed-ply`` - SuperSplat / PlayCanvas compressed PLY (:mod:`engine.io.compressed_ply`);
  conventionally named ``*.compressed.ply``;
* ``splat`` - the 32-byte-per-splat format of the web viewers (:mod:`engine.io.splat_file`);
* ``spz`` - Niantic's gzip-compressed format (:mod:`engine.io.spz`).

Reading recognises the format from the file's first bytes (PLY magic and header, gzip magic), so a
misnamed file still reads; a ``.splat`` file has no magic and is recognised by its suffix. Writing picks
the format from the suffix (``.compressed.ply`` before ``.ply``) unless one is named.

Every reader validates what it decoded before it is returned (NaN, infinite values, log-scales whose
radius would overflow; see :func:`engine.io.gaussian_arrays.validate_gaussians`): ``non_finite="error"``
refuses such a file (:class:`engine.io.errors.InvalidValuesError`), ``"drop"`` skips those splats and
reports how many in ``dropped_non_finite``.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from .compressed_ply import is_compressed_ply, read_compressed_ply, write_compressed_ply
from .errors import FormatError, PathLike
from .gaussian_arrays import GaussianArrays
from .gaussian_ply import read_gaussian_ply, write_gaussian_ply
from .ply import read_header
from .point_ply import PointArrays, read_point_ply
from .splat_file import read_splat, write_splat
from .spz import read_spz, write_spz

SPLAT_FORMATS = ("ply", "compressed-ply", "splat", "spz")
# Properties that only Gaussian splats have: a PLY with any of them is read as splats.
_GAUSSIAN_ONLY = {"f_dc_0", "opacity", "scale_0", "rot_0"}
_MAX_SH_DEGREE = {"ply": 3, "compressed-ply": 3, "splat": 0, "spz": 3}


class UnknownFormatError(FormatError):
    """A file is none of the supported splat / point formats, or a format name is unknown."""


def format_from_suffix(path: PathLike) -> Optional[str]:
    """The format a file name implies (``.compressed.ply`` -> compressed-ply), or None."""
    name = os.fspath(path).lower()
    if name.endswith(".compressed.ply"):
        return "compressed-ply"
    for suffix, fmt in ((".ply", "ply"), (".splat", "splat"), (".spz", "spz")):
        if name.endswith(suffix):
            return fmt
    return None


def detect_format(path: PathLike) -> str:
    """The format of an existing file, from its content ("ply", "compressed-ply", "spz"), else its suffix.

    A ``.ply`` name whose content is no PLY raises the PLY reader's error; ``.splat`` and ``.spz`` names are
    handed to their readers, which say what is wrong with the content.

    Raises:
        UnknownFormatError: no supported format fits. PlyFormatError, OSError.
    """
    with open(path, "rb") as file:
        start = file.read(4)
        if start[:3] == b"ply":
            file.seek(0)
            header = read_header(file, path)
            return "compressed-ply" if is_compressed_ply(header) else "ply"
    if start[:2] == b"\x1f\x8b" or start == b"NGSP":
        return "spz"
    by_name = format_from_suffix(path)
    if by_name in ("ply", "compressed-ply"):
        with open(path, "rb") as file:
            read_header(file, path)  # raises "not a PLY file (it starts with ...)"
    if by_name in ("splat", "spz"):
        return by_name  # the format's reader says what is wrong with the content
    raise UnknownFormatError("not a splat file this add-on reads (standard or compressed PLY, .splat, .spz)", path)


def read_gaussians(path: PathLike, *, non_finite: str = "error") -> GaussianArrays:
    """Reads Gaussians from a file of any format in ``SPLAT_FORMATS`` (see the module doc).

    Raises:
        FormatError (or a subclass naming the format's problem), InvalidValuesError, OSError.
    """
    fmt = detect_format(path)
    if fmt == "ply":
        return read_gaussian_ply(path, non_finite=non_finite)
    if fmt == "compressed-ply":
        return read_compressed_ply(path, non_finite=non_finite)
    if fmt == "spz":
        return read_spz(path, non_finite=non_finite)
    return read_splat(path, non_finite=non_finite)


def write_gaussians(
    path: PathLike, gaussians: GaussianArrays, fmt: Optional[str] = None, *, non_finite: str = "error"
) -> int:
    """Writes Gaussians atomically in ``fmt`` (default: from the suffix); returns how many were left out.

    Formats that keep fewer SH degrees than the Gaussians have (``.splat`` keeps none) drop the rest:
    check :func:`max_sh_degree` first to tell the user.
    """
    fmt = fmt or format_from_suffix(path)
    if fmt not in SPLAT_FORMATS:
        raise UnknownFormatError(
            f"cannot tell the splat format to write from the name (use one of: {', '.join(SPLAT_FORMATS)})", path
        )
    if fmt == "ply":
        return write_gaussian_ply(path, gaussians, non_finite=non_finite)
    if fmt == "compressed-ply":
        return write_compressed_ply(path, gaussians, non_finite=non_finite)
    if fmt == "spz":
        return write_spz(path, gaussians, non_finite=non_finite)
    return write_splat(path, gaussians, non_finite=non_finite)


def max_sh_degree(fmt: str) -> int:
    """The highest SH degree a format can store."""
    return _MAX_SH_DEGREE[fmt]


def read_scene_file(path: PathLike, *, non_finite: str = "error") -> Union[GaussianArrays, PointArrays]:
    """Splats or points, whichever the file holds.

    A PLY whose vertices have any Gaussian-only property (f_dc_0, opacity, scale_0, rot_0) is read as
    splats (so a splat file missing some property gets an error naming it, not a point cloud), a
    compressed PLY, ``.splat`` or ``.spz`` file as splats, any other PLY as a point cloud.
    """
    fmt = detect_format(path)
    if fmt == "ply":
        with open(path, "rb") as file:
            header = read_header(file, path)
        names = {p.name for element in header.elements if element.name == "vertex" for p in element.properties}
        if not names & _GAUSSIAN_ONLY:
            return read_point_ply(path, non_finite=non_finite)
    return read_gaussians(path, non_finite=non_finite)
