"""``python -m engine stitch train``: self-distillation finetuning of a stitched decoder.

The lead wires :func:`add_train_parser` into the ``stitch`` command group.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.stitching.decoder import RELEASED_CUT_STAGE, RELEASED_SPEC

log = logging.getLogger(__name__)


def add_train_parser(stitch_subparsers) -> argparse.ArgumentParser:
    """Creates the ``train`` sub-command under ``stitch`` and sets its ``func``."""
    p = stitch_subparsers.add_parser(
        "train",
        help="finetune a stitched decoder by self-distillation (LoRA)",
        description="Teacher: the original 3D network on RGB frames; student: the stitched decoder on the "
        "video-VAE latent of the same clip. Writes a loss log, resumable checkpoints and a merged export.",
    )
    p.add_argument("--base-model", required=True, help="AnySplat/VGGT checkpoint (folder, file or hub id)")
    p.add_argument("--vae", required=True, help="diffusers video VAE or pipeline folder / hub id")
    p.add_argument("--out", required=True, type=Path, help="run folder (log, checkpoints, export/)")
    p.add_argument("--stitching-init", type=Path, help="layer-search output (folder or stitching_layer.safetensors)")
    p.add_argument(
        "--cut-stage", help=f"stage after which to stitch (default: from --stitching-init, else {RELEASED_CUT_STAGE})"
    )
    p.add_argument("--spec", help=f"stitching-layer spec (default: from --stitching-init, else {RELEASED_SPEC})")
    p.add_argument("--data", nargs="*", default=[], type=Path, help="roots of scene folders / video files")
    p.add_argument("--stride", type=int, default=1, help="frame stride inside a clip window")
    p.add_argument("--synthetic", type=float, default=0.0, help="sampling weight of synthetic clips (0: none)")
    p.add_argument("--world", type=int, default=0, metavar="N", help="N orbit clips of the procedural world (0: none)")
    p.add_argument("--world-weight", type=float, default=1.0, help="sampling weight of the --world clips")
    p.add_argument("--clip-cache", type=Path, help="with --world: keep the rendered clips here")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps before the cosine decay")
    p.add_argument("--batch-size", type=int, default=1, help="global batch (split over data-parallel processes)")
    p.add_argument("--views", type=int, nargs=2, default=(9, 21), metavar=("MIN", "MAX"), help="views per clip")
    p.add_argument("--vae-size", type=int, default=512, help="frame size the VAE encodes")
    p.add_argument("--model-size", type=int, default=448, help="frame size the 3D network sees")
    p.add_argument("--lora-rank", type=int, default=64)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--color-jitter", type=float, default=0.2)
    p.add_argument("--no-bf16", action="store_true", help="run the aggregators in fp32 on CUDA")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu; cuda:LOCAL_RANK per process)")
    p.set_defaults(func=run_train)
    return p


def _stitching_init(path: Path):
    """(StitchingLayer, spec, stage) from a layer-search result."""
    from safetensors import safe_open

    from engine.stitching.layer_spec import StitchingLayer

    file = path / "stitching_layer.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no stitching layer at {file}")
    with safe_open(str(file), framework="pt") as handle:
        meta = handle.metadata() or {}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    missing = [k for k in ("spec", "layer", "in_channels") if k not in meta]
    if missing:
        raise ValueError(f"{file} lacks the layer-search metadata {missing}")
    layer = StitchingLayer(meta["spec"], int(meta["in_channels"]))
    layer.load_state_dict(tensors, strict=True)
    return layer, meta["spec"], meta["layer"]


def _clip_sources(args: argparse.Namespace) -> tuple[list, list[float]]:
    """The clip sources of the command line and their sampling weights; SystemExit when there are none."""
    from engine.stitching.clips import FolderClips, SyntheticClips, WorldClips

    sources, weights = [], []
    if args.data:
        sources.append(FolderClips(args.data, stride=args.stride))
        weights.append(1.0)
    if args.synthetic > 0:
        sources.append(SyntheticClips())
        weights.append(args.synthetic)
    if args.world > 0:
        sources.append(WorldClips(args.world, cache=args.clip_cache, size=args.vae_size))
        weights.append(args.world_weight)
    if not sources:
        raise SystemExit("no training clips: give --data roots, --world N and/or --synthetic WEIGHT")
    return sources, weights


def run_train(args: argparse.Namespace) -> int:
    from engine.training.distributed import close_distributed, init_distributed

    context = init_distributed()
    try:
        return _train(args, context)
    finally:
        close_distributed()


def _train(args: argparse.Namespace, context) -> int:
    from engine.models.loading import load_model
    from engine.stitching.clips import MixedClips
    from engine.stitching.decoder import VAEReference
    from engine.stitching.layer_spec import format_spec, parse_spec
    from engine.stitching.train import DistillationTrainer, TrainConfig
    from engine.stitching.vae import load_video_vae

    if not args.resume and any((args.out / "checkpoints").glob("step_*")):
        raise SystemExit(f"{args.out} already holds checkpoints of a run: pass --resume, or choose another --out")
    layer = None
    spec, stage = args.spec, args.cut_stage
    if args.stitching_init is not None:
        layer, found_spec, found_stage = _stitching_init(args.stitching_init)
        if spec is not None and format_spec(parse_spec(spec)) != format_spec(parse_spec(found_spec)):
            raise SystemExit(f"--spec {spec} disagrees with the layer-search result ({found_spec})")
        if stage is not None and stage != found_stage:
            raise SystemExit(f"--cut-stage {stage} disagrees with the layer-search result ({found_stage})")
        spec, stage = found_spec, found_stage
    spec, stage = spec or RELEASED_SPEC, stage or RELEASED_CUT_STAGE

    sources, weights = _clip_sources(args)

    config = TrainConfig(
        cut_stage=stage,
        spec=spec,
        steps=args.steps,
        lr=args.lr,
        warmup_steps=args.warmup,
        batch_size=args.batch_size,
        views=tuple(args.views),
        vae_size=args.vae_size,
        model_size=args.model_size,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        color_jitter=args.color_jitter,
        bf16=not args.no_bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        log_every=args.log_every,
        save_every=args.save_every,
    )
    try:
        context.per_rank(args.batch_size)
    except ValueError as error:
        raise SystemExit(f"invalid setting: {error}") from None
    device = context.device(args.device)
    teacher, _ = load_model(args.base_model, device=device)
    vae = load_video_vae(args.vae, device=device)
    trainer = DistillationTrainer(
        config,
        teacher,
        vae,
        VAEReference.from_adapter(vae, str(args.vae)),
        MixedClips(sources, weights),
        stitching_layer=layer,
        out_dir=args.out,
        device=device,
        context=context,
    )
    if args.resume:
        latest = trainer.latest_checkpoint()
        if latest is None:
            raise SystemExit(f"--resume: no checkpoint in {args.out / 'checkpoints'}")
        trainer.load_checkpoint(latest)
        dropped = trainer.truncate_log()
        log.info("resumed from %s at step %d (%d later log records dropped)", latest, trainer.step, dropped)
    trainer.train(progress=context.is_main)
    if context.is_main:
        export = trainer.export(args.out / "export")
        log.info("merged stitched decoder written to %s", export)
    return 0
