"""Peak memory and time of the streaming stitching-layer search as the number of clips grows.

The Wan + AnySplat geometry (16 latent channels, conv3d 5x3x3 -> D_in = 720, D_out = 1024) with 24
candidate layers, on synthetic clips: random latents and random activations (the fit's numbers do not
matter here, only its cost). Each clip count runs in a fresh subprocess so that ``ru_maxrss`` (the
process's peak resident set) belongs to that run alone. Expected: time linear in N, memory flat in N.

    .venv/bin/python benchmarks/stitch_search.py                 # N = 10, 100, 1000 side by side
    .venv/bin/python benchmarks/stitch_search.py --clips 10 50 --latent-size 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `engine` importable

SPEC = "conv3d_k5x3x3_o1024_s1x2x2_p2x1x1"
LATENT_CHANNELS = 16
PREFIX_TOKENS = 5  # camera + 4 registers, dropped by the search


def current_rss_mib() -> float:
    """Resident set size now (Linux /proc), MiB."""
    with open("/proc/self/statm") as file:
        pages = int(file.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_child(num_clips: int, num_layers: int, frames: int, latent_size: int, threads: int) -> dict:
    import torch

    from engine.stitching.layer_spec import parse_spec
    from engine.stitching.search import find_stitch_layer

    torch.set_num_threads(threads)
    spec = parse_spec(SPEC)
    latent_frames = (frames - 1) // 4 + 1
    grid = spec.output_size(frames, latent_size, latent_size)
    tokens_per_frame = PREFIX_TOKENS + grid[1] * grid[2]
    generator = torch.Generator().manual_seed(0)

    def clips():
        # a generator: clips exist one at a time, as when streaming from disk
        for _ in range(num_clips):
            dummy_frames = torch.zeros(1, frames, 3, 1, 1)  # the activation source below ignores pixels
            latent = torch.randn(1, LATENT_CHANNELS, latent_frames, latent_size, latent_size, generator=generator)
            yield dummy_frames, latent

    def activations(_frames):
        shape = (1, frames, tokens_per_frame, spec.out_channels)
        return [torch.randn(shape, generator=generator) for _ in range(num_layers)]

    names = [f"layer_{i}" for i in range(num_layers)]
    rss_before = current_rss_mib()
    start = time.perf_counter()
    result = find_stitch_layer(clips(), activations, names, spec, num_prefix_tokens=PREFIX_TOKENS)
    seconds = time.perf_counter() - start
    accumulator_mib = 8 * (720 * 720 + num_layers * 720 * spec.out_channels) / 2**20
    return {
        "clips": num_clips,
        "rows": result.settings["num_rows"],
        "seconds": round(seconds, 2),
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "search_growth_mib": round(peak_rss_mib() - rss_before, 1),
        "accumulators_mib": round(accumulator_mib, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[10, 100, 1000], help="clip counts N to compare")
    parser.add_argument("--layers", type=int, default=24, help="candidate layers")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip (4k+1)")
    parser.add_argument("--latent-size", type=int, default=4, help="latent height = width")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: run one N and print JSON
    args = parser.parse_args()

    if args.child is not None:
        print(json.dumps(run_child(args.child, args.layers, args.frames, args.latent_size, args.threads)))
        return 0

    rows = []
    for num_clips in args.clips:
        command = [sys.executable, __file__, "--child", str(num_clips), "--layers", str(args.layers)]
        command += [
            "--frames",
            str(args.frames),
            "--latent-size",
            str(args.latent_size),
            "--threads",
            str(args.threads),
        ]
        child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            raise SystemExit(f"the run with N={num_clips} failed (exit {child.returncode})")
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"N={num_clips} done", file=sys.stderr)

    header = ["clips", "rows", "seconds", "rss_before_mib", "peak_rss_mib", "search_growth_mib", "accumulators_mib"]
    print(
        f"{args.layers} layers, D_in 720, D_out 1024, {args.frames} frames, latent {args.latent_size}x{args.latent_size}"
    )
    print(" | ".join(f"{name:>17}" for name in header))
    for row in rows:
        print(" | ".join(f"{row[name]:>17}" for name in header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
