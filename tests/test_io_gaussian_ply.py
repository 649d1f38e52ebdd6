"""Standard 3DGS PLY: exact round trips, interop with plyfile, other tools' layouts, and every error."""

import re
import subprocess
import sys

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from engine.io import (
    GaussianArrays,
    InvalidValuesError,
    PlyFormatError,
    gaussian_property_names,
    read_gaussian_ply,
    read_ply,
    write_gaussian_ply,
)


def random_gaussians(n=7, degree=2, seed=0, normals=False):
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2 - 1
    return GaussianArrays(
        means=rng.standard_normal((n, 3)),
        f_dc=rng.standard_normal((n, 3)),
        f_rest=rng.standard_normal((n, k, 3)),
        opacity=rng.standard_normal(n),
        scale=rng.standard_normal((n, 3)) - 3,
        rot=rng.standard_normal((n, 4)),
        normals=rng.standard_normal((n, 3)) if normals else None,
    )


FIELDS = ("means", "f_dc", "f_rest", "opacity", "scale", "rot")


def assert_same_gaussians(a: GaussianArrays, b: GaussianArrays):
    assert len(a) == len(b)
    assert a.sh_degree == b.sh_degree
    for name in FIELDS:
        # Bit-exact: compare the raw float32 bits, not values within a tolerance.
        assert np.array_equal(getattr(a, name).view(np.uint32), getattr(b, name).view(np.uint32)), name


def standard_rows(g: GaussianArrays, dtype="<f4", order=None, extra=None):
    """The Gaussians as a structured array for plyfile, in standard or a given property order."""
    names = order or gaussian_property_names(g.sh_degree)
    block = dict(zip(gaussian_property_names(g.sh_degree), g.property_columns().T))
    fields = [(name, dtype) for name in names] + [(name, values.dtype.str) for name, values in (extra or {}).items()]
    rows = np.empty(len(g), dtype=fields)
    for name in names:
        rows[name] = block[name]
    for name, values in (extra or {}).items():
        rows[name] = values
    return rows


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_bit_exact_for_every_degree(tmp_path, degree):
    g = random_gaussians(degree=degree)
    path = tmp_path / "g.ply"
    assert write_gaussian_ply(path, g) == 0
    back = read_gaussian_ply(path)
    assert_same_gaussians(g, back)
    assert back.sh_degree == degree
    assert back.dropped_non_finite == 0
    assert np.array_equal(back.normals, np.zeros((len(g), 3), np.float32))
    # The header is exactly the standard one: binary little-endian, float, standard order.
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header
    props = re.findall(r"property (\w+) (\w+)", header)
    assert [name for _, name in props] == gaussian_property_names(degree)
    assert {kind for kind, _ in props} == {"float"}
    assert path.stat().st_size == len(header) + len("end_header\n") + len(g) * 4 * len(props)


def test_round_trip_keeps_normals_and_subnormal_and_extreme_values(tmp_path):
    g = random_gaussians(n=4, degree=1, normals=True)
    special = np.array(
        [np.finfo(np.float32).tiny / 8, -0.0, np.finfo(np.float32).max, -np.finfo(np.float32).min], np.float32
    )
    g.opacity[:] = special
    write_gaussian_ply(tmp_path / "g.ply", g)
    back = read_gaussian_ply(tmp_path / "g.ply")
    assert_same_gaussians(g, back)
    assert np.array_equal(back.normals, g.normals)
    assert np.signbit(back.opacity[1])


def test_empty_file_round_trips(tmp_path):
    g = random_gaussians(n=0, degree=3)
    write_gaussian_ply(tmp_path / "g.ply", g)
    back = read_gaussian_ply(tmp_path / "g.ply")
    assert len(back) == 0 and back.sh_degree == 3 and back.f_rest.shape == (0, 15, 3)


def test_plyfile_sees_standard_names_order_and_values(tmp_path):
    g = random_gaussians(n=5, degree=3)
    write_gaussian_ply(tmp_path / "g.ply", g, comments=["made by a test"])
    data = PlyData.read(str(tmp_path / "g.ply"))
    assert not data.text and data.byte_order == "<"
    assert "made by a test" in data.comments
    vertex = data["vertex"]
    assert [p.name for p in vertex.properties] == gaussian_property_names(3)
    assert all(vertex[p.name].dtype == np.dtype("<f4") for p in vertex.properties)
    assert np.array_equal(vertex["x"], g.means[:, 0])
    assert np.array_equal(vertex["z"], g.means[:, 2])
    assert np.array_equal(vertex["f_dc_1"], g.f_dc[:, 1])
    assert np.array_equal(vertex["opacity"], g.opacity)
    assert np.array_equal(vertex["scale_2"], g.scale[:, 2])
    assert np.array_equal(vertex["rot_0"], g.rot[:, 0])  # w first
    # Channel-major f_rest: 15 red coefficients, then 15 green, then 15 blue.
    assert np.array_equal(vertex["f_rest_0"], g.f_rest[:, 0, 0])
    assert np.array_equal(vertex["f_rest_14"], g.f_rest[:, 14, 0])
    assert np.array_equal(vertex["f_rest_15"], g.f_rest[:, 0, 1])
    assert np.array_equal(vertex["f_rest_44"], g.f_rest[:, 14, 2])


@pytest.mark.parametrize("text, byte_order", [(True, "="), (False, ">")])
def test_reads_plyfile_ascii_and_big_endian(tmp_path, text, byte_order):
    g = random_gaussians(n=6, degree=1, normals=True)
    path = tmp_path / "other.ply"
    PlyData([PlyElement.describe(standard_rows(g), "vertex")], text=text, byte_order=byte_order).write(str(path))
    assert path.read_bytes().startswith(b"ply\nformat " + (b"ascii" if text else b"binary_big_endian"))
    back = read_gaussian_ply(path)
    assert_same_gaussians(g, back)  # plyfile prints float32 with enough digits to round-trip
    assert np.array_equal(back.normals, g.normals)


def test_reads_other_order_extra_properties_other_elements_and_types(tmp_path):
    """What other tools write: shuffled properties, extra attributes, doubles, faces before/after, comments."""
    g = random_gaussians(n=5, degree=1)
    names = gaussian_property_names(1)
    names = [n for n in names if n not in ("nx", "ny", "nz")]
    shuffled = list(reversed(names))
    extra = {"filter_3D": np.arange(5, dtype=np.float32), "segment_id": np.arange(5, dtype=np.uint16)}
    vertex = standard_rows(g, dtype="<f8", order=shuffled, extra=extra)
    faces_before = np.array([([0, 1, 2], 7), ([1, 2, 3, 4], 8)], dtype=[("vertex_indices", "O"), ("tag", "u1")])
    faces_before["vertex_indices"] = [np.array([0, 1, 2], np.int32), np.array([1, 2, 3, 4], np.int32)]
    after = np.array([(1.5, 2)], dtype=[("a", "<f4"), ("b", "<i2")])
    for text in (False, True):
        path = tmp_path / f"mixed_{text}.ply"
        PlyData(
            [
                PlyElement.describe(faces_before, "face"),
                PlyElement.describe(vertex, "vertex"),
                PlyElement.describe(after, "camera"),
            ],
            text=text,
            comments=["some other tool"],
            obj_info=["generated for a test"],
        ).write(str(path))
        back = read_gaussian_ply(path)
        assert_same_gaussians(g, back)  # doubles of float32 values cast back exactly
        assert back.normals is None
        header, elements = read_ply(path)
        assert [e.name for e in header.elements] == ["face", "vertex", "camera"]
        assert header.comments == ["some other tool"] and header.obj_info == ["generated for a test"]
        assert elements["face"]["tag"].tolist() == [7, 8]  # scalars after a skipped variable-length list
        assert elements["camera"]["a"].tolist() == [1.5] and elements["camera"]["b"].tolist() == [2]


def test_uniform_list_elements_take_the_fast_path_and_keep_scalars(tmp_path):
    faces = np.empty(3, dtype=[("vertex_indices", "O"), ("flag", "<f4")])
    faces["vertex_indices"] = [np.array([i, i + 1, i + 2], np.int32) for i in range(3)]
    faces["flag"] = [0.5, 1.5, 2.5]
    g = random_gaussians(n=3, degree=0)
    path = tmp_path / "tri.ply"
    PlyData([PlyElement.describe(standard_rows(g), "vertex"), PlyElement.describe(faces, "face")]).write(str(path))
    _, elements = read_ply(path)
    assert elements["face"]["flag"].tolist() == [0.5, 1.5, 2.5]
    assert_same_gaussians(g, read_gaussian_ply(path))


# ---------------------------------------------------------------- errors


def write_raw(path, header_lines, body=b""):
    path.write_bytes(("\n".join(header_lines) + "\n").encode() + body)
    return path


def minimal_header(n, names=None, fmt="binary_little_endian"):
    names = names or gaussian_property_names(0)
    return ["ply", f"format {fmt} 1.0", f"element vertex {n}", *[f"property float {p}" for p in names], "end_header"]


def test_error_not_a_ply(tmp_path):
    path = tmp_path / "x.ply"
    path.write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(PlyFormatError, match=r"x\.ply: not a PLY file"):
        read_gaussian_ply(path)


def test_error_names_the_path_and_is_a_value_error(tmp_path):
    path = write_raw(tmp_path / "named.ply", minimal_header(2), b"")
    with pytest.raises(ValueError) as info:
        read_gaussian_ply(path)
    assert isinstance(info.value, PlyFormatError) and info.value.path == str(path)
    assert str(path) in str(info.value)


def test_error_truncated_data_says_expected_and_found_bytes(tmp_path):
    row = 17 * 4
    path = write_raw(tmp_path / "t.ply", minimal_header(10), bytes(row * 10 - 5))
    with pytest.raises(
        PlyFormatError, match=rf"truncated data: element 'vertex' needs {row * 10} bytes .* only {row * 10 - 5} bytes"
    ):
        read_gaussian_ply(path)


@pytest.mark.parametrize("extra", [1, 7, 17 * 4 + 3])
def test_trailing_bytes_after_the_last_element_are_accepted(tmp_path, extra):
    g = random_gaussians(n=3, degree=0)
    body = standard_rows(g).tobytes()
    path = write_raw(tmp_path / "m.ply", minimal_header(3), body + bytes(range(extra % 256)) + b"\n" * (extra // 256))
    assert_same_gaussians(g, read_gaussian_ply(path))
    header, _ = read_ply(path)
    assert header.trailing_bytes == extra % 256 + extra // 256


def test_count_mismatch_ascii_fewer_refused_more_accepted(tmp_path):
    line = " ".join(["0.5"] * 17)
    fewer = write_raw(tmp_path / "f.ply", minimal_header(3, fmt="ascii"), f"{line}\n{line}\n".encode())
    with pytest.raises(PlyFormatError, match=r"truncated data.*header says 3 vertex rows, the data has fewer"):
        read_gaussian_ply(fewer)
    more = write_raw(tmp_path / "m.ply", minimal_header(1, fmt="ascii"), f"{line}\n{line}\n".encode())
    back = read_gaussian_ply(more)
    assert len(back) == 1 and np.all(back.means == 0.5)


@pytest.mark.parametrize(
    "edit",
    [
        lambda lines: ["ply   ", *lines[1:]],  # blanks after the magic word
        lambda lines: [lines[0], "format binary_little_endian 1", *lines[2:]],  # version "1"
        lambda lines: [lines[0], "comment written by some tool", "", *lines[1:]],  # comment and blank line
        lambda lines: [line.replace(" ", "\t") for line in lines],  # tabs
        lambda lines: [lines[0], lines[1], "obj_info generator x", *lines[2:]],
    ],
)
def test_header_variants_that_common_readers_accept(tmp_path, edit):
    g = random_gaussians(n=2, degree=0)
    path = write_raw(tmp_path / "v.ply", edit(minimal_header(2)), standard_rows(g).tobytes())
    assert_same_gaussians(g, read_gaussian_ply(path))


def test_crlf_header_is_accepted(tmp_path):
    g = random_gaussians(n=2, degree=0)
    path = tmp_path / "crlf.ply"
    path.write_bytes(("\r\n".join(minimal_header(2)) + "\r\n").encode() + standard_rows(g).tobytes())
    assert_same_gaussians(g, read_gaussian_ply(path))


@pytest.mark.parametrize("kind", ["uchar", "short", "int", "uint"])
@pytest.mark.parametrize("prop", ["opacity", "scale_1", "f_dc_0", "x", "rot_3"])
def test_integer_typed_gaussian_property_is_refused_by_name(tmp_path, kind, prop):
    names = gaussian_property_names(0)
    lines = ["ply", "format ascii 1.0", "element vertex 1"]
    lines += [f"property {kind if name == prop else 'float'} {name}" for name in names] + ["end_header"]
    path = write_raw(tmp_path / "i.ply", lines, (" ".join(["1"] * len(names)) + "\n").encode())
    with pytest.raises(PlyFormatError, match=rf"stored as integers.*{prop} \({kind}\)"):
        read_gaussian_ply(path)


def test_integer_typed_normals_are_ignored(tmp_path):
    g = random_gaussians(n=2, degree=0)
    rows = standard_rows(g)
    names = list(rows.dtype.names)
    ints = np.empty(2, dtype=[(n, "i1" if n in ("nx", "ny", "nz") else "<f4") for n in names])
    for n in names:
        ints[n] = 0 if n in ("nx", "ny", "nz") else rows[n]
    PlyData([PlyElement.describe(ints, "vertex")]).write(str(tmp_path / "n.ply"))
    back = read_gaussian_ply(tmp_path / "n.ply")
    assert back.normals is None
    assert_same_gaussians(g, back)


def test_error_missing_required_properties_are_named(tmp_path):
    names = [n for n in gaussian_property_names(0) if n not in ("opacity", "scale_1")]
    path = write_raw(tmp_path / "p.ply", minimal_header(0, names))
    with pytest.raises(PlyFormatError, match=r"lacks required properties: opacity, scale_1"):
        read_gaussian_ply(path)


def test_error_no_vertex_element(tmp_path):
    path = write_raw(
        tmp_path / "e.ply", ["ply", "format ascii 1.0", "element point 1", "property float x", "end_header"], b"1\n"
    )
    with pytest.raises(PlyFormatError, match=r"no 'vertex' element \(elements in the file: 'point'\)"):
        read_gaussian_ply(path)


@pytest.mark.parametrize(
    "format_line, message",
    [
        ("format binary_middle_endian 1.0", r"unsupported format 'binary_middle_endian'"),
        ("format ascii 2.0", r"unsupported PLY version '2.0'"),
    ],
)
def test_error_unsupported_format(tmp_path, format_line, message):
    lines = minimal_header(0)
    lines[1] = format_line
    with pytest.raises(PlyFormatError, match=message):
        read_gaussian_ply(write_raw(tmp_path / "u.ply", lines))


@pytest.mark.parametrize(
    "lines, message",
    [
        (["ply", "format ascii 1.0", "element vertex 0"], r"no end_header line"),
        (["ply", "element vertex 0", "end_header"], r"no format line"),
        (["ply", "format ascii 1.0", "property float x", "end_header"], r"property before any element"),
        (
            ["ply", "format ascii 1.0", "element vertex 0", "property half x", "end_header"],
            r"unknown property type 'half'",
        ),
        (["ply", "format ascii 1.0", "element vertex -1", "end_header"], r"malformed element line"),
        (["ply", "format ascii 1.0", "bogus line", "end_header"], r"unknown keyword 'bogus'"),
        (
            ["ply", "format ascii 1.0", "element vertex 0", "property float x", "property float x", "end_header"],
            r"property 'x' appears twice",
        ),
    ],
)
def test_error_bad_headers(tmp_path, lines, message):
    with pytest.raises(PlyFormatError, match=message):
        read_gaussian_ply(write_raw(tmp_path / "h.ply", lines))


@pytest.mark.parametrize("count", [3, 10, 46])
def test_error_f_rest_count_that_is_no_degree(tmp_path, count):
    names = gaussian_property_names(0) + [f"f_rest_{i}" for i in range(count)]
    with pytest.raises(
        PlyFormatError, match=rf"{count} f_rest properties is not 3\*\(\(d\+1\)\^2-1\).*\(0, 9, 24, 45\)"
    ):
        read_gaussian_ply(write_raw(tmp_path / "r.ply", minimal_header(0, names)))


def test_error_f_rest_with_a_gap(tmp_path):
    names = gaussian_property_names(0) + [f"f_rest_{i}" for i in range(10) if i != 4]
    with pytest.raises(PlyFormatError, match=r"f_rest_4 is missing"):
        read_gaussian_ply(write_raw(tmp_path / "r.ply", minimal_header(0, names)))


def test_error_ascii_value_that_is_not_a_number(tmp_path):
    line = " ".join(["0.5"] * 16 + ["abc"])
    path = write_raw(tmp_path / "a.ply", minimal_header(1, fmt="ascii"), f"{line}\n".encode())
    with pytest.raises(PlyFormatError, match=r"property 'rot_3' \(float\) has a value that is not a number"):
        read_gaussian_ply(path)


# ---------------------------------------------------------------- non-finite values


def gaussians_with_non_finite():
    g = random_gaussians(n=6, degree=1)
    g.means[1, 0] = np.nan
    g.scale[1, 0] = np.inf
    g.scale[3, 0] = -np.inf
    g.means[4, 0] = np.nan
    return g


def write_unchecked(path, g):
    """Writes Gaussians including NaN/inf (as another tool might), bypassing our writer's check."""
    PlyData([PlyElement.describe(standard_rows(g), "vertex")]).write(str(path))
    return path


def test_non_finite_rejected_with_count_and_names(tmp_path):
    path = write_unchecked(tmp_path / "nan.ply", gaussians_with_non_finite())
    with pytest.raises(InvalidValuesError, match=r"3 of 6 splats have invalid values .* in: x, scale_0") as info:
        read_gaussian_ply(path)
    assert (info.value.count, info.value.total, info.value.properties) == (3, 6, ["x", "scale_0"])
    message = str(info.value).split(": ", 1)[1]  # without the path
    assert "non_finite" not in message and "=" not in message


def test_non_finite_dropped_and_counted(tmp_path):
    g = gaussians_with_non_finite()
    back = read_gaussian_ply(write_unchecked(tmp_path / "nan.ply", g), non_finite="drop")
    assert back.dropped_non_finite == 3
    assert_same_gaussians(g.select(np.array([0, 2, 5])), back)


def test_double_beyond_float32_range_counts_as_non_finite(tmp_path):
    g = random_gaussians(n=2, degree=0)
    rows = standard_rows(g, dtype="<f8")
    rows["opacity"][0] = 1e300
    path = tmp_path / "big.ply"
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(path))
    with pytest.raises(InvalidValuesError, match=r"1 of 2 splats have invalid values .* in: opacity"):
        read_gaussian_ply(path)


@pytest.mark.parametrize("value", [41.0, -41.0, 1e30, -3e38])
def test_log_scale_beyond_the_float32_range_of_radii_is_invalid(tmp_path, value):
    g = random_gaussians(n=4, degree=0)
    rows = standard_rows(g)
    rows["scale_2"][1] = value
    path = tmp_path / "s.ply"
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(path))
    with pytest.raises(InvalidValuesError, match=r"1 of 4 splats .* in: scale_2"):
        read_gaussian_ply(path)
    back = read_gaussian_ply(path, non_finite="drop")
    assert back.dropped_non_finite == 1
    assert_same_gaussians(g.select(np.array([0, 2, 3])), back)


def test_writer_refuses_or_drops_non_finite(tmp_path):
    g = gaussians_with_non_finite()
    path = tmp_path / "w.ply"
    with pytest.raises(InvalidValuesError, match=r"3 of 6 splats have invalid values .* in: x, scale_0"):
        write_gaussian_ply(path, g)
    assert not path.exists()
    assert write_gaussian_ply(path, g, non_finite="drop") == 3
    assert_same_gaussians(g.select(np.array([0, 2, 5])), read_gaussian_ply(path))


def test_unknown_non_finite_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"non_finite must be one of \('error', 'drop'\), got 'ignore'"):
        read_gaussian_ply(tmp_path / "whatever.ply", non_finite="ignore")


# ---------------------------------------------------------------- container and package


def test_gaussian_arrays_validate_shapes():
    g = random_gaussians(n=3, degree=1)
    with pytest.raises(ValueError, match=r"f_rest has 4 coefficients per channel"):
        GaussianArrays(g.means, g.f_dc, np.zeros((3, 4, 3)), g.opacity, g.scale, g.rot)
    with pytest.raises(ValueError, match=r"rot must have shape \(N, 4\), got \(3, 3\)"):
        GaussianArrays(g.means, g.f_dc, g.f_rest, g.opacity, g.scale, g.scale)
    with pytest.raises(ValueError, match=r"opacity has 2 rows but means has 3"):
        GaussianArrays(g.means, g.f_dc, g.f_rest, g.opacity[:2], g.scale, g.rot)
    assert np.array_equal(g.sh[:, 0], g.f_dc) and np.array_equal(g.sh[:, 1:], g.f_rest)


def test_engine_io_does_not_import_torch():
    code = "import sys, engine.io; assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_large_binary_file_reads_fast(tmp_path):
    """200k degree-0 splats (13.6 MB) decode without per-vertex Python work (well under a second)."""
    import time

    g = random_gaussians(n=200_000, degree=0)
    write_gaussian_ply(tmp_path / "big.ply", g)
    start = time.perf_counter()
    back = read_gaussian_ply(tmp_path / "big.ply")
    elapsed = time.perf_counter() - start
    assert_same_gaussians(g, back)
    assert elapsed < 1.0, f"reading 200k splats took {elapsed:.2f} s"


@pytest.mark.parametrize("lengths", [[3, 3, 3], [3, 4, 3]])
def test_error_truncated_list_element(tmp_path, lengths):
    """A face element cut short is reported, whether its rows share one length (fast path) or not."""
    g = random_gaussians(n=2, degree=0)
    faces = np.empty(len(lengths), dtype=[("vertex_indices", "O")])
    faces["vertex_indices"] = [np.arange(k, dtype=np.int32) for k in lengths]
    path = tmp_path / "cut.ply"
    PlyData([PlyElement.describe(standard_rows(g), "vertex"), PlyElement.describe(faces, "face")]).write(str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-6])
    with pytest.raises(PlyFormatError, match=r"truncated data.*'face'"):
        read_gaussian_ply(path)


def test_crlf_header_and_big_endian_lists(tmp_path):
    g = random_gaussians(n=3, degree=1)
    faces = np.empty(2, dtype=[("vertex_indices", "O")])
    faces["vertex_indices"] = [np.array([0, 1, 2], np.int32), np.array([0, 1, 2, 1], np.int32)]
    path = tmp_path / "crlf.ply"
    PlyData(
        [PlyElement.describe(faces, "face"), PlyElement.describe(standard_rows(g, dtype=">f4"), "vertex")],
        byte_order=">",
    ).write(str(path))
    header, body = path.read_bytes().split(b"end_header\n", 1)
    path.write_bytes(header.replace(b"\n", b"\r\n") + b"end_header\r\n" + body)
    assert_same_gaussians(g, read_gaussian_ply(path))


def test_write_ply_rejects_multiline_comments(tmp_path):
    with pytest.raises(ValueError, match=r"must be one line of ASCII text"):
        write_gaussian_ply(tmp_path / "c.ply", random_gaussians(n=1), comments=["two\nlines"])
    assert not (tmp_path / "c.ply").exists()
