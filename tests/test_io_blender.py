"""Blender's own PLY importer reads our Gaussian PLY: every vertex, with the 3DGS attributes and values."""

import numpy as np
import pytest
from blender_env import run_in_blender

from engine.io import GaussianArrays, write_gaussian_ply


@pytest.mark.blender
def test_blender_ply_importer_reads_every_vertex_with_attributes(tmp_path):
    n = 50
    rng = np.random.default_rng(0)
    # Distinct positions: the importer must keep every vertex, and we match them back by position.
    means = np.stack([np.arange(n), rng.standard_normal(n), rng.standard_normal(n)], axis=1)
    g = GaussianArrays(
        means=means,
        f_dc=rng.standard_normal((n, 3)),
        f_rest=rng.standard_normal((n, 3, 3)),
        opacity=rng.standard_normal(n),
        scale=rng.standard_normal((n, 3)),
        rot=rng.standard_normal((n, 4)),
    )
    path = tmp_path / "splats.ply"
    write_gaussian_ply(path, g)

    run = run_in_blender("ply_importer_attributes", {"ply": str(path)}, tmp_path=tmp_path)
    result = run.result
    assert result["count"] == n
    assert {"opacity", "f_dc_0", "f_rest_8", "scale_0", "rot_0"} <= set(result["attributes"])
    positions = np.array(result["positions"], dtype=np.float32)
    order = np.argsort(positions[:, 0])  # the importer may reorder vertices; x is 0..n-1
    assert np.array_equal(positions[order], g.means)
    expected = {
        "opacity": g.opacity,
        "f_dc_0": g.f_dc[:, 0],
        "f_dc_2": g.f_dc[:, 2],
        "f_rest_8": g.f_rest[:, 2, 2],  # channel-major: blue's last degree-1 coefficient
        "scale_0": g.scale[:, 0],
        "rot_0": g.rot[:, 0],
        "rot_3": g.rot[:, 3],
    }
    for name, values in expected.items():
        assert np.array_equal(np.array(result["values"][name], dtype=np.float32)[order], values), name


@pytest.mark.blender
def test_run_in_blender_reports_script_failures(tmp_path):
    """The helper fails the test with the child's stderr when the script raises."""
    outcome = pytest.raises(
        pytest.fail.Exception,
        run_in_blender,
        "exit_with_message",
        {"message": "boom from blender"},
        tmp_path=tmp_path,
    )
    assert "exited with code 1" in str(outcome.value) and "boom from blender" in str(outcome.value)


@pytest.mark.blender
def test_run_in_blender_uses_a_throwaway_profile(tmp_path):
    run = run_in_blender("throwaway_profile", tmp_path=tmp_path)
    profile = str(tmp_path / "blender_user")
    assert run.result["env"] == profile
    assert run.result["config"].startswith(profile)
