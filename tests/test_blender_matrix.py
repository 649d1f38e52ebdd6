"""Every supported Blender: install, import of splats / points / cameras, a Cycles render, no orphans.

The versions and their environments come from build.py (BLENDER_MATRIX), which creates and caches one
virtual environment per version and passes their Pythons in VIST3A_BLENDER_MATRIX
("4.2=/path/python;5.2=SKIP:reason;..."). Blender 5.0 (this environment) runs the same checks and the
rest of the add-on suite. A version whose environment could not be set up fails here with the reason;
one whose Python this machine lacks is skipped with the reason.
"""

import json
import os
import sys

import numpy as np
import pytest
from blender_env import run_in_blender

from engine.io import GaussianArrays, PointArrays, write_gaussian_ply, write_point_ply

SH_C0 = 0.28209479177387814
MATRIX_ENV_VAR = "VIST3A_BLENDER_MATRIX"


def _matrix():
    entries = [("5.0", sys.executable)]
    for entry in filter(None, os.environ.get(MATRIX_ENV_VAR, "").split(";")):
        version, _, python = entry.partition("=")
        entries.append((version, python))
    return entries


def _write_case(folder):
    rng = np.random.default_rng(5)
    n = 300
    red = np.array([0.9, 0.1, 0.1])
    gaussians = GaussianArrays(
        means=rng.normal(size=(n, 3)) * 0.12 + [0.0, 0.0, 3.0],
        f_dc=np.tile((red - 0.5) / SH_C0, (n, 1)),
        f_rest=np.zeros((n, 0, 3)),
        opacity=np.full(n, 3.0),
        scale=np.log(rng.uniform(0.02, 0.08, size=(n, 3))),
        rot=rng.normal(size=(n, 4)),
    )
    run = folder / "blob"
    run.mkdir()
    write_gaussian_ply(run / "scene.ply", gaussians)
    camera = {"c2w": np.eye(4).tolist(), "fx": 48.0, "fy": 48.0, "cx": 24.0, "cy": 24.0, "w": 48, "h": 48}
    document = {"format": "vist3a-cameras", "version": 1, "convention": "opencv", "cameras": [camera]}
    (run / "cameras.json").write_text(json.dumps(document))
    points = PointArrays(points=rng.normal(size=(50, 3)), colors=rng.uniform(size=(50, 3)))
    write_point_ply(folder / "points.ply", points)
    (folder / "garbage.ply").write_bytes(b"not a PLY at all")
    return run, n


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.parametrize(("version", "python"), _matrix(), ids=[v for v, _ in _matrix()])
def test_install_import_render_on_every_supported_blender(version, python, extension_zip, tmp_path):
    if python.startswith("SKIP:"):
        pytest.skip(python[len("SKIP:") :])
    if python.startswith("ERROR:") or not python:
        pytest.fail(f"Blender {version} could not be set up: {python[len('ERROR:') :]}")
    run, n = _write_case(tmp_path)
    parameters = {
        "zip": str(extension_zip),
        "garbage": str(tmp_path / "garbage.ply"),
        "run": str(run) + os.sep,
        "points": str(tmp_path / "points.ply"),
        "tmp": str(tmp_path),
    }
    result = run_in_blender("install_import_render", parameters, tmp_path=tmp_path, timeout=400, python=python).result

    assert ".".join(map(str, result["version"][:2])) == version
    assert result["garbage"][0] == ["CANCELLED"] and "garbage.ply" in result["garbage"][1]
    assert result["garbage_unchanged"], "a failed import left data behind"
    # "Native splats" only where this Blender has them.
    assert ("NATIVE" in result["modes"]) == result["native_detected"]
    if not result["native_detected"]:
        assert "no native Gaussian splats" in result["native_refused"]
        assert result["native_unchanged"]
    for mode, r in result["renders"].items():
        assert r["import"] == ["FINISHED"] and r["render"] == ["FINISHED"], (mode, r)
        assert r["points"] == n
        assert r["camera"].endswith("camera 000") and r["scene_camera"], "the imported camera is preselected"
        centre, corner = np.array(r["centre"]), np.array(r["corner"])
        assert centre[0] > 0.8 and centre[1] < 0.2 and centre[2] < 0.2, (mode, centre)  # the red splats
        np.testing.assert_allclose(corner, [0.0, 0.3, 0.0], atol=0.02)  # the world, shown untouched (Raw)
        assert r["orphan_meshes"] == 0, mode
    assert result["points"] == [["FINISHED"], 50]
    assert result["orphans"] == {"meshes": 0, "pointclouds": 0, "node_groups": 0, "objects": 0}
    assert result["disabled"]
