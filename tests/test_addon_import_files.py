"""The add-on's import of the files people have: invalid splats skipped or refused, every splat format, points.

Runs the installed extension in Blender (bpy) and checks the objects, their attribute values and what the
operator tells the artist.
"""

import numpy as np
import pytest
from blender_env import run_in_blender
from cases import CASES
from plyfile import PlyData, PlyElement

from engine.io import GaussianArrays, gaussian_property_names, read_gaussians, write_gaussians
from engine.io.point_ply import DEFAULT_POINT_COLOR


def splats_with_huge_scale(path):
    rng = np.random.default_rng(3)
    rows = np.zeros(5, dtype=[(name, "<f4") for name in gaussian_property_names(0)])
    for name in rows.dtype.names:
        rows[name] = rng.normal(size=5)
    rows["scale_1"] = -3.0
    rows["scale_1"][2] = 60.0  # exp(60) squared overflows float32: an infinite radius in Blender
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(path))
    return path


def generated(n, degree, seed):
    rng = np.random.default_rng(seed)
    return GaussianArrays(
        means=rng.uniform(-1, 1, (n, 3)),
        f_dc=rng.uniform(-1, 1, (n, 3)),
        f_rest=rng.uniform(-0.3, 0.3, (n, (degree + 1) ** 2 - 1, 3)),
        opacity=rng.normal(0, 2, n),
        scale=rng.uniform(-5, -2, (n, 3)),
        rot=rng.normal(size=(n, 4)),
    )


@pytest.mark.blender
@pytest.mark.slow
def test_import_of_invalid_compressed_splat_spz_and_point_files(extension_zip, tmp_path):
    write_gaussians(tmp_path / "web.splat", generated(40, 0, 1))
    write_gaussians(tmp_path / "phone.spz", generated(60, 2, 2))
    splats_with_huge_scale(tmp_path / "huge.ply")
    rows = PlyData.read(str(CASES / "non-finite-splats" / "nan_xyz.ply"))["vertex"].data.copy()
    rows["opacity"] = np.inf
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "all_bad.ply"))
    cases = CASES
    jobs = [
        ("nan default", str(cases / "non-finite-splats" / "nan_xyz.ply"), {}),
        ("neginf default", str(cases / "non-finite-splats" / "neginf_scale.ply"), {}),
        ("nan refused", str(cases / "non-finite-splats" / "nan_xyz.ply"), {"skip_invalid": False}),
        ("neginf refused", str(cases / "non-finite-splats" / "neginf_scale.ply"), {"skip_invalid": False}),
        ("huge scale", str(tmp_path / "huge.ply"), {}),
        ("all invalid", str(tmp_path / "all_bad.ply"), {}),
        ("compressed", str(cases / "compressed-ply" / "splats.compressed.ply"), {"splat_mode": "POINTS"}),
        ("splat", str(tmp_path / "web.splat"), {"splat_mode": "POINTS"}),
        ("spz", str(tmp_path / "phone.spz"), {"splat_mode": "POINTS"}),
        ("xyz only", str(cases / "point-ply-variants" / "xyz_only.ply"), {}),
        ("rgb short", str(cases / "point-ply-variants" / "xyz_rgb_short.ply"), {}),
        ("rgba normals", str(cases / "point-ply-variants" / "xyz_rgba_normals.ply"), {}),
    ]
    parameters = {"zip": str(extension_zip), "jobs": jobs}
    result = run_in_blender("import_files", parameters, tmp_path=tmp_path, timeout=240).result

    # Invalid splats: skipped by default, with the count said; every value that reaches Blender is finite.
    for label, bad, total in (("nan default", 3, 10), ("neginf default", 2, 10), ("huge scale", 1, 5)):
        record = result[label]
        assert record["outcome"] == ["FINISHED"], record
        assert record["kind"] == "splats" and record["count"] == total - bad
        assert f"skipped {bad} of {total} splats with invalid values" in record["message"]
        for name, values in record["arrays"].items():
            assert np.all(np.isfinite(values)), (label, name)
        assert np.all(np.array(record["arrays"]["radius"]) > 0)
    # Refusing stays available: nothing is created and the message says what and how, in the artist's terms.
    for label, bad in (("nan refused", 3), ("neginf refused", 2)):
        record = result[label]
        assert record["outcome"] == ["CANCELLED"] and record["unchanged"]
        assert f"{bad} of 10 splats have invalid values" in record["message"]
        assert "Skip Invalid Splats" in record["message"]
        for python_term in ("non_finite", "drop", "=", "skip_invalid", "None", "True"):
            assert python_term not in record["message"], python_term

    record = result["all invalid"]
    assert record["outcome"] == ["CANCELLED"] and record["unchanged"]
    assert "all 10 splats have invalid values" in record["message"] and "nothing to import" in record["message"]

    # Every splat format arrives as splats with the decoded values.
    for label, path in (
        ("compressed", CASES / "compressed-ply" / "splats.compressed.ply"),
        ("splat", tmp_path / "web.splat"),
        ("spz", tmp_path / "phone.spz"),
    ):
        record = result[label]
        expected = read_gaussians(path)
        assert record["outcome"] == ["FINISHED"] and record["kind"] == "splats", record
        assert record["count"] == len(expected)
        np.testing.assert_allclose(record["arrays"]["position"], expected.means, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(
            np.array(record["arrays"]["opacity"])[:, 0], 1 / (1 + np.exp(-expected.opacity.astype(float))), rtol=1e-5
        )

    # Point clouds: all import as points; no stored colour gives the neutral grey, and the artist is told.
    for label in ("xyz only", "rgb short", "rgba normals"):
        record = result[label]
        assert record["outcome"] == ["FINISHED"] and record["kind"] == "points" and record["count"] == 5, record
    # point colours are display-referred, like splat colours (the import shows them with the Raw view transform)
    np.testing.assert_allclose(
        np.array(result["xyz only"]["arrays"]["base_color"])[:, :3],
        np.broadcast_to(DEFAULT_POINT_COLOR, (5, 3)),
        rtol=1e-5,
    )
    assert "stores no point colours" in result["xyz only"]["message"]
    np.testing.assert_allclose(
        result["rgb short"]["arrays"]["base_color"], result["rgba normals"]["arrays"]["base_color"], rtol=1e-6
    )
    assert "stores no point colours" not in result["rgb short"]["message"]
