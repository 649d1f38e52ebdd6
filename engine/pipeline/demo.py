"""``python -m engine demo "PROMPT"``: generate a scene with the best model available on this machine.

Model choice, in order: ``--model PATH``; the bundle named by the environment variable ``VIST3A_MODEL``;
the default bundle folder (``~/.cache/vist3a/models/default``, where the add-on's "Download models" and
future releases put the embedded default model). When none of these holds a bundle, a tiny randomly
initialised bundle of the real architectures is built (``engine.testing.tiny``, cached under
``~/.cache/vist3a/models/tiny-random``) and the command says plainly that its scene is noise: the run
then demonstrates the whole chain (text -> Wan latent -> stitched decoder -> files), not a model.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger("engine.pipeline.demo")

CACHE = Path(os.environ.get("VIST3A_HOME", Path.home() / ".cache" / "vist3a"))
DEFAULT_BUNDLE = CACHE / "models" / "default"
TINY_BUNDLE = CACHE / "models" / "tiny-random"
# What the tiny model can do in seconds on a CPU: 9 frames of 64 x 64 (56 x 56 at the decoder).
TINY_SETTINGS = dict(num_frames=9, height=64, width=64, num_steps=12)


def find_model(explicit: str | None) -> tuple[Path | None, str]:
    """(bundle folder or None, where it came from)."""
    from engine.pipeline.settings import BUNDLE_MANIFEST

    if explicit:
        return Path(explicit), "--model"
    env = os.environ.get("VIST3A_MODEL")
    if env:
        return Path(env), "VIST3A_MODEL"
    if (DEFAULT_BUNDLE / BUNDLE_MANIFEST).is_file():
        return DEFAULT_BUNDLE, "the default model folder"
    return None, ""


def tiny_bundle() -> Path:
    """The cached tiny random bundle, built on first use (atomically, so a crash leaves no half bundle)."""
    from engine.io.atomic import atomic_directory
    from engine.pipeline.settings import BUNDLE_MANIFEST
    from engine.testing.tiny import build_tiny_bundle

    if (TINY_BUNDLE / BUNDLE_MANIFEST).is_file():
        return TINY_BUNDLE
    TINY_BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(TINY_BUNDLE, replace=True) as staging:
        build_tiny_bundle(staging)
    # The manifest resolves parts relative to its own folder, so the staging path never leaks into it.
    return TINY_BUNDLE


def default_output(prompt: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "scene"
    return Path("outputs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.pipeline.run_folder import write_outputs
    from engine.pipeline.settings import (
        GenerationSettings,
        ModelBundleError,
        ModelLoadError,
        ModelNotFoundError,
        RuntimeOptions,
        SettingsError,
    )
    from engine.pipeline.vist3a import Vist3aPipeline

    bundle, source = find_model(args.model)
    settings = {"prompt": args.prompt, "seed": args.seed}
    if bundle is None:
        print(
            "No trained VIST3A model found (looked at --model, $VIST3A_MODEL and "
            f"{DEFAULT_BUNDLE}).\nUsing a TINY RANDOMLY INITIALISED model of the real architectures: the scene "
            "it produces is noise. This run demonstrates the full pipeline, not a trained model.",
            flush=True,
        )
        bundle = tiny_bundle()
        settings.update(TINY_SETTINGS)
    else:
        print(f"Model: {bundle} (from {source})", flush=True)
    overrides = {"num_frames": args.frames, "height": args.size, "width": args.size, "num_steps": args.steps}
    settings.update({key: value for key, value in overrides.items() if value is not None})
    try:
        generation = GenerationSettings(**settings)
    except SettingsError as error:
        log.error("%s", error)
        return 2
    out = Path(args.out) if args.out else default_output(args.prompt)
    if out.exists():
        log.error("output folder %s already exists; choose another with --out", out)
        return 2
    bars: dict[str, tqdm] = {}

    def progress(stage, step, total, preview):
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, leave=False))
        bar.update(step - bar.n)

    try:
        pipeline = Vist3aPipeline.from_pretrained(bundle, runtime=RuntimeOptions(device=args.device))
        result = pipeline.generate(generation, progress=progress)
    except (ModelNotFoundError, ModelBundleError, ModelLoadError, SettingsError) as error:
        log.error("%s", error)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = write_outputs(result, out, progress=progress)
    for bar in bars.values():
        bar.close()
    print(
        f"Scene: {len(result.scene)} {type(result.scene).__name__}, {len(result.cameras)} cameras, seed {result.settings.seed}"
    )
    print(folder)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="generate a scene with the best model available locally")
    parser.add_argument("prompt", help="what to generate")
    parser.add_argument("--out", help="output folder (must not exist; default outputs/<time>-<prompt>)")
    parser.add_argument("--model", help="model bundle folder (default: $VIST3A_MODEL, then the default model)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--frames", type=int, help="video frames (4k+1; default: the model's)")
    parser.add_argument("--size", type=int, help="square frame size in pixels (default: the model's)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.set_defaults(func=run)
