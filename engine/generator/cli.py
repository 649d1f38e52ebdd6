"""``python -m engine train vae|video``: train the default model's generator on the procedural world.

(``python -m engine train default``, the whole default model stage by stage, is
:mod:`engine.training.default_chain`.)

Each stage writes a run folder (see :mod:`engine.generator.runs`) and, when its steps are done, its
exported part: ``RUN/vae`` (diffusers ``AutoencoderKLWan`` folder) or ``RUN/pipeline`` (a whole
``WanPipeline`` folder). ``--export DIR`` also writes that part to DIR (e.g. into models/default/).

Both stages run data-parallel under ``torchrun`` / ``accelerate launch`` (:mod:`engine.training.distributed`):
``--batch-size`` is the global batch, rank 0 writes the run folder and the export.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import MISSING, fields
from pathlib import Path

log = logging.getLogger("engine.train")


def _yes_or_no(text: str) -> bool:
    """An on/off option's value: yes/no, true/false, on/off or 1/0 (argparse's ``type=bool`` would read
    "false" as true)."""
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def _add_config_options(parser: argparse.ArgumentParser, config_class, helps: dict[str, str]) -> None:
    """One --option per config field (defaults shown by --help; on/off settings take yes or no)."""
    for f in fields(config_class):
        default = f.default_factory() if f.default is MISSING else f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, list):
            parser.add_argument(flag, type=type(default[0]), nargs="+", default=None, help=helps.get(f.name))
        elif isinstance(default, bool):
            parser.add_argument(flag, type=_yes_or_no, default=None, metavar="yes|no", help=helps.get(f.name))
        else:
            parser.add_argument(flag, type=type(default), default=None, help=helps.get(f.name))
        parser.set_defaults(**{f"_field_{f.name}": default})


def _config_from_args(args, config_class):
    values = {}
    for f in fields(config_class):
        given = getattr(args, f.name)
        values[f.name] = given if given is not None else getattr(args, f"_field_{f.name}")
    return config_class(**values)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="run folder (logs, checkpoints, loss.png, export)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--export", type=Path, default=None, help="also copy the exported part to this folder")


VAE_HELP = {
    "steps": "total optimisation steps of the run",
    "crop_frames": "frames per training crop (4k + 1)",
    "crop_size": "pixels per side of a training crop (multiple of 8)",
    "base_dim": "AutoencoderKLWan base width",
    "train_clips": "distinct training clips (rendered once, cached)",
    "eval_clips": "held-out clips for the PSNR evaluation",
    "object_weight": "loss weight of the pixels labelled as objects (1: plain MSE)",
    "freeze_encoder": "train the decoder alone (with --init): the latent space and latents_mean/std stay",
    "caption_check_clips": "held-out first frames for the caption check of the reconstructions (0: none)",
    "eval_every": "held-out evaluation every N steps (0: never)",
    "stats_clips": "training clips encoded to measure latents_mean / latents_std",
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train the default model's generator (vae, video) or the whole default model (default)"
    )
    stages = parser.add_subparsers(dest="stage", metavar="STAGE")

    vae = stages.add_parser("vae", help="train the Wan video VAE on the world's clips")
    _common(vae)
    vae.add_argument("--clip-cache", type=Path, default=None, help="rendered clip folder (default: OUT/clips)")
    vae.add_argument(
        "--init",
        type=Path,
        default=None,
        help="trained VAE folder to start from (e.g. an earlier run's export): a finetune, e.g. with "
        "--object-weight; the architecture options must match it",
    )
    vae.add_argument(
        "--export-only",
        action="store_true",
        help="no training: export the newest checkpoint of the run in --out to --export (the run is not changed)",
    )
    from engine.generator.vae import VAEConfig

    _add_config_options(vae, VAEConfig, VAE_HELP)
    vae.set_defaults(func=run_vae)

    from engine.generator.video import VideoConfig

    video = stages.add_parser("video", help="train the Wan transformer (flow matching) on VAE latents")
    _common(video)
    video.add_argument("--vae", required=True, type=Path, help="trained VAE folder (diffusers AutoencoderKLWan)")
    video.add_argument(
        "--text", type=Path, default=None, help="tokenizer + text encoder folder (default: built into OUT/text)"
    )
    video.add_argument(
        "--init",
        type=Path,
        default=None,
        help="trained WanPipeline folder to start from (its transformer, and its text encoder unless --text): "
        "a finetune, e.g. on the latents of a VAE trained further",
    )
    video.add_argument("--clip-cache", type=Path, default=None, help="rendered clip folder (default: OUT/clips)")
    _add_config_options(video, VideoConfig, VIDEO_HELP)
    video.set_defaults(func=run_video)

    from engine.training.default_chain import add_parser as add_default_chain

    add_default_chain(stages)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


VIDEO_HELP = {
    "steps": "total optimisation steps of the run",
    "train_clips": "distinct training orbit clips (encoded once, cached)",
    "caption_dropout": "probability of training a sample with the empty caption (for CFG)",
    "flow_shift": "sigma shift of the flow-matching schedule (Wan: 3.0 at 480p)",
    "object_weight": "loss weight of the latent pixels that hold an object (1: plain flow matching)",
    "eval_every": "held-out flow-matching loss every N steps (0: never)",
}


def _setup_threads(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def _copy_export(source: Path, target: Path | None) -> None:
    if target is None:
        return
    from engine.io.atomic import atomic_directory

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(target, replace=True) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    log.info("exported to %s", target)


def _data_parallel(run):
    """``run(args, context)`` inside the process group of a torchrun / accelerate launch (if any)."""

    def command(args) -> int:
        from engine.training.distributed import close_distributed, init_distributed

        context = init_distributed()
        try:
            return run(args, context)
        finally:
            close_distributed()

    return command


def run_vae(args) -> int:
    return _data_parallel(_run_vae)(args)


def run_video(args) -> int:
    return _data_parallel(_run_video)(args)


def _run_vae(args, context) -> int:
    from engine.generator.runs import RunExistsError
    from engine.generator.vae import VAE_FOLDER, VAEConfig, VAETrainer

    _setup_threads(args)
    if args.export_only:
        from engine.generator.vae import export_run_checkpoint

        if not context.is_main:  # launched on several processes: one export is enough
            return 0

        if args.export is None:
            log.error("--export-only needs --export DIR (where to write the VAE)")
            return 2
        try:
            folder, step = export_run_checkpoint(args.out, args.export, args.clip_cache)
        except (FileNotFoundError, ValueError) as error:
            log.error("%s", error)
            return 2
        log.info("exported the step-%d checkpoint to %s", step, folder)
        return 0
    try:
        config = _config_from_args(args, VAEConfig)
        trainer = VAETrainer(
            config, args.out, init=args.init, resume=args.resume, clip_cache=args.clip_cache, context=context
        )
    except (ValueError, FileNotFoundError, RunExistsError) as error:
        log.error("%s", error)
        return 2
    trainer.train(progress=not args.no_progress)
    if not context.is_main:
        return 0
    folder = trainer.export(args.out / VAE_FOLDER)
    _copy_export(folder, args.export)
    return 0


def _run_video(args, context) -> int:
    from engine.generator.runs import RunExistsError
    from engine.generator.video import PIPELINE_FOLDER, VideoConfig, VideoTrainer

    _setup_threads(args)
    try:
        config = _config_from_args(args, VideoConfig)
        trainer = VideoTrainer(
            config,
            args.out,
            vae=args.vae,
            text=args.text,
            init=args.init,
            resume=args.resume,
            clip_cache=args.clip_cache,
            context=context,
        )
    except (ValueError, FileNotFoundError, RunExistsError) as error:
        log.error("%s", error)
        return 2
    trainer.train(progress=not args.no_progress)
    if not context.is_main:
        return 0
    folder = trainer.export(args.out / PIPELINE_FOLDER)
    _copy_export(folder, args.export)
    return 0
