"""Do Blender renders of imported splats match the splats? PSNR, render time and memory per splat mode.

    .venv/bin/python benchmarks/blender_fidelity.py [--seeds 0 1 2] [--spacings 0.08 0.04] [--size 256]
                                                    [--samples 16] [--modes POINTS ELLIPSOIDS] [--keep DIR]

Ground truth: procedural scenes of ``engine.data`` (exact Gaussians, SH degree 0) and camera 000 of their
orbit, rendered by the engine's reference rasterizer (``engine.render.rasterize``, the 3DGS/gsplat
model) over the sky colour. The same scene goes through the add-on as a user's file would (a run folder:
``scene.ply`` + ``cameras.json``, installed extension, ``vist3a.import_result`` operator) and is
rendered with Cycles (CPU) from the imported camera 000 over a world of the same colour. Each
(scene, mode) runs in its own Blender process, so its peak memory is its own.

Printed per mode and splat count: PSNR against the reference (dB, 8-bit PNGs), Cycles render time
(s), peak resident memory of the Blender process (MB) and the transparent-bounce limit the import set.

``tests/test_addon_render_fidelity.py`` uses ``prepare_case`` / ``render_in_blender`` from here with the bounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULT_MARKER = "@@FIDELITY@@ "

# Runs in Blender (the bpy module): python blender_scripts/fidelity_render.py PARAMS.json
BLENDER_SCRIPT = Path(__file__).resolve().parent / "blender_scripts" / "fidelity_render.py"


@dataclass
class Case:
    """One ground-truth scene written as a run folder, with its reference image of camera 000."""

    run_dir: Path
    reference: np.ndarray  # (H, W, 3) display values in [0, 1]
    splats: int
    background: tuple


def prepare_case(folder: Path, seed: int, spacing: float, size: int) -> Case:
    """Writes ``engine.data.generate_scene(seed)`` (object sample spacing ``spacing``) with its orbit cameras
    (``size`` x ``size``) into ``folder`` and renders camera 000 with the reference rasterizer."""
    import torch

    from engine.data.clips import clip_cameras
    from engine.data.scenes import SKY_COLOR, generate_scene
    from engine.io import write_cameras_json, write_gaussian_ply
    from engine.io.run_format import CAMERAS_FILE, SCENE_FILE
    from engine.io.scene_io import camera_arrays_from_cameras, gaussian_arrays_from_scene
    from engine.render import rasterize

    scene = generate_scene(seed, surface_spacing=spacing, floor_spacing=min(0.2, 2.5 * spacing))
    cameras = clip_cameras(scene, "orbit", 5, size, size, np.random.default_rng(seed))
    folder.mkdir(parents=True, exist_ok=True)
    write_gaussian_ply(folder / SCENE_FILE, gaussian_arrays_from_scene(scene.gaussians))
    write_cameras_json(folder / CAMERAS_FILE, camera_arrays_from_cameras(cameras))
    with torch.no_grad():
        out = rasterize(scene.gaussians, cameras[0:1], background=SKY_COLOR, backend="torch")
    reference = out.rgb[0].clamp(0, 1).numpy().astype(np.float64)
    # The Cycles render is an 8-bit PNG: quantise the reference the same way.
    reference = np.round(reference * 255) / 255
    return Case(folder, reference, len(scene.gaussians.means), tuple(SKY_COLOR))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def build_zip(out_dir: Path) -> Path:
    spec = importlib.util.spec_from_file_location("vist3a_build_fidelity", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.build_extension(out_dir=out_dir)


def render_in_blender(
    python: str, zip_path: Path, case: Case, mode: str, png: Path, samples: int, profile: Path, timeout: float = 600
) -> dict:
    """Imports ``case`` with the add-on in ``mode`` and renders camera 000 with Cycles in a fresh Blender.

    Returns the Blender figures plus ``psnr`` (dB against the reference) and ``image`` (H, W, 3)."""
    profile.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(profile))
    parameters = {
        "zip": str(zip_path),
        "run_dir": str(case.run_dir) + os.sep,
        "mode": mode,
        "png": str(png),
        "samples": int(samples),
        "background": [float(c) for c in case.background],
    }
    params_file = profile / "fidelity_params.json"
    params_file.write_text(json.dumps(parameters), encoding="utf-8")
    command = [python, str(BLENDER_SCRIPT), str(params_file)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=profile, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"Blender run failed ({mode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    figures = json.loads(lines[0][len(RESULT_MARKER) :])
    image = np.load(str(png) + ".npy").astype(np.float64)
    figures["image"] = image
    figures["psnr"] = psnr(image, case.reference)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--spacings", type=float, nargs="+", default=[0.08, 0.04])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--modes", nargs="+", default=["POINTS", "ELLIPSOIDS"])
    parser.add_argument("--python", default=sys.executable, help="a Python with the bpy module (default: this one)")
    parser.add_argument("--keep", type=Path, help="keep renders and references in this folder")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="vist3a-fidelity-") as tmp:
        tmp = Path(tmp)
        out = args.keep or tmp / "out"
        out.mkdir(parents=True, exist_ok=True)
        zip_path = build_zip(tmp / "dist")
        for spacing in args.spacings:
            for seed in args.seeds:
                case = prepare_case(tmp / f"case_{seed}_{spacing}", seed, spacing, args.size)
                np.save(out / f"reference_{seed}_{spacing}.npy", case.reference)
                for mode in args.modes:
                    png = out / f"render_{seed}_{spacing}_{mode}.png"
                    figures = render_in_blender(
                        args.python, zip_path, case, mode, png, args.samples, tmp / f"profile_{seed}_{spacing}_{mode}"
                    )
                    figures.pop("image")
                    rows.append({"seed": seed, "spacing": spacing, "splats": case.splats, "mode": mode, **figures})
                    print(
                        f"seed {seed} splats {case.splats:7d} {mode:10s} PSNR {figures['psnr']:6.2f} dB  "
                        f"render {figures['render_s']:6.2f} s  peak {figures['peak_mb']:7.0f} MB  "
                        f"bounces {figures['transparent_max_bounces']}",
                        flush=True,
                    )
    print(f"\nCycles {args.samples} spp at {args.size}x{args.size}, mean over seeds {args.seeds}:")
    print(f"{'splats (mean)':>14} {'mode':>11} {'PSNR dB':>8} {'min dB':>7} {'render s':>9} {'peak MB':>8}")
    for spacing in args.spacings:
        for mode in args.modes:
            sel = [r for r in rows if r["spacing"] == spacing and r["mode"] == mode]
            print(
                f"{np.mean([r['splats'] for r in sel]):14.0f} {mode:>11} {np.mean([r['psnr'] for r in sel]):8.2f} "
                f"{min(r['psnr'] for r in sel):7.2f} {np.mean([r['render_s'] for r in sel]):9.2f} "
                f"{np.mean([r['peak_mb'] for r in sel]):8.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
