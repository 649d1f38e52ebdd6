"""Splat import into Blender: the add-on's NumPy importer vs a naive per-point loop, and the Cycles render time.

    .venv/bin/python benchmarks/blender_import.py [--sizes 100000 1000000] [--render-size 256] [--samples 16]

Builds the extension zip, writes synthetic 3DGS PLYs, then runs Blender (the bpy module) in a
subprocess that installs the zip and, for each size, times
  * ours:  ``blender_data.import_result`` (read PLY + point cloud + attributes + material), and
  * naive: what existing splat add-ons do: read the same arrays, then a Python loop per point that
    creates the vertex and sets each attribute value one point at a time,
side by side in the same Blender, then renders the largest import from a camera with Cycles (CPU).
The figures come out as a table and as JSON (``--json``).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.io import GaussianArrays, write_gaussian_ply  # noqa: E402
from engine.io.run_format import CAMERAS_FILE, SCENE_FILE  # noqa: E402

SH_C0 = 0.28209479177387814

# Runs inside Blender: python blender_scripts/import_speed.py PARAMS.json
BLENDER_SCRIPT = Path(__file__).resolve().parent / "blender_scripts" / "import_speed.py"


def synthetic_scene(count: int, seed: int = 0) -> GaussianArrays:
    """Coloured blobs in front of an identity camera (OpenCV: +z forward), with anisotropic splats."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([-1.5, -1.0, 3.5], [1.5, 1.0, 5.0], size=(12, 3))
    colours = rng.uniform(0.05, 0.95, size=(12, 3))
    which = rng.integers(0, 12, size=count)
    spread = 0.35 * (count / 100_000) ** (-1 / 6)  # denser scenes are a little tighter
    return GaussianArrays(
        means=centres[which] + rng.normal(size=(count, 3)) * spread,
        f_dc=(colours[which] - 0.5) / SH_C0,
        f_rest=np.zeros((count, 0, 3)),
        opacity=rng.normal(1.0, 1.0, size=count),
        scale=np.log(rng.uniform(0.004, 0.02, size=(count, 3))),
        rot=rng.normal(size=(count, 4)),
    )


def build_zip(out_dir: Path) -> Path:
    spec = importlib.util.spec_from_file_location("vist3a_build", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.build_extension(out_dir=out_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--render-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--png", type=Path, default=None, help="keep the render here (default: temp folder)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vist3a-bench-") as tmp:
        tmp = Path(tmp)
        zip_path = build_zip(tmp / "dist")
        plys = {}
        for size in args.sizes:
            folder = tmp / f"scene_{size}"
            folder.mkdir()
            write_gaussian_ply(folder / SCENE_FILE, synthetic_scene(size))
            f = args.render_size * 0.8
            camera = {"c2w": np.eye(4).tolist(), "fx": f, "fy": f, "cx": args.render_size / 2,
                      "cy": args.render_size / 2, "w": args.render_size, "h": args.render_size}  # fmt: skip
            document = {"format": "vist3a-cameras", "version": 1, "convention": "opencv", "cameras": [camera]}
            (folder / CAMERAS_FILE).write_text(json.dumps(document))
            plys[str(size)] = str(folder / SCENE_FILE)
        png = str((args.png or tmp / "render.png").resolve())
        params_file = tmp / "params.json"
        parameters = {"zip": str(zip_path), "plys": plys, "render_size": args.render_size, "samples": args.samples}
        params_file.write_text(json.dumps({**parameters, "png": png}), encoding="utf-8")
        env_dir = tmp / "blender_user"
        env_dir.mkdir()
        completed = subprocess.run(
            [sys.executable, "-X", "faulthandler", str(BLENDER_SCRIPT), str(params_file)],
            env={**os.environ, "BLENDER_USER_RESOURCES": str(env_dir)},
            capture_output=True,
            text=True,
        )
        lines = [line for line in completed.stdout.splitlines() if line.startswith("@@RESULT@@ ")]
        if completed.returncode != 0 or not lines:
            print(f"Blender exited with code {completed.returncode}", file=sys.stderr)
            print(completed.stdout[-3000:], completed.stderr[-3000:], file=sys.stderr)
            return 1
        results = json.loads(lines[0].split(" ", 1)[1])

    print(f"{'splats':>10} {'ours (s)':>10} {'naive (s)':>10} {'speed-up':>9}")
    for size, r in results["import"].items():
        print(f"{int(size):>10} {r['ours_s']:>10.3f} {r['naive_s']:>10.3f} {r['naive_s'] / r['ours_s']:>8.1f}x")
    render = results["render"]
    print(
        f"Cycles CPU render, {render['splats']} splats, {render['size']}x{render['size']}, "
        f"{render['samples']} samples: {render['seconds']:.2f} s"
    )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
