"""CPU benchmark of engine.render.rasterize (torch backend): time and peak memory per scene size.

Every case runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own.
The scene is N random Gaussians spread through the view frustum at depths 2..6 with world-space
scales around 0.01 (about half a pixel at 256^2, a pixel at 512^2), random orientations,
opacities around 0.5 and degree-3 SH, seen by one 60-degree camera.

    .venv/bin/python benchmarks/rasterize.py            # 10k, 100k, 1M Gaussians at 256^2 and 512^2
    .venv/bin/python benchmarks/rasterize.py --quick    # 10k and 100k at 256^2
    .venv/bin/python benchmarks/rasterize.py --threads 1

Timings on a shared machine are noisy; each figure is the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FULL_CASES = [(n, res) for res in (256, 512) for n in (10_000, 100_000, 1_000_000)]
QUICK_CASES = [(10_000, 256), (100_000, 256)]


def make_scene(num_gaussians: int, resolution: int, seed: int = 0):
    """Random Gaussians inside the frustum of a 60-degree camera at the origin looking down +z."""
    import torch

    from engine.scene import Cameras, GaussianScene

    gen = torch.Generator().manual_seed(seed)
    fov = math.radians(60)
    depth = 2 + 4 * torch.rand(num_gaussians, generator=gen)
    half_extent = math.tan(fov / 2) * depth
    x = (2 * torch.rand(num_gaussians, generator=gen) - 1) * half_extent
    y = (2 * torch.rand(num_gaussians, generator=gen) - 1) * half_extent
    scene = GaussianScene(
        means=torch.stack([x, y, depth], dim=1),
        rotations=torch.randn(num_gaussians, 4, generator=gen),
        log_scales=math.log(0.01) + 0.4 * torch.randn(num_gaussians, 3, generator=gen),
        opacity_logits=torch.randn(num_gaussians, generator=gen),
        sh=0.3 * torch.randn(num_gaussians, 16, 3, generator=gen),
    )
    intrinsics = Cameras.intrinsics_from_fov(fov, resolution, resolution)
    cameras = Cameras(torch.eye(4)[None], intrinsics[None], resolution, resolution)
    return scene, cameras


def run_case(num_gaussians: int, resolution: int, repeats: int, threads: int | None) -> dict:
    """Times one case in this process; returns a dict of results."""
    import torch

    from engine.render import rasterize

    if threads is not None:
        torch.set_num_threads(threads)
    scene, cameras = make_scene(num_gaussians, resolution)
    params = [scene.means, scene.rotations, scene.log_scales, scene.opacity_logits, scene.sh]
    for p in params:
        p.requires_grad_(True)
    # Warm up kernels and allocator on a small scene so the first timed run is not penalised.
    warm_scene, warm_cameras = make_scene(1000, 64, seed=1)
    rasterize(warm_scene, warm_cameras, backend="torch")
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    forward_times, total_times = [], []
    for _ in range(repeats):
        with torch.no_grad():
            start = time.perf_counter()
            rasterize(scene, cameras, backend="torch")
            forward_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = rasterize(scene, cameras, backend="torch")
        (out.rgb.sum() + out.alpha.sum() + 0.01 * out.depth.sum()).backward()
        total_times.append(time.perf_counter() - start)
        coverage = float(out.alpha.mean())
        del out
        for p in params:
            p.grad = None
    return {
        "gaussians": num_gaussians,
        "resolution": resolution,
        "threads": torch.get_num_threads(),
        "forward_s": min(forward_times),
        "forward_backward_s": min(total_times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mb": baseline_mb,
        "mean_alpha": coverage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k and 100k Gaussians at 256^2 only")
    parser.add_argument("--repeats", type=int, default=2, help="runs per case; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--case", nargs=2, type=int, metavar=("GAUSSIANS", "RESOLUTION"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # child process: one case, JSON on stdout
        sys.path.insert(0, str(PROJECT_ROOT))
        print(json.dumps(run_case(*args.case, repeats=args.repeats, threads=args.threads)))
        return

    cases = QUICK_CASES if args.quick else FULL_CASES
    header = (
        f"{'gaussians':>10} {'image':>8} {'threads':>7} {'forward s':>10} {'fwd+bwd s':>10} "
        f"{'peak RSS MB':>12} {'(base MB)':>10} {'alpha':>6}"
    )
    print(header)
    print("-" * len(header))
    for num_gaussians, resolution in cases:
        command = [sys.executable, __file__, "--case", str(num_gaussians), str(resolution)]
        command += ["--repeats", str(args.repeats if num_gaussians < 1_000_000 else 1)]
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)
        if result.returncode != 0:
            print(f"{num_gaussians:>10} {resolution:>4}^2 failed:\n{result.stderr}", file=sys.stderr)
            continue
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"{r['gaussians']:>10} {r['resolution']:>6}^2 {r['threads']:>7} {r['forward_s']:>10.3f} "
            f"{r['forward_backward_s']:>10.3f} {r['peak_rss_mb']:>12.0f} {r['baseline_rss_mb']:>10.0f} "
            f"{r['mean_alpha']:>6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
