"""``python -m engine generate "PROMPT" --model BUNDLE --out DIR [options]``: text -> run folder.

``--from-metadata RUN/metadata.json`` re-runs a recorded generation (same settings and seed).
"""

from __future__ import annotations

import argparse
import logging
import sys

from engine.pipeline.settings import CONDITIONINGS, GenerationSettings, RuntimeOptions, SettingsError

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    defaults = GenerationSettings(prompt="-")
    parser = subparsers.add_parser(
        "generate",
        help="generate a 3D scene from a text prompt",
        description="Text -> video latent (Wan 2.1) -> stitched 3D decoder -> a run folder with scene.ply, "
        "cameras.json, frames.mp4, depth.mp4, flythrough.mp4 and metadata.json.",
    )
    parser.add_argument("prompt", nargs="?", help="scene description (omit with --from-metadata)")
    parser.add_argument("--model", help="model bundle folder (with vist3a.json)")
    parser.add_argument("--out", required=True, help="run folder to create (must not exist)")
    parser.add_argument("--from-metadata", help="re-run the generation recorded in this metadata.json")
    parser.add_argument("--negative-prompt", default=None, help="default: the conditioning preset's negative prompt")
    parser.add_argument("--no-orbit-template", action="store_true", help="use the prompt as is")
    parser.add_argument(
        "--conditioning",
        choices=CONDITIONINGS,
        default="auto",
        help="prompt template, negative prompt and sampler schedule: 'released' (the official VIST3A inference), "
        "'ours', or 'auto' (the model's own: released for the released VIST3A bundle)",
    )
    parser.add_argument(
        "--no-voxel-merge", action="store_true", help="one Gaussian per pixel (the released model merges in voxels)"
    )
    parser.add_argument("--frames", type=int, default=defaults.num_frames, help="4k+1 (default %(default)s)")
    parser.add_argument("--height", type=int, default=defaults.height, help="multiple of 16 (default %(default)s)")
    parser.add_argument("--width", type=int, default=defaults.width, help="multiple of 16 (default %(default)s)")
    parser.add_argument("--steps", type=int, default=defaults.num_steps, help="default %(default)s")
    parser.add_argument("--cfg", type=float, default=defaults.guidance_scale, help="guidance (default %(default)s)")
    parser.add_argument("--flow-shift", type=float, default=defaults.flow_shift, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=None, help="default: random (recorded in metadata.json)")
    parser.add_argument("--points", action="store_true", help="write a coloured point cloud instead of Gaussians")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16 (default auto)")
    parser.add_argument(
        "--cpu-offload",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="move models to the GPU one at a time (default: decided from the free GPU memory)",
    )
    parser.add_argument(
        "--vae-tiling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode the video in tiles, less memory (default: decided from the free GPU memory)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.generator.text import unknown_words_message
    from engine.pipeline.run_folder import regenerate, write_outputs
    from engine.pipeline.vist3a import GenerationCancelled, Vist3aPipeline

    bars: dict = {}

    def progress(stage: str, step: int, total: int, preview) -> None:
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="step", file=sys.stderr, leave=True)
        bar.n = step
        bar.refresh()

    try:
        runtime = RuntimeOptions(
            device=args.device, dtype=args.dtype, cpu_offload=args.cpu_offload, vae_tiling=args.vae_tiling
        )
        if args.from_metadata:
            out = regenerate(args.from_metadata, args.out, model=args.model, runtime=runtime, progress=progress)
        else:
            if not args.prompt or not args.model:
                logger.error("generate needs a PROMPT and --model (or --from-metadata)")
                return 2
            settings = GenerationSettings(
                prompt=args.prompt,
                negative_prompt=args.negative_prompt,
                orbit_template=not args.no_orbit_template,
                conditioning=args.conditioning,
                voxel_merge=False if args.no_voxel_merge else None,
                num_frames=args.frames,
                height=args.height,
                width=args.width,
                num_steps=args.steps,
                guidance_scale=args.cfg,
                flow_shift=args.flow_shift,
                seed=args.seed,
                output_kind="points" if args.points else "gaussians",
            )
            pipeline = Vist3aPipeline.from_pretrained(args.model, runtime=runtime, progress=progress)
            pipeline.check_settings(settings)
            result = pipeline.generate(settings, progress=progress)
            pipeline.free_gpu_memory()
            out = write_outputs(result, args.out, progress=progress)
            if result.unknown_words:
                print(unknown_words_message(result.unknown_words), file=sys.stderr)
    except (SettingsError, FileNotFoundError, FileExistsError) as exc:
        logger.error("%s", exc)
        return 2
    except (GenerationCancelled, KeyboardInterrupt):
        logger.error("cancelled; nothing was written")
        return 130
    finally:
        for bar in bars.values():
            bar.close()
    print(out)
    return 0
