"""Splat file formats: write / read seconds and file size for N random Gaussians, side by side.

    .venv/bin/python benchmarks/splat_formats.py [--splats 1000000] [--degree 3]

One table, one row per format (standard PLY, compressed PLY, .splat, .spz), all in one run on the same
Gaussians. Reading includes the validation every reader applies before values reach Blender. The
figures are what an import in Blender costs before any Blender data is made (the add-on uses the same
numpy readers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from engine.io import GaussianArrays, read_gaussians, write_gaussians  # noqa: E402

SUFFIXES = {"ply": ".ply", "compressed-ply": ".compressed.ply", "splat": ".splat", "spz": ".spz"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splats", type=int, default=1_000_000)
    parser.add_argument("--degree", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.splats
    gaussians = GaussianArrays(
        means=rng.uniform(-5, 5, (n, 3)),
        f_dc=rng.uniform(-1, 1, (n, 3)),
        f_rest=rng.uniform(-0.5, 0.5, (n, (args.degree + 1) ** 2 - 1, 3)),
        opacity=rng.normal(0, 2, n),
        scale=rng.uniform(-6, -1, (n, 3)),
        rot=rng.normal(size=(n, 4)),
    )
    print(f"{n} splats, SH degree {args.degree}")
    print(f"{'format':<16}{'write s':>10}{'read s':>10}{'MB':>10}{'bytes/splat':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, suffix in SUFFIXES.items():
            path = Path(tmp) / f"scene{suffix}"
            start = time.perf_counter()
            write_gaussians(path, gaussians, fmt)
            written = time.perf_counter() - start
            start = time.perf_counter()
            back = read_gaussians(path)
            read = time.perf_counter() - start
            assert len(back) == n
            size = path.stat().st_size
            print(f"{fmt:<16}{written:>10.2f}{read:>10.2f}{size / 2**20:>10.1f}{size / n:>13.1f}")


if __name__ == "__main__":
    main()
