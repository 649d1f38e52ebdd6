"""``python -m engine align train``: direct reward finetuning of the video model (LoRA).

Loads a model bundle (Wan 2.1 + stitched AnySplat decoder, without a LoRA), wraps the Wan transformer
in a rank-8 LoRA and trains it on flow matching over captioned synthetic clips minus the reward of
truncated rollouts (``engine.alignment.train``). Reward presets: ``paper`` (DFN-CLIP + HPSv2.1 on
decoded frames and renders, plus the L1/LPIPS consistency term) and ``released`` (PickScore +
DFN-CLIP). Terms are left out only when asked: ``--consistency l1`` (the paper's consistency term
without LPIPS, for machines without its weight files), ``--hps-weight 0`` (no HPSv2.1),
``--pickscore-weight 0`` (no PickScore); the run's align_config.json and log record the active terms.
Reward models are local folders/files or hub ids (downloaded into the Hugging Face cache only when not
cached and HF_HUB_OFFLINE is unset); the default model's caption scorer folder can stand in for a
CLIP-family scorer (--dfn-clip models/default/caption_scorer). Writes the EMA adapter (``adapter_ema/``),
a bundle manifest for the finetuned model (``vist3a.json``), logs and resumable checkpoints into --out.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.alignment.rewards import CONSISTENCY_CHOICES, PRESETS

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("align", help="reward finetuning of the video model (LoRA)")
    commands = parser.add_subparsers(dest="align_command", metavar="SUBCOMMAND")
    p = commands.add_parser(
        "train",
        help="LoRA reward finetuning with truncated rollouts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, help="base model bundle (folder with vist3a.json)")
    p.add_argument("--out", required=True, type=Path, help="run folder (adapters, bundle manifest, logs)")
    p.add_argument("--preset", choices=PRESETS, help="reward preset (default paper; --resume: the run's)")
    p.add_argument(
        "--consistency",
        choices=CONSISTENCY_CHOICES,
        help="paper preset: the consistency term C between decoded frames and renders: l1+lpips (default, "
        "the paper's -L1 - 0.25 LPIPS; needs --lpips-backbone and --lpips-lin) or l1 (-L1 alone)",
    )
    p.add_argument(
        "--hps-weight",
        type=float,
        metavar="W",
        help="paper preset: weight of the HPSv2.1 term in Q = (CLIP - 1) + W (HPS - 1) (default 1; 0 leaves it out)",
    )
    p.add_argument(
        "--pickscore-weight",
        type=float,
        metavar="W",
        help="released preset: weight of the PickScore loss (default 0.25; 0 leaves it out)",
    )
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument(
        "--batch-size", type=int, default=1, help="samples (clip + rollout) per step, over all data-parallel processes"
    )
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--frames", type=int, default=13, help="video frames (4k+1)")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--rollout-steps", type=int, nargs=2, default=(10, 50), metavar=("T1", "T2"))
    p.add_argument("--grad-steps", type=int, default=2, help="random rollout steps with gradients (K)")
    p.add_argument("--no-grad-last", action="store_true", help="do not always take the last step's gradient")
    p.add_argument("--cfg", type=float, nargs=2, default=(4.0, 6.0), metavar=("LOW", "HIGH"), help="rollout CFG")
    p.add_argument("--flow-shift", type=float, default=5.0)
    p.add_argument("--fm-weight", type=float, default=1.0, help="weight of the flow-matching loss")
    p.add_argument("--reward-weight", type=float, default=1.0, help="weight of the reward")
    p.add_argument("--clips", type=int, default=64, help="captioned synthetic clips for the flow-matching loss")
    p.add_argument("--prompts", type=Path, help="text file of rollout prompts, one per line (default: captions)")
    p.add_argument("--heldout-prompts", type=Path, help="text file of held-out prompts for --eval-every")
    p.add_argument(
        "--dfn-clip", help="DFN-CLIP weights: folder, file or hub id (default apple/DFN5B-CLIP-ViT-H-14-378)"
    )
    p.add_argument("--hps", help="HPSv2.1 weights: folder, file or hub id (default xswu/HPSv2)")
    p.add_argument("--pickscore", help="PickScore weights: folder or hub id (default yuvalkirstain/PickScore_v1)")
    p.add_argument(
        "--clip-tokenizer", help="CLIP tokenizer folder or hub id (default laion/CLIP-ViT-H-14-laion2B-s32B-b79K)"
    )
    p.add_argument("--lpips-backbone", type=Path, help="torchvision VGG16/AlexNet weights file (paper preset)")
    p.add_argument("--lpips-lin", type=Path, help="LPIPS v0.1 linear-layer weights file (paper preset)")
    p.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=0, help="held-out reward every N steps (0: never)")
    p.add_argument("--eval-steps", type=int, default=50, help="sampler steps of the held-out rollouts")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun / accelerate launch: shard the transformer's frozen weights over the processes "
        "(FSDP) instead of a full copy on each; needs one number of --rollout-steps",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    return parser


def _read_prompts(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise SystemExit(f"prompts file not found: {path}")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise SystemExit(f"{path} holds no prompts (one per line)")
    return prompts


def reward_settings(args: argparse.Namespace):
    """The reward's settings from the command line, resolved; with --resume, completed by (and checked
    against) the settings the run in --out was started with (its align_config.json)."""
    import json

    from engine.alignment.rewards import RewardSettings
    from engine.alignment.train import CONFIG_FILE

    given = RewardSettings(args.preset, args.consistency, args.hps_weight, args.pickscore_weight)
    record = args.out / CONFIG_FILE
    try:
        if not (args.resume and record.is_file()):
            return given.resolve()
        try:
            run = RewardSettings.of_run(json.loads(record.read_text(encoding="utf-8")).get("reward"))
        except (OSError, ValueError, AttributeError) as error:
            raise SystemExit(f"cannot read the run's reward settings from {record}: {error}") from None
        if run is None:
            return given.resolve()
        settings, taken = given.for_resume(run)
    except ValueError as error:
        raise SystemExit(f"invalid setting: {error}") from None
    if taken:
        log.info(
            "resuming with the run's reward settings (%s): %s",
            record,
            ", ".join(f"{name} {getattr(settings, name)}" for name in taken),
        )
    return settings


def _reward_sources(args: argparse.Namespace, settings):
    """The reward models' sources, checked against the settings before any model is loaded."""
    from engine.alignment.rewards import RewardModelSources, check_sources
    from engine.alignment.scorers import RewardWeightsMissing

    sources = RewardModelSources(
        dfn_clip=args.dfn_clip,
        hps=args.hps,
        pickscore=args.pickscore,
        tokenizer=args.clip_tokenizer,
        lpips_backbone=args.lpips_backbone,
        lpips_lin=args.lpips_lin,
        lpips_net=args.lpips_net,
    )
    try:
        check_sources(settings, sources)
    except RewardWeightsMissing as error:
        raise SystemExit(f"reward model missing: {error}") from None
    except ValueError as error:
        raise SystemExit(f"invalid setting: {error}") from None
    return sources


def _build_reward(settings, sources, device):
    from engine.alignment.rewards import build_reward
    from engine.alignment.scorers import RewardWeightsMissing

    try:
        reward = build_reward(
            settings.preset,
            sources,
            device=device,
            consistency=settings.consistency,
            hps_weight=settings.hps_weight,
            pickscore_weight=settings.pickscore_weight,
        )
    except RewardWeightsMissing as error:
        raise SystemExit(f"reward model missing: {error}") from None
    except ValueError as error:
        raise SystemExit(f"cannot build the reward: {error}") from None
    log.info("%s", reward.summary())
    return reward


def run_train(args: argparse.Namespace) -> int:
    from engine.training.distributed import close_distributed, init_distributed

    context = init_distributed()
    try:
        return _train(args, context)
    finally:
        close_distributed()


def _train(args: argparse.Namespace, context) -> int:
    from engine.alignment.train import AlignConfig, AlignmentTrainer
    from engine.pipeline.settings import ModelBundle, ModelLoadError, ModelNotFoundError, RuntimeOptions
    from engine.pipeline.vist3a import Vist3aPipeline

    if args.fsdp and not context.is_distributed:
        raise SystemExit(
            "--fsdp shards the transformer over several processes: launch with torchrun or accelerate launch"
        )
    if not args.resume and any((args.out / "checkpoints").glob("step_*")):
        raise SystemExit(f"{args.out} already holds checkpoints of a run: pass --resume, or choose another --out")
    settings = reward_settings(args)
    sources = _reward_sources(args, settings)
    try:
        config = AlignConfig(
            preset=settings.preset,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            ema_decay=args.ema_decay,
            num_frames=args.frames,
            height=args.height,
            width=args.width,
            steps_range=tuple(args.rollout_steps),
            grad_steps=args.grad_steps,
            grad_last=not args.no_grad_last,
            cfg_range=tuple(args.cfg),
            flow_shift=args.flow_shift,
            fm_weight=args.fm_weight,
            reward_weight=args.reward_weight,
            num_clips=args.clips,
            eval_steps=args.eval_steps,
            eval_every=args.eval_every,
            gradient_checkpointing=args.gradient_checkpointing,
            seed=args.seed,
            save_every=args.save_every,
        )
    except ValueError as error:
        raise SystemExit(f"invalid setting: {error}") from None
    prompts = _read_prompts(args.prompts)
    heldout = _read_prompts(args.heldout_prompts)
    try:
        bundle = ModelBundle.load(args.model)
        if bundle.lora is not None:
            raise SystemExit(
                f"bundle {bundle.name!r} already applies a LoRA ({bundle.lora}); reward finetuning trains a new "
                "LoRA on the plain Wan model: give a bundle without 'lora'"
            )
        device = str(context.device(None if args.device == "auto" else args.device))
        # training keeps every model resident: no automatic offload or tiling
        runtime = RuntimeOptions(device=device, dtype=args.dtype, cpu_offload=False, vae_tiling=False)
        pipeline = Vist3aPipeline.from_pretrained(bundle, runtime=runtime)
    except (ModelNotFoundError, ModelLoadError) as error:
        raise SystemExit(f"cannot load the model: {error}") from None
    reward = _build_reward(settings, sources, pipeline.device)
    try:
        context.per_rank(config.batch_size)
    except ValueError as error:
        raise SystemExit(f"invalid setting: {error}") from None
    try:
        trainer = AlignmentTrainer(
            config,
            pipeline,
            reward,
            prompts=prompts,
            heldout_prompts=heldout,
            base_bundle=bundle,
            out_dir=args.out,
            context=context,
            fsdp=args.fsdp,
        )
    except ValueError as error:
        raise SystemExit(f"invalid setting: {error}") from None
    if args.resume:
        latest = trainer.latest_checkpoint()
        if latest is None:
            raise SystemExit(f"--resume: no checkpoint in {args.out / 'checkpoints'}")
        trainer.load_checkpoint(latest)
        dropped = trainer.truncate_log()
        log.info("resumed from %s at step %d (%d later log records dropped)", latest, trainer.step, dropped)
    trainer.train(progress=not args.no_progress and context.is_main)
    if not context.is_main:
        return 0
    trainer.export()
    log.info("EMA adapter written to %s; finetuned bundle: %s", args.out / "adapter_ema", args.out / "vist3a.json")
    return 0
