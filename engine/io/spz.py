"""Niantic's ``.spz`` format (gzip container, versions 1-3): read and write Gaussians (numpy, no torch).

Facts from the format's public specification and reference library (nianticlabs/spz); the code is ours.
The file is a gzip stream holding a 16-byte little-endian header::

    uint32 magic = 0x5053474e ("NGSP"), uint32 version (1-3), uint32 count,
    uint8 sh_degree (0-3 here), uint8 fractional_bits, uint8 flags (1: antialiased), uint8 reserved

then, attribute by attribute for all splats: positions (24-bit signed fixed point with
``fractional_bits`` fractional bits; float16 in version 1), alphas (uint8, sigmoid(opacity) * 255),
colours (uint8 per channel, f_dc * 0.15 * 255 + 127.5), scales (uint8 per axis, (log_scale + 10) * 16),
rotations (version 2: uint8 x y z of the unit quaternion with w >= 0, q * 127.5 + 127.5; version 3:
"smallest three" - a little-endian uint32 whose top 2 bits name the largest component of (x, y, z, w)
and whose remaining 30 bits hold the other three, in order, as a sign bit and a 9-bit magnitude of
|q| / sqrt(1/2) each, the last in the lowest bits) and SH (uint8, (f - 0) * 128 + 128, coefficient-major
with RGB innermost).

Axes: the specification names right-up-back (OpenGL) as the stored frame, but the reference library's
command-line tools (default options: no coordinate conversion) and PlayCanvas' splat-transform write and
read SPZ data without any axis change, so a PLY converted to SPZ by them keeps its coordinates. This
reader and writer do the same: values are stored as given (a round trip through these tools and ours
keeps the frame).

Not supported (refused with a message): version 4 (zstd streams, no gzip), files with extension records
(flag 2), SH degree 4.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy as np

from .atomic import atomic_write
from .errors import FormatError, PathLike
from .gaussian_arrays import GaussianArrays, num_f_rest, validate_gaussians
from .ply import check_non_finite_policy

MAGIC = 0x5053474E
_HEADER = struct.Struct("<IIIBBBB")
_COLOR_SCALE = 0.15
_ALPHA_EDGE = 0.5 / 255.0
_SQRT1_2 = math.sqrt(0.5)
_MAX_POINTS = 100_000_000
_SH_TABLE = ((np.arange(256) - 128.0) / 128.0).astype(np.float32)  # SH byte -> coefficient


class SpzFormatError(FormatError):
    """A ``.spz`` file cannot be read: not gzip, wrong magic, an unsupported version or feature, truncated."""


def _open_gzip(path: PathLike) -> tuple:
    """The file's bytes and an inflater for its gzip stream (checked to be one)."""
    with open(path, "rb") as file:
        raw = file.read()
    if raw[:4] == b"NGSP":
        raise SpzFormatError(
            "this is an SPZ version 4 file (zstd-compressed streams), which is not supported yet; "
            "save it as SPZ version 3 (gzip) in the tool that wrote it",
            path,
        )
    if raw[:2] != b"\x1f\x8b":
        raise SpzFormatError("not an .spz file (it is not gzip-compressed)", path)
    return raw, zlib.decompressobj(16 + zlib.MAX_WBITS)


def _inflate(inflater, data: bytes, size: int, path: PathLike) -> bytes:
    """At most ``size`` (> 0) more decompressed bytes: memory stays bounded by what the header claims."""
    try:
        return inflater.decompress(data, size)
    except zlib.error as error:
        raise SpzFormatError(f"the gzip stream is damaged: {error}", path) from None


def read_spz(path: PathLike, *, non_finite: str = "error") -> GaussianArrays:
    """Reads an ``.spz`` file (versions 1-3) into Gaussians (axes as stored; see the module doc).

    Args:
        non_finite: "error" refuses invalid decoded values; "drop" leaves those splats out.

    Returns:
        float32 Gaussians (log-scales, opacity logits, wxyz unit quaternions), SH degree as stored.

    Raises:
        SpzFormatError: see the class; the message says what is wrong.
    """
    check_non_finite_policy(non_finite)
    raw, inflater = _open_gzip(path)
    data = _inflate(inflater, raw, _HEADER.size, path)
    if len(data) < _HEADER.size:
        raise SpzFormatError(f"the data is too short for the {_HEADER.size}-byte header ({len(data)} bytes)", path)
    magic, version, count, degree, fractional_bits, flags, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SpzFormatError(f"wrong magic number 0x{magic:08x} (an .spz file starts with 0x{MAGIC:08x})", path)
    if not 1 <= version <= 3:
        raise SpzFormatError(f"unsupported SPZ version {version} (supported: 1, 2, 3)", path)
    if count > _MAX_POINTS:
        raise SpzFormatError(f"the header claims {count} splats, more than {_MAX_POINTS}", path)
    if degree > 3:
        raise SpzFormatError(f"SH degree {degree} is not supported (0 to 3 are)", path)
    if flags & 0x2:
        raise SpzFormatError("SPZ extension records are not supported; save the file without extensions", path)
    coeffs = num_f_rest(degree) // 3
    position_bytes = 6 if version == 1 else 9
    rotation_bytes = 4 if version >= 3 else 3
    sizes = (position_bytes, 1, 3, 3, rotation_bytes, coeffs * 3)
    needed = _HEADER.size + count * sum(sizes)
    if needed > _HEADER.size:
        data += _inflate(inflater, inflater.unconsumed_tail, needed - _HEADER.size, path)
    if len(data) < needed:
        raise SpzFormatError(
            f"truncated data: {count} splats of SH degree {degree} need {needed} bytes, the stream has {len(data)}",
            path,
        )
    parts = []
    offset = _HEADER.size
    for size in sizes:
        parts.append(np.frombuffer(data, np.uint8, count * size, offset).reshape(count, size))
        offset += count * size
    positions, alphas, colors, scales, rotations, sh = parts

    if version == 1:
        means = positions.copy().view("<f2").astype(np.float64)
    else:
        fixed = positions.reshape(count, 3, 3).astype(np.int32)
        value = fixed[..., 0] | (fixed[..., 1] << 8) | (fixed[..., 2] << 16)
        value = np.where(value & 0x800000, value - (1 << 24), value)
        means = value.astype(np.float64) / (1 << fractional_bits)

    alpha = np.clip(alphas[:, 0].astype(np.float64) / 255.0, _ALPHA_EDGE, 1.0 - _ALPHA_EDGE)
    xyzw = _unpack_rotations(rotations, version)

    f_rest = _SH_TABLE[sh.reshape(count, coeffs, 3)]
    gaussians = GaussianArrays(
        means=means,
        f_dc=(colors.astype(np.float64) / 255.0 - 0.5) / _COLOR_SCALE,
        f_rest=f_rest,
        opacity=np.log(alpha) - np.log1p(-alpha),
        scale=scales.astype(np.float64) / 16.0 - 10.0,
        rot=np.stack([xyzw[:, 3], xyzw[:, 0], xyzw[:, 1], xyzw[:, 2]], axis=1),  # xyzw (file) -> wxyz
    )
    return validate_gaussians(gaussians, non_finite, path)


def _unpack_rotations(rotations: np.ndarray, version: int) -> np.ndarray:
    """(N, 3) or (N, 4) bytes -> (N, 4) unit quaternions in (x, y, z, w) order."""
    count = len(rotations)
    if version < 3:
        xyz = rotations.astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz**2).sum(axis=1)))
        return np.concatenate([xyz, w[:, None]], axis=1)
    code = rotations.copy().view("<u4")[:, 0].astype(np.int64)
    largest = code >> 30
    result = np.zeros((count, 4))
    rows = np.arange(count)
    remaining = code.copy()
    # Components other than the largest, from index 3 down to 0, sit in the low bits first.
    for index in (3, 2, 1, 0):
        here = largest != index
        magnitude = (remaining & 511).astype(np.float64) / 511.0 * _SQRT1_2
        negative = (remaining >> 9) & 1
        result[here, index] = np.where(negative[here] == 1, -magnitude[here], magnitude[here])
        remaining = np.where(here, remaining >> 10, remaining)
    result[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - (result**2).sum(axis=1)))
    return result


def write_spz(path: PathLike, gaussians: GaussianArrays, *, non_finite: str = "error") -> int:
    """Writes an ``.spz`` file (version 3, gzip), atomically.

    Quantisation as the format defines it: positions to 1/2^12 (fewer fractional bits when a coordinate
    reaches 2048, so nothing wraps; the header records it), log-scales to 1/16 within [-10, 5.9],
    colours to 8 bits of f_dc * 0.15, opacity to 8 bits, rotations to 9 bits per component and SH to
    8 bits of [-1, 1] (values outside these ranges are clipped).

    Returns:
        How many Gaussians were left out as invalid (always 0 with "error").
    """
    gaussians = validate_gaussians(gaussians, non_finite, path)
    g = gaussians
    count = len(g)
    degree = g.sh_degree
    means = g.means.astype(np.float64)
    largest = float(np.abs(means).max()) if count else 0.0
    fractional_bits = 12
    while fractional_bits > 0 and largest * (1 << fractional_bits) >= (1 << 23) - 1:
        fractional_bits -= 1
    fixed = np.rint(means * (1 << fractional_bits)).astype(np.int64) & 0xFFFFFF
    positions = np.stack([(fixed >> shift) & 0xFF for shift in (0, 8, 16)], axis=-1).astype(np.uint8)

    alpha = 1.0 / (1.0 + np.exp(-g.opacity.astype(np.float64)))
    alphas = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    colors = np.clip(np.rint(g.f_dc.astype(np.float64) * (_COLOR_SCALE * 255.0) + 127.5), 0, 255).astype(np.uint8)
    scales = np.clip(np.rint((g.scale.astype(np.float64) + 10.0) * 16.0), 0, 255).astype(np.uint8)

    rot = g.rot.astype(np.float64)
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    rot = np.where(norm > 0, rot / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    xyzw = np.stack([rot[:, 1], rot[:, 2], rot[:, 3], rot[:, 0]], axis=1)  # wxyz -> xyzw
    biggest = np.argmax(np.abs(xyzw), axis=1)
    rows = np.arange(count)
    negate = xyzw[rows, biggest] < 0
    code = biggest.astype(np.int64)
    for index in range(4):
        here = biggest != index
        value = xyzw[:, index]
        sign = ((value < 0) ^ negate).astype(np.int64)
        magnitude = np.minimum(np.floor(511.0 * np.abs(value) / _SQRT1_2 + 0.5), 511).astype(np.int64)
        code = np.where(here, (code << 10) | (sign << 9) | magnitude, code)
    rotations = code.astype("<u4").view(np.uint8).reshape(count, 4)

    sh = np.clip(np.rint(g.f_rest.astype(np.float64) * 128.0 + 128.0), 0, 255)
    header = _HEADER.pack(MAGIC, 3, count, degree, fractional_bits, 0, 0)
    body = b"".join(
        part.astype(np.uint8).tobytes()
        for part in (positions, alphas, colors, scales, rotations, sh.reshape(count, -1))
    )
    with atomic_write(path, "wb") as file:
        file.write(gzip.compress(header + body, compresslevel=6, mtime=0))
    return gaussians.dropped_non_finite
