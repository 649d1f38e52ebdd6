"""Splat exchange formats: compressed PLY, .splat, .spz - decoding by the specs, round trips, refusals.

Known-value tests pack bytes by hand from the format descriptions (independent of our writers); round
trips over generated Gaussians check every value within the format's own quantisation step.
"""

import gzip
import math
import struct

import numpy as np
import pytest
from cases import CASES
from plyfile import PlyData, PlyElement

from engine.io import (
    GaussianArrays,
    InvalidValuesError,
    PlyFormatError,
    SplatFormatError,
    SpzFormatError,
    detect_format,
    read_compressed_ply,
    read_gaussian_ply,
    read_gaussians,
    read_scene_file,
    read_splat,
    read_spz,
    write_gaussian_ply,
    write_gaussians,
    write_splat,
    write_spz,
)
from engine.io.compressed_ply import morton_order

SH_C0 = 0.28209479177387814


def random_gaussians(n, degree, seed=0, extent=5.0):
    rng = np.random.default_rng(seed)
    return GaussianArrays(
        means=rng.uniform(-extent, extent, (n, 3)),
        f_dc=rng.uniform(-1.5, 1.5, (n, 3)),
        f_rest=rng.uniform(-0.9, 0.9, (n, (degree + 1) ** 2 - 1, 3)),
        opacity=rng.normal(0.0, 2.5, n),
        scale=rng.uniform(-7.0, -0.5, (n, 3)),
        rot=rng.normal(size=(n, 4)),
    )


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def rotation_angle_deg(q1, q2):
    """Angle between the rotations of two (N, 4) quaternion sets (sign-insensitive), degrees."""
    a = q1 / np.linalg.norm(q1, axis=1, keepdims=True)
    b = q2 / np.linalg.norm(q2, axis=1, keepdims=True)
    return np.degrees(2 * np.arccos(np.clip(np.abs((a * b).sum(axis=1)), 0.0, 1.0)))


# ---------------------------------------------------------------- compressed PLY


def pack_111011(x, y, z):
    return (x << 21) | (y << 11) | z


def write_compressed_by_hand(path, chunk_rows, vertex_rows, sh_rows=None, chunk_colors=True):
    bounds = ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z"]
    bounds += [f"{m}_scale_{a}" for m in ("min", "max") for a in "xyz"]
    if chunk_colors:
        bounds += ["min_r", "min_g", "min_b", "max_r", "max_g", "max_b"]
    chunk = np.array([tuple(row) for row in chunk_rows], dtype=[(name, "<f4") for name in bounds])
    vertex = np.array(
        [tuple(row) for row in vertex_rows],
        dtype=[(n, "<u4") for n in ("packed_position", "packed_rotation", "packed_scale", "packed_color")],
    )
    elements = [PlyElement.describe(chunk, "chunk"), PlyElement.describe(vertex, "vertex")]
    if sh_rows is not None:
        sh = np.array([tuple(row) for row in sh_rows], dtype=[(f"f_rest_{i}", "u1") for i in range(len(sh_rows[0]))])
        elements.append(PlyElement.describe(sh, "sh"))
    PlyData(elements).write(str(path))
    return path


@pytest.mark.parametrize("chunk_colors", [True, False])
def test_compressed_ply_decodes_known_bit_patterns(tmp_path, chunk_colors):
    chunk = (-1.0, 0.0, 2.0, 3.0, 4.0, 6.0, -5.0, -6.0, -7.0, -1.0, -2.0, -3.0)
    if chunk_colors:
        chunk += (0.0, 0.2, 0.4, 1.0, 0.6, 0.8)
    half = int(0.5 * 1023)
    rows = [
        # position: x at max, y at min, z at 1023/2047 of its range; scale the other way round
        (
            pack_111011(2047, 0, 1023),
            (3 << 30) | (half << 20) | (half << 10) | half,
            pack_111011(0, 1023, 2047),
            (255 << 24) | (0 << 16) | (51 << 8) | 255,
        ),
        # rotation: largest is rot_1, others (rot_0, rot_2, rot_3) = 1/sqrt(2) - 1/sqrt(2)/1023 * k
        (0, (1 << 30) | (1023 << 20) | (0 << 10) | half, 0, (128 << 24) | (128 << 16) | (128 << 8) | 0),
    ]
    sh = [[0, 255, 127, 128, 1, 254, 64, 192, 200], [128] * 9]
    path = write_compressed_by_hand(tmp_path / "k.compressed.ply", [chunk], rows, sh, chunk_colors)
    g = read_gaussians(path)
    assert detect_format(path) == "compressed-ply" and len(g) == 2 and g.sh_degree == 1
    np.testing.assert_allclose(g.means[0], [3.0, 0.0, 2.0 + 4.0 * 1023 / 2047], rtol=1e-6)
    np.testing.assert_allclose(g.means[1], [-1.0, 0.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(g.scale[0], [-5.0, -2.0, -3.0], rtol=1e-6)
    # colour: byte / 255, mapped into the chunk's colour range when the chunk has one
    rgb = np.array([255, 0, 51]) / 255
    if chunk_colors:
        rgb = np.array([0.0, 0.2, 0.4]) * (1 - rgb) + np.array([1.0, 0.6, 0.8]) * rgb
    np.testing.assert_allclose(g.f_dc[0], (rgb - 0.5) / SH_C0, rtol=1e-5, atol=1e-6)
    # alpha 255 and 0 are the edges of their quantisation step, not infinite logits
    np.testing.assert_allclose(sigmoid(g.opacity), [1 - 0.5 / 255, 0.5 / 255], rtol=1e-6)
    small = (half / 1023 - 0.5) * math.sqrt(2)
    np.testing.assert_allclose(g.rot[0], [small, small, small, math.sqrt(1 - 3 * small**2)], rtol=1e-5, atol=1e-7)
    big = (1.0 - 0.5) * math.sqrt(2)
    np.testing.assert_allclose(
        g.rot[1], [big, math.sqrt(max(0, 1 - big**2 - big**2 - small**2)), -big, small], rtol=1e-5, atol=1e-6
    )
    # SH bytes: 0 -> -4, 255 -> +4, else ((b + 0.5) / 256 - 0.5) * 8; file order is channel-major
    codes = np.array(sh[0], dtype=np.float64)
    expected = np.where(codes == 0, -4.0, np.where(codes == 255, 4.0, ((codes + 0.5) / 256 - 0.5) * 8))
    np.testing.assert_allclose(g.f_rest[0], expected.reshape(3, 3).T, rtol=1e-6)


def test_compressed_ply_case_file_reads_as_splats_everywhere():
    path = CASES / "compressed-ply" / "splats.compressed.ply"
    for reader in (read_gaussians, read_gaussian_ply, read_compressed_ply, read_scene_file):
        g = reader(path)
        assert isinstance(g, GaussianArrays) and len(g) == 300 and g.sh_degree == 1
        assert np.all(np.isfinite(g.property_columns()))
    # Values stay inside the chunk bounds the file declares.
    chunk = PlyData.read(str(path))["chunk"].data
    lows = np.array([chunk["min_x"], chunk["min_y"], chunk["min_z"]]).T.repeat(256, axis=0)[:300]
    highs = np.array([chunk["max_x"], chunk["max_y"], chunk["max_z"]]).T.repeat(256, axis=0)[:300]
    assert np.all(g.means >= lows - 1e-5) and np.all(g.means <= highs + 1e-5)
    np.testing.assert_allclose(np.linalg.norm(g.rot, axis=1), 1.0, atol=2e-3)


def test_compressed_ply_case_file_survives_conversion_to_standard_ply(tmp_path):
    g = read_gaussians(CASES / "compressed-ply" / "splats.compressed.ply")
    write_gaussian_ply(tmp_path / "s.ply", g)
    back = read_gaussians(tmp_path / "s.ply")
    assert np.array_equal(back.property_columns()[:, 6:], g.property_columns()[:, 6:])


def chunk_tolerance(path, count, prefix, bits):
    """Per-splat, per-axis half quantisation step of a compressed PLY written by us."""
    chunk = PlyData.read(str(path))["chunk"].data
    span = np.array([chunk[f"max_{prefix}{a}"] - chunk[f"min_{prefix}{a}"] for a in "xyz"]).T
    steps = span / (2.0 ** np.array(bits) - 1)
    return steps.repeat(256, axis=0)[:count] * 0.5 + 1e-5


@pytest.mark.parametrize("n, degree, seed", [(1, 0, 1), (255, 1, 2), (257, 2, 3), (700, 3, 4), (1024, 1, 5)])
def test_compressed_ply_round_trip_within_quantisation(tmp_path, n, degree, seed):
    g = random_gaussians(n, degree, seed)
    path = tmp_path / "g.compressed.ply"
    assert write_gaussians(path, g) == 0
    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["chunk", "vertex"] + (["sh"] if degree else [])
    assert len(ply["chunk"].data) == math.ceil(n / 256) and len(ply["chunk"].properties) == 18
    assert {p.val_dtype for p in ply["vertex"].properties} == {"u4"}
    back = read_gaussians(path)
    s = g.select(morton_order(g.means.astype(np.float64)))  # the writer's order
    assert len(back) == n and back.sh_degree == degree
    assert np.all(np.abs(back.means - s.means) <= chunk_tolerance(path, n, "", (11, 10, 11)))
    assert np.all(np.abs(back.scale - s.scale) <= chunk_tolerance(path, n, "scale_", (11, 10, 11)))
    assert np.abs(sigmoid(back.opacity) - sigmoid(s.opacity)).max() <= 0.5 / 255 + 1e-6
    colour_step = np.array([ply["chunk"].data[f"max_{c}"] - ply["chunk"].data[f"min_{c}"] for c in "rgb"]).T / 255
    colour_tol = colour_step.repeat(256, axis=0)[:n] * 0.5 + 1e-6
    assert np.all(np.abs((back.f_dc - s.f_dc) * SH_C0) <= colour_tol)
    assert rotation_angle_deg(back.rot, s.rot).max() < 0.4  # 10 bits per component
    assert np.all(np.abs(back.f_rest - s.f_rest) <= 8 / 256 / 2 + 1e-6)


def test_compressed_ply_wrong_chunk_count_and_types_are_named(tmp_path):
    chunk = (0.0,) * 12
    path = write_compressed_by_hand(tmp_path / "a.ply", [chunk, chunk], [(0, 0, 0, 0)], chunk_colors=False)
    with pytest.raises(PlyFormatError, match=r"2 chunks for 1 splats; the format has one chunk per 256 splats \(1\)"):
        read_gaussians(path)
    rows = np.zeros(
        1, dtype=[(n, "<f4") for n in ("packed_position", "packed_rotation", "packed_scale", "packed_color")]
    )
    bounds = np.zeros(
        1,
        dtype=[(n, "<f4") for n in ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z")]
        + [(f"{m}_scale_{a}", "<f4") for m in ("min", "max") for a in "xyz"],
    )
    PlyData([PlyElement.describe(bounds, "chunk"), PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "b.ply"))
    with pytest.raises(PlyFormatError, match=r"property 'packed_position' of element 'vertex' is float32.*uint"):
        read_gaussians(tmp_path / "b.ply")


# ---------------------------------------------------------------- .splat


def splat_record(position, scale, rgba, rot_bytes):
    return struct.pack("<3f3f4B4B", *position, *scale, *rgba, *rot_bytes)


def test_splat_decodes_known_records(tmp_path):
    path = tmp_path / "k.splat"
    path.write_bytes(
        splat_record((1, -2, 3.5), (0.5, 1.0, 2.0), (255, 0, 128, 64), (255, 128, 128, 128))
        + splat_record((0, 0, 0), (1e-3, 1e-3, 1e-3), (10, 20, 30, 255), (128, 0, 128, 255))
    )
    g = read_gaussians(path)
    assert detect_format(path) == "splat" and len(g) == 2 and g.sh_degree == 0
    np.testing.assert_allclose(g.means[0], [1, -2, 3.5])
    np.testing.assert_allclose(g.scale[0], np.log([0.5, 1.0, 2.0]), atol=1e-7)
    np.testing.assert_allclose(g.f_dc[0], (np.array([255, 0, 128]) / 255 - 0.5) / SH_C0, rtol=1e-6)
    np.testing.assert_allclose(sigmoid(g.opacity), [64 / 255, 1 - 0.5 / 255], rtol=1e-6)
    np.testing.assert_allclose(g.rot[0], [127 / 128, 0, 0, 0])
    np.testing.assert_allclose(g.rot[1], [0, -1, 0, 127 / 128])


@pytest.mark.parametrize("n, seed", [(1, 0), (33, 1), (500, 2)])
def test_splat_round_trip_within_quantisation(tmp_path, n, seed):
    g = random_gaussians(n, 2, seed)
    path = tmp_path / "g.splat"
    write_splat(path, g)
    assert path.stat().st_size == 32 * n
    back = read_splat(path)
    # The writer sorts by size x opacity; match rows back by position (stored as exact float32).
    order = np.lexsort(g.means.T[::-1])
    back_order = np.lexsort(back.means.T[::-1])
    s, b = g.select(order), back.select(back_order)
    assert np.array_equal(s.means, b.means) and b.sh_degree == 0
    np.testing.assert_allclose(b.scale, s.scale, atol=1e-6)
    assert np.abs(sigmoid(b.opacity) - sigmoid(s.opacity)).max() <= 0.5 / 255 + 1e-6
    colour = np.clip(0.5 + SH_C0 * s.f_dc, 0, 1)
    assert np.abs((0.5 + SH_C0 * b.f_dc) - colour).max() <= 0.5 / 255 + 1e-6
    assert rotation_angle_deg(b.rot, s.rot).max() < 1.5  # 8 bits per component


def test_splat_refusals(tmp_path):
    path = tmp_path / "bad.splat"
    path.write_bytes(bytes(33))
    with pytest.raises(SplatFormatError, match=r"size \(33 bytes\) is not a multiple of the 32-byte"):
        read_gaussians(path)
    path.write_bytes(splat_record((0, 0, 0), (0.0, 1, 1), (0, 0, 0, 9), (200, 128, 128, 128)) * 2)
    with pytest.raises(InvalidValuesError, match=r"2 of 2 splats .* in: scale_0"):
        read_gaussians(path)


# ---------------------------------------------------------------- .spz


def spz_bytes(version, count, degree, fractional_bits, sections, flags=0):
    header = struct.pack("<IIIBBBB", 0x5053474E, version, count, degree, fractional_bits, flags, 0)
    return gzip.compress(header + b"".join(sections))


def fixed24(values, fractional_bits):
    out = b""
    for v in values:
        out += (int(round(v * (1 << fractional_bits))) & 0xFFFFFF).to_bytes(3, "little")
    return out


def smallest_three(xyzw):
    """Encodes one (x, y, z, w) unit quaternion as the v3 uint32, bit by bit (pure Python)."""
    largest = max(range(4), key=lambda i: abs(xyzw[i]))
    negate = xyzw[largest] < 0
    comp = largest
    for i in range(4):
        if i != largest:
            sign = int((xyzw[i] < 0) != negate)
            comp = (comp << 10) | (sign << 9) | int(511 * abs(xyzw[i]) / math.sqrt(0.5) + 0.5)
    return comp.to_bytes(4, "little")


@pytest.mark.parametrize("version", [2, 3])
def test_spz_decodes_known_streams(tmp_path, version):
    q = np.array([0.1, -0.2, 0.3, 0.9])  # x y z w
    q /= np.linalg.norm(q)
    rot = smallest_three(q) if version == 3 else bytes(int(round(c * 127.5 + 127.5)) for c in q[:3] * np.sign(q[3]))
    sh = bytes([0, 64, 128, 192, 255, 100, 10, 20, 30])  # degree 1: 3 coefficients x RGB
    data = spz_bytes(
        version,
        1,
        1,
        10,
        [fixed24((1.5, -2.25, 100.0), 10), bytes([191]), bytes([0, 128, 255]), bytes([0, 160, 255]), rot, sh],
    )
    path = tmp_path / "k.spz"
    path.write_bytes(data)
    g = read_gaussians(path)
    assert detect_format(path) == "spz" and len(g) == 1 and g.sh_degree == 1
    np.testing.assert_allclose(g.means[0], [1.5, -2.25, 100.0])  # axes as stored (as the reference tools)
    np.testing.assert_allclose(sigmoid(g.opacity), [191 / 255], rtol=1e-6)
    np.testing.assert_allclose(g.f_dc[0], (np.array([0, 128, 255]) / 255 - 0.5) / 0.15, rtol=1e-6)
    np.testing.assert_allclose(g.scale[0], np.array([0, 160, 255]) / 16 - 10)
    expected_q = np.array([q[3], q[0], q[1], q[2]])
    assert rotation_angle_deg(g.rot, expected_q[None]).max() < (0.3 if version == 3 else 1.0)
    raw = (np.frombuffer(sh, np.uint8).astype(np.float64) - 128) / 128
    np.testing.assert_allclose(g.f_rest[0], raw.reshape(3, 3), rtol=1e-6)


def test_spz_version_1_float16_positions(tmp_path):
    positions = np.array([0.5, -1.25, 3.0], dtype="<f2").tobytes()
    data = spz_bytes(1, 1, 0, 0, [positions, bytes([128]), bytes([128] * 3), bytes([96] * 3), bytes([127, 127, 127])])
    (tmp_path / "v1.spz").write_bytes(data)
    g = read_spz(tmp_path / "v1.spz")
    np.testing.assert_allclose(g.means[0], [0.5, -1.25, 3.0])


@pytest.mark.parametrize(
    "n, degree, seed, extent", [(1, 0, 0, 1.0), (50, 1, 1, 5.0), (400, 3, 2, 30.0), (20, 2, 3, 5000.0)]
)
def test_spz_round_trip_within_quantisation(tmp_path, n, degree, seed, extent):
    g = random_gaussians(n, degree, seed, extent)
    path = tmp_path / "g.spz"
    assert write_gaussians(path, g) == 0
    back = read_gaussians(path)
    fractional_bits = gzip.decompress(path.read_bytes())[13]
    assert fractional_bits == (12 if extent < 2048 else 10)
    assert np.abs(back.means - g.means).max() <= 0.5 / (1 << fractional_bits) + 1e-6 * extent
    assert np.abs(back.scale - g.scale).max() <= 1 / 32 + 1e-6
    assert np.abs(sigmoid(back.opacity) - sigmoid(g.opacity)).max() <= 0.5 / 255 + 1e-6
    assert np.abs(back.f_dc - g.f_dc).max() <= 0.5 / (0.15 * 255) + 1e-6
    assert rotation_angle_deg(back.rot, g.rot).max() < 0.5
    assert np.all(np.abs(back.f_rest - g.f_rest) <= 0.5 / 128 + 1e-6)
    # Independently decode the first splat's raw position (24-bit fixed point, axes as given).
    raw = gzip.decompress(path.read_bytes())[16 : 16 + 9]
    stored = [int.from_bytes(raw[i : i + 3], "little", signed=True) / (1 << fractional_bits) for i in (0, 3, 6)]
    np.testing.assert_allclose(stored, g.means[0], atol=1 / (1 << fractional_bits))


def test_spz_refusals(tmp_path):
    path = tmp_path / "x.spz"
    path.write_bytes(b"NGSP" + bytes(28))
    with pytest.raises(SpzFormatError, match=r"SPZ version 4 .* not supported yet"):
        read_spz(path)
    path.write_bytes(b"hello, not gzip")
    with pytest.raises(SpzFormatError, match=r"not an \.spz file \(it is not gzip-compressed\)"):
        read_spz(path)
    path.write_bytes(spz_bytes(3, 10, 0, 12, [bytes(20)]))
    with pytest.raises(SpzFormatError, match=r"truncated data: 10 splats of SH degree 0 need"):
        read_spz(path)
    path.write_bytes(spz_bytes(7, 0, 0, 12, []))
    with pytest.raises(SpzFormatError, match=r"unsupported SPZ version 7"):
        read_spz(path)
    path.write_bytes(gzip.compress(struct.pack("<IIIBBBB", 0x12345678, 2, 0, 0, 12, 0, 0)))
    with pytest.raises(SpzFormatError, match=r"wrong magic number 0x12345678"):
        read_spz(path)
    path.write_bytes(spz_bytes(3, 0, 0, 12, [], flags=2))
    with pytest.raises(SpzFormatError, match=r"extension records are not supported"):
        read_spz(path)


# ---------------------------------------------------------------- invalid values in every format


@pytest.mark.parametrize("suffix", [".ply", ".compressed.ply", ".spz"])
def test_invalid_values_are_refused_or_skipped_in_every_writer_and_reader(tmp_path, suffix):
    g = random_gaussians(6, 1, 7)
    g.means[2, 1] = np.nan
    g.scale[4, 0] = -np.inf
    with pytest.raises(InvalidValuesError, match=r"2 of 6 splats have invalid values"):
        write_gaussians(tmp_path / f"a{suffix}", g)
    assert write_gaussians(tmp_path / f"a{suffix}", g, non_finite="drop") == 2
    assert len(read_gaussians(tmp_path / f"a{suffix}")) == 4


@pytest.mark.parametrize("name, bad", [("nan_xyz.ply", 3), ("neginf_scale.ply", 2)])
def test_non_finite_case_files(name, bad):
    path = CASES / "non-finite-splats" / name
    with pytest.raises(InvalidValuesError) as info:
        read_scene_file(path)
    assert (info.value.count, info.value.total) == (bad, 10)
    g = read_scene_file(path, non_finite="drop")
    assert len(g) == 10 - bad and g.dropped_non_finite == bad
    assert np.all(np.isfinite(g.property_columns())) and np.all(np.abs(g.scale) <= 40)


@pytest.mark.parametrize("encoding", ["float", "double", "ascii"])
@pytest.mark.parametrize(
    "prop, value",
    [
        ("opacity", np.inf),
        ("f_rest_3", np.nan),
        ("rot_2", np.nan),
        ("z", -np.inf),
        ("scale_2", 50.0),
        ("f_dc_1", -np.inf),
    ],
)
def test_invalid_splat_members_are_counted_and_skipped(tmp_path, encoding, prop, value):
    g = random_gaussians(8, 1, 11)
    write_gaussian_ply(tmp_path / "std.ply", g)
    data = PlyData.read(str(tmp_path / "std.ply"))["vertex"].data
    rows = data.astype([(name, "<f8" if encoding == "double" else "<f4") for name in data.dtype.names])
    rows[prop][[1, 6]] = value
    path = tmp_path / "bad.ply"
    PlyData([PlyElement.describe(rows, "vertex")], text=encoding == "ascii").write(str(path))
    with pytest.raises(InvalidValuesError, match=rf"2 of 8 splats have invalid values .* in: {prop}$"):
        read_scene_file(path)
    kept = read_scene_file(path, non_finite="drop")
    assert len(kept) == 6 and kept.dropped_non_finite == 2
    np.testing.assert_allclose(kept.means, g.means[[0, 2, 3, 4, 5, 7]], rtol=1e-6)


def test_spz_reads_only_what_the_header_claims(tmp_path):
    """Bytes after the splats in the stream (padding, or a stream far larger than claimed) are not inflated."""
    g = random_gaussians(3, 1, 5)
    write_spz(tmp_path / "g.spz", g)
    data = gzip.decompress((tmp_path / "g.spz").read_bytes())
    (tmp_path / "padded.spz").write_bytes(gzip.compress(data + bytes(50_000_000), compresslevel=1))
    back = read_spz(tmp_path / "padded.spz")
    assert len(back) == 3
    np.testing.assert_array_equal(back.means, read_spz(tmp_path / "g.spz").means)
