"""Point clouds as other tools write them: colour names and encodings, alpha, normals, meshes, no colour."""

import itertools

import numpy as np
import pytest
from cases import CASES
from plyfile import PlyData, PlyElement

from engine.io import GaussianArrays, PlyFormatError, PointArrays, read_point_ply, read_scene_file
from engine.io.point_ply import DEFAULT_POINT_COLOR

RNG = np.random.default_rng(0)
POSITIONS = RNG.uniform(-3, 3, (6, 3))
COLORS_8BIT = RNG.integers(0, 256, (6, 3))

NAME_SETS = [
    ("red", "green", "blue"),
    ("r", "g", "b"),
    ("diffuse_red", "diffuse_green", "diffuse_blue"),
    ("Red", "Green", "Blue"),
]
# (PLY type, how COLORS_8BIT is stored, expected colours in [0, 1])
ENCODINGS = {
    "uchar": ("u1", COLORS_8BIT, COLORS_8BIT / 255),
    "ushort": ("<u2", COLORS_8BIT * 257, COLORS_8BIT / 255),
    "float 0..1": ("<f4", COLORS_8BIT / 255, COLORS_8BIT / 255),
    "float 0..255": ("<f4", COLORS_8BIT.astype(float), COLORS_8BIT / 255),
    "double 0..255": ("<f8", COLORS_8BIT.astype(float), COLORS_8BIT / 255),
    "int 0..255": ("<i4", COLORS_8BIT, COLORS_8BIT / 255),
}


def write_points(path, names, encoding, *, alpha=False, normals=False, position_type="<f4", text=False, faces=None):
    ply_type, stored, _ = ENCODINGS[encoding]
    fields = [(axis, position_type) for axis in "xyz"]
    if normals:
        fields += [(n, "<f4") for n in ("nx", "ny", "nz")]
    fields += [(name, ply_type) for name in names]
    if alpha:
        fields.append(("alpha", ply_type))
    rows = np.zeros(len(POSITIONS), dtype=fields)
    for axis, name in enumerate("xyz"):
        rows[name] = POSITIONS[:, axis]
    for channel, name in enumerate(names):
        rows[name] = stored[:, channel]
    if normals:
        rows["nx"] = 1.0
    if alpha:
        rows["alpha"] = stored[:, 0]
    elements = [PlyElement.describe(rows, "vertex")]
    if faces is not None:
        face_rows = np.empty(len(faces), dtype=[("vertex_indices", "O")])
        face_rows["vertex_indices"] = [np.array(f, dtype=np.int32) for f in faces]
        elements.append(PlyElement.describe(face_rows, "face"))
    PlyData(elements, text=text).write(str(path))
    return path


@pytest.mark.parametrize("names, encoding", list(itertools.product(NAME_SETS, ENCODINGS)))
def test_colour_names_and_encodings(tmp_path, names, encoding):
    back = read_scene_file(write_points(tmp_path / "p.ply", names, encoding))
    assert isinstance(back, PointArrays) and back.colors_from_file
    np.testing.assert_allclose(back.points, POSITIONS, rtol=1e-6)
    np.testing.assert_allclose(back.colors, ENCODINGS[encoding][2], atol=1e-6)


@pytest.mark.parametrize(
    "alpha, normals, position_type, text",
    [(True, False, "<f4", False), (False, True, "<f8", False), (True, True, "<f8", True), (False, False, "<i4", True)],
)
def test_alpha_normals_and_position_types(tmp_path, alpha, normals, position_type, text):
    path = write_points(
        tmp_path / "p.ply", NAME_SETS[0], "uchar", alpha=alpha, normals=normals, position_type=position_type, text=text
    )
    back = read_point_ply(path)
    expected = POSITIONS.astype(position_type)
    np.testing.assert_allclose(back.points, expected, rtol=1e-6)
    np.testing.assert_allclose(back.colors, COLORS_8BIT / 255, atol=1e-6)


@pytest.mark.parametrize(
    "faces", [[(0, 1, 2), (2, 3, 4)], [(0, 1, 2, 3), (3, 4, 5)], [(0, 1, 2, 3, 4, 5)]], ids=["tris", "mixed", "ngon"]
)
@pytest.mark.parametrize("text", [False, True])
def test_mesh_ply_imports_its_vertices(tmp_path, faces, text):
    path = write_points(tmp_path / "mesh.ply", NAME_SETS[0], "uchar", normals=True, text=text, faces=faces)
    back = read_scene_file(path)
    assert isinstance(back, PointArrays) and len(back) == len(POSITIONS)
    np.testing.assert_allclose(back.colors, COLORS_8BIT / 255, atol=1e-6)


@pytest.mark.parametrize("position_type", ["<f4", "<f8"])
def test_positions_only_get_the_neutral_default_colour(tmp_path, position_type):
    rows = np.zeros(4, dtype=[(a, position_type) for a in "xyz"])
    rows["x"] = [0, 1, 2, 3]
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "xyz.ply"))
    back = read_scene_file(tmp_path / "xyz.ply")
    assert not back.colors_from_file
    assert np.array_equal(back.colors, np.full((4, 3), DEFAULT_POINT_COLOR, np.float32))


def test_point_ply_case_files():
    folder = CASES / "point-ply-variants"
    xyz = read_scene_file(folder / "xyz_only.ply")
    short = read_scene_file(folder / "xyz_rgb_short.ply")
    full = read_scene_file(folder / "xyz_rgba_normals.ply")
    for points in (xyz, short, full):
        assert isinstance(points, PointArrays) and len(points) == 5
        assert np.all(np.isfinite(points.points)) and np.all((points.colors >= 0) & (points.colors <= 1))
        np.testing.assert_array_equal(points.points, xyz.points)
    assert not xyz.colors_from_file and np.all(xyz.colors == DEFAULT_POINT_COLOR)
    assert short.colors_from_file and full.colors_from_file
    np.testing.assert_array_equal(short.colors, full.colors)
    raw = PlyData.read(str(folder / "xyz_rgb_short.ply"))["vertex"].data
    np.testing.assert_allclose(short.colors[:, 0], raw["r"] / 255)


def test_a_ply_with_any_splat_property_is_read_as_splats(tmp_path):
    rows = np.zeros(2, dtype=[(n, "<f4") for n in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity")])
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "half.ply"))
    with pytest.raises(PlyFormatError, match=r"lacks required properties: scale_0"):
        read_scene_file(tmp_path / "half.ply")
    rows = np.zeros(2, dtype=[(n, "<f4") for n in ("x", "y", "z", "red", "green", "blue")])
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "pts.ply"))
    assert not isinstance(read_scene_file(tmp_path / "pts.ply"), GaussianArrays)


def test_float_colours_with_nan_are_invalid_points(tmp_path):
    path = write_points(tmp_path / "p.ply", NAME_SETS[1], "float 0..255")
    data = PlyData.read(str(path))
    rows = data["vertex"].data.copy()
    rows["g"][2] = np.nan
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "nan.ply"))
    back = read_point_ply(tmp_path / "nan.ply", non_finite="drop")
    assert len(back) == 5 and back.dropped_non_finite == 1
    np.testing.assert_allclose(back.colors, np.delete(COLORS_8BIT / 255, 2, axis=0), atol=1e-6)
