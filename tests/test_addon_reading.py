"""The add-on's reading layer (addon/reading.py) without Blender: result folders, splat and point files,
cameras, run folders, and the messages an artist sees when a file cannot be imported.

The module is loaded as part of a stand-in for the installed extension package (``addon/`` with the
project's ``engine`` as its bundled ``engine`` subpackage), as Blender would load it, but without bpy.
"""

import json
import sys

import numpy as np
import pytest
from addon_modules import PACKAGE, load_addon_module
from cases import CASES

import engine
import engine.io
from engine.io import GaussianArrays, PointArrays, write_gaussian_ply, write_point_ply

reading = load_addon_module("reading")


def _gaussians(n, seed=0):
    rng = np.random.default_rng(seed)
    return GaussianArrays(
        means=rng.normal(size=(n, 3)),
        f_dc=rng.normal(size=(n, 3)),
        f_rest=np.zeros((n, 0, 3)),
        opacity=rng.normal(size=n),
        scale=np.full((n, 3), -3.0),
        rot=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)),
    )


def _cameras_json(path, count):
    camera = {"c2w": np.eye(4).tolist(), "fx": 40.0, "fy": 40.0, "cx": 16.0, "cy": 16.0, "w": 32, "h": 32}
    document = {"format": "vist3a-cameras", "version": 1, "convention": "opencv", "cameras": [camera] * count}
    path.write_text(json.dumps(document))


def _result_folder(path, n=12, cameras=2):
    path.mkdir()
    write_gaussian_ply(path / "scene.ply", _gaussians(n))
    if cameras:
        _cameras_json(path / "cameras.json", cameras)
    return path


def test_reading_needs_no_blender():
    assert "bpy" not in sys.modules and "mathutils" not in sys.modules
    assert reading.__name__ == f"{PACKAGE}.reading"
    assert reading.read_scene_file is engine.io.read_scene_file  # the project's engine.io, not a second copy
    assert sys.modules["engine.io"] is engine.io


def test_a_result_folder_gives_splats_and_cameras(tmp_path):
    folder = _result_folder(tmp_path / "a result", n=12, cameras=3)
    loaded = reading.load_result(str(folder) + "/")
    assert loaded.name == "a result" and loaded.source == str(folder)
    assert loaded.points is None and len(loaded.gaussians) == 12 and len(loaded.cameras) == 3
    np.testing.assert_allclose(loaded.gaussians.means, _gaussians(12).means, rtol=1e-6)
    assert loaded.skipped_invalid == 0 and reading.import_notes(loaded) == []


def test_single_files_splats_points_and_cameras(tmp_path):
    write_gaussian_ply(tmp_path / "splats.ply", _gaussians(5))
    colors = np.random.default_rng(1).uniform(size=(7, 3))
    write_point_ply(tmp_path / "points.ply", PointArrays(points=np.zeros((7, 3)), colors=colors))
    _cameras_json(tmp_path / "views.json", 4)

    splats = reading.load_result(str(tmp_path / "splats.ply"))
    assert splats.name == "splats" and len(splats.gaussians) == 5 and splats.cameras is None
    points = reading.load_result(str(tmp_path / "points.ply"))
    assert points.gaussians is None and len(points.points) == 7
    np.testing.assert_allclose(points.points.colors, np.round(colors * 255) / 255, atol=1e-6)
    assert reading.import_notes(points) == []
    cameras = reading.load_result(str(tmp_path / "views.json"))
    assert cameras.gaussians is None and cameras.points is None and len(cameras.cameras) == 4


def test_a_relative_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    _result_folder(tmp_path / "run", cameras=0)
    monkeypatch.chdir(tmp_path)
    loaded = reading.load_result("run")
    assert loaded.source == str(tmp_path / "run") and loaded.cameras is None


def test_a_blend_relative_path_must_be_resolved_by_the_blender_side():
    with pytest.raises(ValueError, match="bpy.path.abspath"):
        reading.load_result("//renders/scene.ply")
    with pytest.raises(ValueError, match="bpy.path.abspath"):
        reading.load_run("//outputs/run")


def test_points_without_colours_are_grey_and_the_notes_say_so():
    loaded = reading.load_result(str(CASES / "point-ply-variants" / "xyz_only.ply"))
    assert loaded.points is not None and not loaded.points.colors_from_file
    assert reading.import_notes(loaded) == ["the file stores no point colours: the points are shown in grey"]


def test_invalid_splats_are_skipped_and_counted_or_refused_in_the_artists_terms():
    path = str(CASES / "non-finite-splats" / "nan_xyz.ply")
    loaded = reading.load_result(path)
    assert loaded.skipped_invalid == 3 and len(loaded.gaussians) == 7
    assert np.all(np.isfinite(loaded.gaussians.means))
    assert reading.import_notes(loaded) == [
        "skipped 3 of 10 splats with invalid values (not a number, infinite or out of range)"
    ]
    with pytest.raises(reading.ResultImportError) as refused:
        reading.load_result(path, skip_invalid=False)
    message = str(refused.value)
    assert "3 of 10 splats have invalid values" in message and reading.SKIP_INVALID_LABEL in message
    assert "nan_xyz.ply" in message and "non_finite" not in message


def test_files_that_cannot_be_imported_are_named_in_the_message(tmp_path):
    (tmp_path / "garbage.ply").write_bytes(b"this is not a PLY file")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty folder").mkdir()
    broken = _result_folder(tmp_path / "broken", cameras=0)
    (broken / "cameras.json").write_text('{"format": "vist3a-cameras", "version": 1}')
    cases = [
        (tmp_path / "garbage.ply", "garbage.ply"),
        (tmp_path / "notes.txt", "expected a result folder"),
        (tmp_path / "empty folder", "not a VIST3A result folder (no scene.ply in it)"),
        (tmp_path / "nothing here.ply", "nothing here.ply: no such file or folder"),
        (broken, "cameras.json"),
    ]
    for path, expected in cases:
        with pytest.raises(reading.ResultImportError) as error:
            reading.load_result(str(path))
        assert expected in str(error.value), (path, str(error.value))


def test_a_run_folder_is_named_from_its_prompt(tmp_path):
    run = _result_folder(tmp_path / "20261130-170000", cameras=1)
    prompt = "  a   red chair\nin a sunny garden with a very long description of everything  "
    metadata = {
        "format": "vist3a-run",
        "created": "2026-11-30T17:00:00+0000",
        "seed": 5,
        "settings": {"prompt": prompt},
    }
    (run / "metadata.json").write_text(json.dumps(metadata))
    loaded = reading.load_run(str(run))
    assert loaded.name == "a red chair in a sunny garden with a…"
    assert loaded.source == str(run) and len(loaded.gaussians) == 12 and len(loaded.cameras) == 1
    with pytest.raises(ValueError, match="not a VIST3A run folder"):
        reading.load_run(str(tmp_path))


def test_prompt_names():
    assert reading.prompt_name("  a  blob \n") == "a blob"
    assert reading.prompt_name("   ") == "scene"
    assert reading.prompt_name("x" * 50) == "x" * 40 + "…"
    assert len(reading.prompt_name("word " * 20)) <= 41
