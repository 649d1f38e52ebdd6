"""``python -m engine convert``: every pair of splat formats, invalid splats, refusals with exit status 2."""

import itertools
import subprocess
import sys

import numpy as np
import pytest
from cases import CASES
from plyfile import PlyData, PlyElement

from engine.cli import main
from engine.io import GaussianArrays, detect_format, read_gaussians, write_gaussians

SUFFIXES = {"ply": ".ply", "compressed-ply": ".compressed.ply", "splat": ".splat", "spz": ".spz"}


def gaussians(n=300, degree=1, seed=0):
    rng = np.random.default_rng(seed)
    return GaussianArrays(
        means=rng.uniform(-2, 2, (n, 3)),
        f_dc=rng.uniform(-1, 1, (n, 3)),
        f_rest=rng.uniform(-0.5, 0.5, (n, (degree + 1) ** 2 - 1, 3)),
        opacity=rng.normal(0, 2, n),
        scale=rng.uniform(-6, -2, (n, 3)),
        rot=rng.normal(size=(n, 4)),
    )


def farthest_nearest(a, b):
    """Largest distance from a point of ``a`` to its nearest point of ``b`` (order-free comparison)."""
    distances = np.linalg.norm(a.means[:, None, :].astype(np.float64) - b.means[None, :, :], axis=-1)
    return distances.min(axis=1).max()


@pytest.mark.parametrize("source, target", list(itertools.permutations(SUFFIXES, 2)))
def test_convert_between_every_pair_of_formats(tmp_path, source, target):
    g = gaussians()
    src = tmp_path / f"in{SUFFIXES[source]}"
    write_gaussians(src, g)
    dst = tmp_path / f"out{SUFFIXES[target]}"
    assert main(["convert", str(src), str(dst)]) == 0
    assert detect_format(dst) == target
    back = read_gaussians(dst)
    assert len(back) == len(g)
    assert back.sh_degree == (0 if "splat" in (source, target) else 1)
    # Centres survive every chain within the coarsest quantisation involved (compressed PLY: 10 bits of
    # a chunk's extent; the whole cloud spans 4 units).
    original = read_gaussians(src)
    assert farthest_nearest(back, original) <= 4 / 1023 and farthest_nearest(original, back) <= 4 / 1023


def test_convert_case_file_compressed_to_every_format(tmp_path):
    original = read_gaussians(CASES / "compressed-ply" / "splats.compressed.ply")
    for fmt, suffix in SUFFIXES.items():
        out = tmp_path / f"c{suffix}"
        assert main(["convert", str(CASES / "compressed-ply" / "splats.compressed.ply"), str(out)]) == 0
        assert len(read_gaussians(out)) == len(original) == 300, fmt


def test_convert_refuses_invalid_splats_unless_told_to_skip(tmp_path, caplog):
    src = CASES / "non-finite-splats" / "neginf_scale.ply"
    out = tmp_path / "o.spz"
    assert main(["convert", str(src), str(out)]) == 2
    assert not out.exists()
    assert "2 of 10 splats have invalid values" in caplog.text and "--skip-invalid" in caplog.text
    caplog.clear()
    assert main(["convert", str(src), str(out), "--skip-invalid"]) == 0
    assert len(read_gaussians(out)) == 8 and "left out 2 of 10 splats" in caplog.text


def test_convert_says_when_sh_is_dropped(tmp_path, caplog):
    src = tmp_path / "g.ply"
    write_gaussians(src, gaussians(degree=3))
    assert main(["convert", str(src), str(tmp_path / "g.splat")]) == 0
    assert "keeps SH degree 0 at most: degree 3" in caplog.text


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: [str(t / "in.ply"), str(t / "out.xyz")], "cannot tell the output format"),
        (lambda t: [str(t / "missing.ply"), str(t / "out.ply")], "no such file"),
        (lambda t: [str(t / "in.ply"), str(t / "exists.spz")], "already exists (use --force"),
        (lambda t: [str(t / "junk.spz"), str(t / "out.ply")], "the gzip stream is damaged"),
        (lambda t: [str(t / "points.ply"), str(t / "out.spz")], "lacks required properties"),
    ],
)
def test_convert_refusals_are_one_line_with_status_2(tmp_path, make_args, message):
    write_gaussians(tmp_path / "in.ply", gaussians(n=3))
    (tmp_path / "exists.spz").write_bytes(b"")
    (tmp_path / "junk.spz").write_bytes(b"\x1f\x8bnot really gzip")
    (tmp_path / "points.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    result = subprocess.run(
        [sys.executable, "-m", "engine", "convert", *make_args(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_convert_refuses_a_file_whose_every_splat_is_invalid(tmp_path, caplog):
    rows = np.zeros(
        4,
        dtype=[
            (n, "<f4")
            for n in (
                "x",
                "y",
                "z",
                "f_dc_0",
                "f_dc_1",
                "f_dc_2",
                "opacity",
                "scale_0",
                "scale_1",
                "scale_2",
                "rot_0",
                "rot_1",
                "rot_2",
                "rot_3",
            )
        ],
    )
    rows["x"] = np.nan
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "all_bad.ply"))
    assert main(["convert", str(tmp_path / "all_bad.ply"), str(tmp_path / "o.spz"), "--skip-invalid"]) == 2
    assert "all 4 splats have invalid values; nothing to convert" in caplog.text
    assert not (tmp_path / "o.spz").exists()
