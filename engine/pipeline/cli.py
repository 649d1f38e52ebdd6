"""``python -m engine generate "PROMPT" [--model BUNDLE] --out DIR [options]``: text -> run folder.

Without ``--model`` the model is chosen as by ``demo`` (``engine.pipeline.model_choice``). Settings not
given on the command line take the model's defaults (its manifest's ``defaults``), then the engine's.
``--from-metadata RUN/metadata.json`` re-runs a recorded generation (same settings and seed).
"""

from __future__ import annotations

import argparse
import logging
import sys

from engine.pipeline.settings import (
    CONDITIONINGS,
    GenerationSettings,
    ModelBundle,
    ModelBundleError,
    RuntimeOptions,
    SettingsError,
    in_option_terms,
)

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
    parser.add_argument(
        "--model",
        help="model bundle folder (with vist3a.json); default: $VIST3A_MODEL, then ~/.cache/vist3a/models/default, "
        "then the embedded default model in models/default",
    )
    parser.add_argument("--out", required=True, help="run folder to create (must not exist)")
    parser.add_argument("--from-metadata", help="re-run the generation recorded in this metadata.json")
    parser.add_argument("--negative-prompt", default=None, help="default: the conditioning preset's negative prompt")
    parser.add_argument(
        "--no-orbit-template", dest="orbit_template", action="store_false", default=None, help="use the prompt as is"
    )
    parser.add_argument(
        "--conditioning",
        choices=CONDITIONINGS,
        default=None,
        help="prompt template, negative prompt and sampler schedule: 'released' (the official VIST3A inference), "
        "'ours', or 'auto' (the model's own: released for the released VIST3A bundle); default: the model's, else auto",
    )
    parser.add_argument(
        "--no-voxel-merge",
        dest="voxel_merge",
        action="store_false",
        default=None,
        help="one Gaussian per pixel (the released model merges in voxels)",
    )
    # Defaults: the model's (its manifest's "defaults"), else the engine's, shown here.
    parser.add_argument("--frames", type=int, help=f"4k+1 (default: the model's, else {defaults.num_frames})")
    parser.add_argument("--height", type=int, help=f"multiple of 16 (default: the model's, else {defaults.height})")
    parser.add_argument("--width", type=int, help=f"multiple of 16 (default: the model's, else {defaults.width})")
    parser.add_argument("--steps", type=int, help=f"default: the model's, else {defaults.num_steps}")
    parser.add_argument("--cfg", type=float, help=f"guidance (default: the model's, else {defaults.guidance_scale})")
    parser.add_argument("--flow-shift", type=float, help=f"default: the model's, else {defaults.flow_shift}")
    parser.add_argument("--seed", type=int, default=None, help="default: random (recorded in metadata.json)")
    parser.add_argument(
        "--points",
        dest="output_kind",
        action="store_const",
        const="points",
        default=None,
        help="write a coloured point cloud instead of Gaussians",
    )
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


# command-line option (argparse dest) -> GenerationSettings field, for the options whose default is the model's
_SETTING_OPTIONS = {
    "negative_prompt": "negative_prompt",
    "orbit_template": "orbit_template",
    "conditioning": "conditioning",
    "voxel_merge": "voxel_merge",
    "frames": "num_frames",
    "height": "height",
    "width": "width",
    "steps": "num_steps",
    "cfg": "guidance_scale",
    "flow_shift": "flow_shift",
    "output_kind": "output_kind",
}


# GenerationSettings field -> the option that sets it, for error messages in the command line's terms
_OPTION_OF_SETTING = {
    **{field_name: "--" + option.replace("_", "-") for option, field_name in _SETTING_OPTIONS.items()},
    "output_kind": "--points",
    "orbit_template": "--no-orbit-template",
    "voxel_merge": "--no-voxel-merge",
    "seed": "--seed",
    "prompt": "PROMPT",
}


def given_settings(args: argparse.Namespace) -> dict:
    """The settings given on the command line (GenerationSettings field names); the rest is the model's."""
    given = {"prompt": args.prompt, "seed": args.seed}
    given.update({field: getattr(args, option) for option, field in _SETTING_OPTIONS.items()})
    return {key: value for key, value in given.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.generator.text import unknown_words_message
    from engine.pipeline.model_choice import find_model
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
            if not args.prompt:
                logger.error("generate needs a PROMPT (or --from-metadata)")
                return 2
            choice = find_model(args.model)
            logger.info("model: %s (from %s)", choice.path, choice.source)
            bundle = ModelBundle.load(choice.path)
            settings = bundle.generation_settings(given_settings(args))
            pipeline = Vist3aPipeline.from_pretrained(bundle, runtime=runtime, progress=progress)
            pipeline.check_settings(settings)
            result = pipeline.generate(settings, progress=progress)
            pipeline.free_gpu_memory()
            out = write_outputs(result, args.out, progress=progress)
            if result.unknown_words:
                tqdm.write(unknown_words_message(result.unknown_words), file=sys.stderr)  # below any progress bar
    except SettingsError as exc:
        logger.error("%s", in_option_terms(exc, _OPTION_OF_SETTING))
        return 2
    except (ModelBundleError, FileNotFoundError, FileExistsError) as exc:
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
