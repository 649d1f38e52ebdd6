"""``python -m engine demo "PROMPT"``: generate a scene with the best model available on this machine.

Model choice (``engine.pipeline.model_choice``): ``--model PATH``; the bundle named by the environment
variable ``VIST3A_MODEL``; the user's default folder (``~/.cache/vist3a/models/default``); the embedded
default model (``models/default`` next to the engine package). With none of them it stops with a message
saying where it looked and what to do. Settings not given (``--frames``, ``--size``, ``--steps``) take the
model's defaults (its manifest's ``defaults``), so the embedded model runs at the size it was trained for.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

log = logging.getLogger("engine.pipeline.demo")

# demo option (argparse dest) -> the GenerationSettings fields it sets; None leaves them to the model
DEMO_SETTING_OPTIONS = {"frames": ("num_frames",), "size": ("height", "width"), "steps": ("num_steps",)}
# GenerationSettings field -> the demo option that sets it, for error messages in the command line's terms
DEMO_OPTIONS = {
    "seed": "--seed",
    **{field_name: f"--{option}" for option, fields in DEMO_SETTING_OPTIONS.items() for field_name in fields},
}


def default_output(prompt: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "scene"
    return Path("outputs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def run(args: argparse.Namespace) -> int:
    # torch-free imports first: a missing model or a bad setting is reported in a fraction of a second
    from engine.pipeline.model_choice import find_model
    from engine.pipeline.settings import (
        ModelBundle,
        ModelBundleError,
        ModelLoadError,
        ModelNotFoundError,
        RuntimeOptions,
        SettingsError,
        in_option_terms,
    )

    out = Path(args.out) if args.out else default_output(args.prompt)
    if out.exists():
        log.error("output folder %s already exists; choose another with --out", out)
        return 2
    try:
        choice = find_model(args.model)
        bundle = ModelBundle.load(choice.path)
    except (ModelNotFoundError, ModelBundleError) as error:
        log.error("%s", error)
        return 2
    print(f"Model: {choice.path} (from {choice.source})", flush=True)
    given = {"prompt": args.prompt, "seed": args.seed}
    for option, fields in DEMO_SETTING_OPTIONS.items():
        if getattr(args, option) is not None:
            given.update(dict.fromkeys(fields, getattr(args, option)))
    try:
        generation = bundle.generation_settings(given)
    except SettingsError as error:
        log.error("%s", in_option_terms(error, DEMO_OPTIONS))
        return 2
    from tqdm import tqdm

    from engine.generator.text import unknown_words_message
    from engine.pipeline.run_folder import write_outputs
    from engine.pipeline.vist3a import Vist3aPipeline

    bars: dict[str, tqdm] = {}

    def progress(stage, step, total, preview):
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, leave=False))
        bar.update(step - bar.n)

    try:
        pipeline = Vist3aPipeline.from_pretrained(bundle, runtime=RuntimeOptions(device=args.device))
        pipeline.check_settings(generation)
        result = pipeline.generate(generation, progress=progress)
    except SettingsError as error:
        log.error("%s", in_option_terms(error, DEMO_OPTIONS))
        return 2
    except (ModelNotFoundError, ModelBundleError, ModelLoadError) as error:
        log.error("%s", error)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = write_outputs(result, out, progress=progress)
    for bar in bars.values():
        bar.close()
    used = result.settings
    print(
        f"Scene: {len(result.scene)} {type(result.scene).__name__}, {len(result.cameras)} cameras, seed {used.seed}; "
        f"{used.num_frames} frames of {used.width} x {used.height}, {used.num_steps} steps, guidance "
        f"{used.guidance_scale:g}, flow shift {used.flow_shift:g}"
    )
    if result.unknown_words:
        tqdm.write(unknown_words_message(result.unknown_words), file=sys.stdout)  # below any progress bar
    print(folder)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="generate a scene with the best model available locally")
    parser.add_argument("prompt", help="what to generate")
    parser.add_argument("--out", help="output folder (must not exist; default outputs/<time>-<prompt>)")
    parser.add_argument(
        "--model",
        help="model bundle folder (default: $VIST3A_MODEL, then ~/.cache/vist3a/models/default, then the "
        "embedded default model in models/default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--frames", type=int, help="video frames (4k+1; default: the model's)")
    parser.add_argument("--size", type=int, help="square frame size in pixels (default: the model's)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.set_defaults(func=run)
