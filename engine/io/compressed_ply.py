"""The "compressed PLY" of SuperSplat / PlayCanvas: read and write Gaussians as numpy arrays (no torch).

Layout (as PlayCanvas' splat-transform and SuperSplat read and write it; facts taken from their public
readers, the code is ours):

* element ``chunk``, one row per 256 splats, float properties ``min_x min_y min_z max_x max_y max_z``,
  ``min_scale_x .. max_scale_z`` and optionally ``min_r min_g min_b max_r max_g max_b``;
* element ``vertex``, uint properties ``packed_position``, ``packed_rotation``, ``packed_scale``,
  ``packed_color``;
* optionally element ``sh`` with uchar properties ``f_rest_0 .. f_rest_{R-1}`` (R = 9, 24 or 45, in the
  standard channel-major order).

Decoding, per splat i of chunk c = i // 256:

* position and log-scale: three unsigned fields of 11, 10 and 11 bits (x in the top bits), each a
  fraction t = v / (2^bits - 1) of the chunk's [min, max] range: value = min * (1 - t) + max * t;
* colour: four bytes r g b a (r in the top byte), fractions of 255; with chunk colours r, g, b are
  fractions of the chunk's [min_r, max_r] ...; f_dc = (colour - 0.5) / SH_C0, opacity = logit(a);
* rotation: the top 2 bits name the largest of (rot_0, rot_1, rot_2, rot_3) (taken positive), the
  other three follow in order as 10-bit fields, each (v / 1023 - 0.5) * sqrt(2); the largest is
  sqrt(1 - sum of squares of the others);
* SH: byte b -> n = 0 (b = 0), 1 (b = 255), else (b + 0.5) / 256; f_rest = (n - 0.5) * 8.

An alpha byte of 0 or 255 would be an infinite logit; it is decoded as the edge of its quantisation
step (0.5/255 from 0 or 1), so opacities stay finite and within half a step of the stored value.

Writing sorts the splats along a Morton (Z-order) curve first, as SuperSplat does, so that each chunk
covers a small box and positions keep their precision; the order of splats carries no meaning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import PathLike, PlyFormatError
from .gaussian_arrays import SH_C0, GaussianArrays, num_f_rest, sh_degree_from_f_rest, validate_gaussians
from .ply import PlyHeader, check_non_finite_policy, read_ply, write_ply

CHUNK_SIZE = 256
_CHUNK_BOUNDS = (
    "min_x",
    "min_y",
    "min_z",
    "max_x",
    "max_y",
    "max_z",
    "min_scale_x",
    "min_scale_y",
    "min_scale_z",
    "max_scale_x",
    "max_scale_y",
    "max_scale_z",
)
_CHUNK_COLORS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
_PACKED = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
_ALPHA_EDGE = 0.5 / 255.0
# SH byte -> coefficient: n = 0 (byte 0), 1 (byte 255), else (byte + 0.5) / 256; value = (n - 0.5) * 8.
_SH_CODES = np.arange(256, dtype=np.float64)
_SH_TABLE = (
    (np.where(_SH_CODES == 0, 0.0, np.where(_SH_CODES == 255, 1.0, (_SH_CODES + 0.5) / 256.0)) - 0.5) * 8.0
).astype(np.float32)


def is_compressed_ply(header: PlyHeader) -> bool:
    """True when the header has a ``chunk`` element and a ``vertex`` element with ``packed_*`` properties."""
    names = {element.name: {p.name for p in element.properties} for element in header.elements}
    return "chunk" in names and "vertex" in names and "packed_position" in names["vertex"]


def _unorm(values: np.ndarray, shift: int, bits: int) -> np.ndarray:
    mask = (1 << bits) - 1
    return ((values >> np.uint32(shift)) & np.uint32(mask)).astype(np.float64) / mask


def _lerp(low: np.ndarray, high: np.ndarray, t: np.ndarray) -> np.ndarray:
    return low * (1.0 - t) + high * t


def _check_types(element: np.ndarray, names: Sequence[str], kind: str, type_name: str, element_name: str, path):
    missing = [name for name in names if name not in element.dtype.names]
    if missing:
        raise PlyFormatError(
            f"compressed PLY: element {element_name!r} lacks {', '.join(missing)} "
            f"(it has: {', '.join(element.dtype.names)})",
            path,
        )
    wrong = [
        name for name in names if element.dtype[name].kind != kind[0] or element.dtype[name].itemsize != int(kind[1])
    ]
    if wrong:
        raise PlyFormatError(
            f"compressed PLY: property {wrong[0]!r} of element {element_name!r} is {element.dtype[wrong[0]]}, "
            f"the format stores it as {type_name}",
            path,
        )


def read_compressed_ply(path: PathLike, *, non_finite: str = "error") -> GaussianArrays:
    """Reads a SuperSplat / PlayCanvas compressed PLY (see the module doc for the decoding).

    Args:
        path: the file.
        non_finite: "error" refuses a file with invalid decoded values (possible only through
            non-finite chunk bounds), "drop" leaves those splats out (see
            :func:`engine.io.gaussian_arrays.validate_gaussians`).

    Returns:
        float32 Gaussians in the standard units (log-scales, opacity logits, wxyz quaternions as the
        file's rot_0..3), SH degree from the ``sh`` element (0 without it), no normals.

    Raises:
        PlyFormatError: a missing element or property, a property of the wrong type, or a chunk count
            that does not match ceil(splats / 256).
    """
    check_non_finite_policy(non_finite)
    header, elements = read_ply(path, elements=("chunk", "vertex", "sh"))
    for name in ("chunk", "vertex"):
        if name not in elements:
            raise PlyFormatError(f"compressed PLY without a {name!r} element", path)
    chunk, vertex = elements["chunk"], elements["vertex"]
    _check_types(chunk, _CHUNK_BOUNDS, "f4", "float", "chunk", path)
    has_colors = "min_r" in chunk.dtype.names
    if has_colors:
        _check_types(chunk, _CHUNK_COLORS, "f4", "float", "chunk", path)
    _check_types(vertex, _PACKED, "u4", "uint", "vertex", path)
    count = len(vertex)
    if len(chunk) != math.ceil(count / CHUNK_SIZE):
        raise PlyFormatError(
            f"compressed PLY: {len(chunk)} chunks for {count} splats; the format has one chunk per "
            f"{CHUNK_SIZE} splats ({math.ceil(count / CHUNK_SIZE)})",
            path,
        )
    which_chunk = np.arange(count) // CHUNK_SIZE

    def bound(name: str) -> np.ndarray:
        return chunk[name].astype(np.float64)[which_chunk]

    with np.errstate(invalid="ignore", over="ignore"):
        packed = vertex["packed_position"]
        means = np.stack(
            [
                _lerp(bound(f"min_{axis}"), bound(f"max_{axis}"), _unorm(packed, shift, bits))
                for axis, shift, bits in (("x", 21, 11), ("y", 11, 10), ("z", 0, 11))
            ],
            axis=1,
        )
        packed = vertex["packed_scale"]
        scale = np.stack(
            [
                _lerp(bound(f"min_scale_{axis}"), bound(f"max_scale_{axis}"), _unorm(packed, shift, bits))
                for axis, shift, bits in (("x", 21, 11), ("y", 11, 10), ("z", 0, 11))
            ],
            axis=1,
        )
        packed = vertex["packed_color"]
        color = np.stack([_unorm(packed, shift, 8) for shift in (24, 16, 8)], axis=1)
        if has_colors:
            for channel, name in enumerate("rgb"):
                color[:, channel] = _lerp(bound(f"min_{name}"), bound(f"max_{name}"), color[:, channel])
        alpha = np.clip(_unorm(packed, 0, 8), _ALPHA_EDGE, 1.0 - _ALPHA_EDGE)
        opacity = np.log(alpha) - np.log1p(-alpha)

    packed = vertex["packed_rotation"]
    others = np.stack([(_unorm(packed, shift, 10) - 0.5) * math.sqrt(2.0) for shift in (20, 10, 0)], axis=1)
    largest = (packed >> np.uint32(30)).astype(np.int64)
    rot = np.empty((count, 4), dtype=np.float64)
    rows = np.arange(count)
    rot[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - (others**2).sum(axis=1)))
    # The three others fill the remaining slots in order: slot k of (0..3 without `largest`).
    slots = np.array([[j for j in range(4) if j != skip] for skip in range(4)])[largest]
    for k in range(3):
        rot[rows, slots[:, k]] = others[:, k]

    degree = 0
    f_rest = np.zeros((count, 0, 3), dtype=np.float32)
    if "sh" in elements:
        sh = elements["sh"]
        if len(sh) != count:
            raise PlyFormatError(f"compressed PLY: the 'sh' element has {len(sh)} rows for {count} splats", path)
        try:
            degree = sh_degree_from_f_rest(len(sh.dtype.names))
        except ValueError as error:
            raise PlyFormatError(f"compressed PLY 'sh' element: {error}", path) from None
        names = [f"f_rest_{i}" for i in range(num_f_rest(degree))]
        _check_types(sh, names, "u1", "uchar", "sh", path)
        codes = np.stack([sh[name] for name in names], axis=1)
        per_channel = num_f_rest(degree) // 3
        f_rest = _SH_TABLE[codes].reshape(count, 3, per_channel).transpose(0, 2, 1)

    gaussians = GaussianArrays(
        means=means,
        f_dc=(color - 0.5) / SH_C0,
        f_rest=f_rest,
        opacity=opacity,
        scale=scale,
        rot=rot,
    )
    return validate_gaussians(gaussians, non_finite, path)


def morton_order(means: np.ndarray) -> np.ndarray:
    """Indices that sort (N, 3) positions along a 3D Morton (Z-order) curve of 10 bits per axis."""
    if len(means) == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = means.min(axis=0), means.max(axis=0)
    extent = np.where(high > low, high - low, 1.0)
    cells = np.clip(((means - low) / extent * 1023.0).astype(np.int64), 0, 1023)
    code = np.zeros(len(means), dtype=np.int64)
    for bit in range(10):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + (2 - axis))
    return np.argsort(code, kind="stable")


def _quantise(values: np.ndarray, low: np.ndarray, high: np.ndarray, bits: int) -> np.ndarray:
    """Fractions of [low, high] (per row) as unsigned integers of ``bits`` bits (0 where low == high)."""
    span = high - low
    t = np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.0)
    return np.rint(np.clip(t, 0.0, 1.0) * ((1 << bits) - 1)).astype(np.uint32)


def write_compressed_ply(
    path: PathLike, gaussians: GaussianArrays, *, non_finite: str = "error", comments: Sequence[str] = ()
) -> int:
    """Writes a SuperSplat / PlayCanvas compressed PLY (with chunk colours), atomically.

    Splats are reordered along a Morton curve (see the module doc). Quantisation: positions and
    log-scales to 11/10/11 bits of their chunk's range, colours to 8 bits of the chunk's range, opacity
    to 8 bits, rotations to 10 bits per component, SH to 8 bits of [-4, 4]; f_rest beyond degree 3
    does not exist in the format (the degree is kept).

    Args:
        non_finite: "error" refuses invalid Gaussians (NaN, inf, out-of-range log-scales); "drop" leaves
            them out.

    Returns:
        How many Gaussians were left out as invalid (always 0 with "error").
    """
    gaussians = validate_gaussians(gaussians, non_finite, path)
    order = morton_order(gaussians.means.astype(np.float64))
    g = gaussians.select(order) if len(order) else gaussians
    count = len(g)
    num_chunks = math.ceil(count / CHUNK_SIZE)
    which_chunk = np.arange(count) // CHUNK_SIZE

    def chunk_range(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        padded = np.full((num_chunks * CHUNK_SIZE, values.shape[1]), np.nan)
        padded[:count] = values
        blocks = padded.reshape(num_chunks, CHUNK_SIZE, values.shape[1])
        return np.nanmin(blocks, axis=1), np.nanmax(blocks, axis=1)

    means = g.means.astype(np.float64)
    scale = g.scale.astype(np.float64)
    color = g.f_dc.astype(np.float64) * SH_C0 + 0.5
    chunk_fields = [(name, "<f4") for name in _CHUNK_BOUNDS + _CHUNK_COLORS]
    chunk = np.zeros(num_chunks, dtype=chunk_fields)
    packed_fields = {}
    for values, prefix, key in ((means, "", "packed_position"), (scale, "scale_", "packed_scale")):
        if count:
            low, high = chunk_range(values)
            # The file stores float32 bounds: quantise against those, so decoding sees the same range.
            low, high = low.astype(np.float32).astype(np.float64), high.astype(np.float32).astype(np.float64)
        else:
            low = high = np.zeros((0, 3))
        for axis, name in enumerate("xyz"):
            chunk[f"min_{prefix}{name}"] = low[:, axis]
            chunk[f"max_{prefix}{name}"] = high[:, axis]
        fields = [
            _quantise(values[:, axis], low[which_chunk, axis], high[which_chunk, axis], bits)
            for axis, bits in ((0, 11), (1, 10), (2, 11))
        ]
        packed_fields[key] = (fields[0] << np.uint32(21)) | (fields[1] << np.uint32(11)) | fields[2]

    if count:
        low, high = chunk_range(color)
        low, high = low.astype(np.float32).astype(np.float64), high.astype(np.float32).astype(np.float64)
    else:
        low = high = np.zeros((0, 3))
    for channel, name in enumerate("rgb"):
        chunk[f"min_{name}"] = low[:, channel]
        chunk[f"max_{name}"] = high[:, channel]
    rgb = [_quantise(color[:, c], low[which_chunk, c], high[which_chunk, c], 8) for c in range(3)]
    alpha = 1.0 / (1.0 + np.exp(-g.opacity.astype(np.float64)))
    alpha_code = np.rint(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint32)
    packed_fields["packed_color"] = (
        (rgb[0] << np.uint32(24)) | (rgb[1] << np.uint32(16)) | (rgb[2] << np.uint32(8)) | alpha_code
    )

    rot = g.rot.astype(np.float64)
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    rot = np.where(norm > 0, rot / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    largest = np.argmax(np.abs(rot), axis=1)
    rows = np.arange(count)
    rot = rot * np.where(rot[rows, largest] < 0, -1.0, 1.0)[:, None]
    slots = np.array([[j for j in range(4) if j != skip] for skip in range(4)])[largest]
    code = largest.astype(np.uint32) << np.uint32(30)
    for k, shift in enumerate((20, 10, 0)):
        u = rot[rows, slots[:, k]] / math.sqrt(2.0) + 0.5
        code |= np.rint(np.clip(u, 0.0, 1.0) * 1023.0).astype(np.uint32) << np.uint32(shift)
    packed_fields["packed_rotation"] = code

    vertex = np.empty(count, dtype=[(name, "<u4") for name in _PACKED])
    for name in _PACKED:
        vertex[name] = packed_fields[name]
    elements = [("chunk", chunk), ("vertex", vertex)]
    if g.sh_degree > 0:
        per_channel = g.f_rest.shape[1]
        channel_major = g.f_rest.astype(np.float64).transpose(0, 2, 1).reshape(count, 3 * per_channel)
        codes = np.clip(np.floor((channel_major / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8)
        sh = np.empty(count, dtype=[(f"f_rest_{i}", "u1") for i in range(3 * per_channel)])
        for i in range(3 * per_channel):
            sh[f"f_rest_{i}"] = codes[:, i]
        elements.append(("sh", sh))
    write_ply(path, elements, comments=comments)
    return gaussians.dropped_non_finite
