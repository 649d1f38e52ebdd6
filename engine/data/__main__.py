"""Preview and time synthetic clips: ``python -m engine.data --seed 3 --sheet /tmp/clip.png``.

Prints the caption, the Gaussian count and the render time (best of ``--repeat`` runs), and with
``--sheet`` writes a contact sheet: the frames in the top row, their depth (near = bright) below.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from engine.data.clips import PATHS, Clip, render_clip, synthetic_scene_and_cameras


def contact_sheet(clip: Clip) -> np.ndarray:
    """(2H, T*W, 3) uint8: frames on top, depth below (inverse depth, normalised over the clip)."""
    frames = clip.frames.numpy()
    inverse_depth = np.where(clip.alpha.numpy() > 0.5, 1.0 / np.maximum(clip.depth.numpy(), 1e-6), 0.0)
    scale = inverse_depth.max() if inverse_depth.max() > 0 else 1.0
    depth_rgb = np.repeat((inverse_depth / scale)[..., None], 3, axis=-1)
    rows = [np.concatenate(list(images), axis=1) for images in (frames, depth_rgb)]
    return (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.data", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--path", choices=PATHS, default="orbit")
    parser.add_argument("--frames", type=int, default=13)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="render this many times and report the fastest")
    parser.add_argument("--sheet", help="write a PNG contact sheet here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    scene, cameras = synthetic_scene_and_cameras(args.seed, args.frames, args.height, args.width, args.path)
    setup_seconds = time.perf_counter() - start
    render_seconds = []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        clip = render_clip(scene, cameras)
        render_seconds.append(time.perf_counter() - start)

    print(f"caption: {clip.caption}")
    print(f"gaussians: {len(scene.gaussians)}  torch threads: {torch.get_num_threads()}")
    print(
        f"scene and cameras: {setup_seconds:.3f} s  render {args.frames} x {args.height}x{args.width}: {min(render_seconds):.3f} s"
    )
    if args.sheet:
        import imageio.v3 as iio

        iio.imwrite(args.sheet, contact_sheet(clip))
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
