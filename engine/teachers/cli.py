"""``python -m engine teacher ...``: the default model's 3D teachers and caption scorer.

* ``teacher data --out DIR [--train N] [--heldout N]``: render the cached training / held-out orbits.
* ``teacher train {anysplat,vggt} --data DIR --out RUN [--steps N] [--resume] [--max-minutes M]``:
  train a teacher (run folder layout: ``engine.teachers.train``).
* ``teacher export RUN --out DIR``: the newest checkpoint of RUN as fp16 ``config.json`` +
  ``model.safetensors`` (what ``reconstruct --model DIR`` loads).
* ``teacher eval MODEL --data DIR [--scenes N]``: held-out figures of a teacher.
* ``teacher caption train --out RUN [--resume]`` / ``teacher caption export RUN --out DIR``: the caption
  scorer (``engine.teachers.caption``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "teacher",
        help="train the default model's 3D teachers (AnySplat, VGGT) and caption scorer on the procedural world",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)

    data = sub.add_parser("data", help="render the cached training and held-out orbits")
    data.add_argument("--out", type=Path, required=True)
    data.add_argument("--train", type=int, default=800, help="training scenes")
    data.add_argument("--heldout", type=int, default=50, help="held-out scenes")
    data.set_defaults(func=run_data)

    train = sub.add_parser("train", help="train a teacher (resumable)")
    train.add_argument("model_type", choices=("anysplat", "vggt"))
    train.add_argument("--data", type=Path, required=True, help="folder written by 'teacher data'")
    train.add_argument("--out", type=Path, required=True, help="run folder (outside the repository)")
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--lr", type=float, default=4e-4)
    train.add_argument("--train-scenes", type=int, default=800)
    train.add_argument("--eval-every", type=int, default=250)
    train.add_argument("--eval-scenes", type=int, default=6)
    train.add_argument("--render-start", type=int, default=0, help="AnySplat: first step with the rendering loss")
    train.add_argument(
        "--render-background",
        choices=("random", "sky"),
        default="random",
        help="AnySplat: what the rendering loss composites its renders over: a random colour per view (default: "
        "the Gaussians must cover the sky) or the scene's sky colour (the sky may stay transparent)",
    )
    train.add_argument(
        "--reverse-augment",
        action="store_true",
        help="also train on orbits run backwards (off: the world's orbits all run counter-clockwise)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="scenes per step, over all processes of a torchrun / accelerate launch (a multiple of their number)",
    )
    train.add_argument(
        "--init", type=Path, help="start from this exported teacher folder's weights (same configuration)"
    )
    train.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="TERM=VALUE",
        help="loss weight, repeatable: camera, depth, points or render (default 1 each)",
    )
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    train.add_argument("--max-minutes", type=float, help="stop (after a checkpoint) after this much wall time")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    train.set_defaults(func=run_train)

    export = sub.add_parser("export", help="export a run's newest checkpoint as fp16 safetensors")
    export.add_argument("run", type=Path)
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(func=run_export)

    evaluate = sub.add_parser("eval", help="held-out figures of a teacher checkpoint")
    evaluate.add_argument("model", help="a teacher folder (config.json + model.safetensors)")
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--scenes", type=int, default=32)
    evaluate.add_argument("--sheet", type=Path, help="write held-out frames above renders to this PNG")
    evaluate.set_defaults(func=run_eval)

    from engine.teachers import caption

    caption.add_parser(sub)
    return parser


def run_data(args) -> int:
    from engine.teachers.data import build_cache

    build_cache(args.out, "heldout", args.heldout)
    build_cache(args.out, "train", args.train)
    return 0


def run_train(args) -> int:
    from engine.training.distributed import close_distributed, init_distributed

    context = init_distributed()
    try:
        return _run_train(args, context)
    finally:
        close_distributed()


def _run_train(args, context) -> int:
    """``teacher train`` in one process of a data-parallel run (or alone): rank 0 writes the run folder."""
    import torch

    from engine.teachers.train import TeacherTrainConfig, TeacherTrainer, load_config, save_config

    torch.set_num_threads(args.threads)
    out = args.out
    if args.resume:
        if not (out / "train_config.json").is_file():
            log.error("%s is not a teacher run folder (no train_config.json); drop --resume to start one", out)
            return 2
        config = load_config(out)
        context.barrier()  # every process has read the config before rank 0 rewrites it
        if args.steps != config.steps:
            config.steps = args.steps
            if context.is_main:
                save_config(config, out)
    else:
        if out.exists() and any(out.iterdir()):
            log.error("%s already holds a run; pass --resume to continue it or choose another --out", out)
            return 2
        context.barrier()  # every process has checked the folder before rank 0 writes into it
        try:
            weights = _parse_weights(args.weight)
        except ValueError as error:
            log.error("%s", error)
            return 2
        config = TeacherTrainConfig(
            model_type=args.model_type,
            data_dir=str(args.data),
            steps=args.steps,
            lr=args.lr,
            train_scenes=args.train_scenes,
            eval_every=args.eval_every,
            eval_scenes=args.eval_scenes,
            render_start=args.render_start,
            render_background=args.render_background,
            reverse_augment=args.reverse_augment,
            seed=args.seed,
            batch_size=args.batch_size,
            weights=weights,
            init_from=str(args.init) if args.init else None,
        )
        try:
            context.per_rank(config.batch_size)
        except ValueError as error:
            log.error("%s", error)
            return 2
        if context.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(config, out)
    try:
        trainer = TeacherTrainer(config, out, context=context)
    except ValueError as error:
        log.error("%s", error)
        return 2
    context.barrier()  # the run folder exists for every process
    if args.resume and trainer.resume():
        log.info("resumed %s at step %d", out, trainer.step)
    trainer.train(max_minutes=args.max_minutes)
    return 0


def _parse_weights(items: list[str]) -> dict:
    """``["camera=5", ...]`` -> the full weight dict (unnamed terms keep weight 1); ValueError if malformed."""
    from engine.teachers.train import LOSS_TERMS

    weights = {term: 1.0 for term in LOSS_TERMS}
    for item in items:
        term, sep, value = item.partition("=")
        if not sep or term not in LOSS_TERMS:
            raise ValueError(f"--weight {item!r}: write TERM=VALUE with TERM one of {', '.join(LOSS_TERMS)}")
        try:
            weights[term] = float(value)
        except ValueError:
            raise ValueError(f"--weight {item!r}: {value!r} is not a number") from None
    return weights


def run_export(args) -> int:
    from engine.teachers.train import TeacherTrainer, load_config
    from engine.training.checkpoints import latest_checkpoint

    config = load_config(args.run)
    config.init_from = None  # the checkpoint's weights replace the starting ones anyway
    found = latest_checkpoint(args.run)
    if found is None:
        log.error("%s has no checkpoint to export", args.run)
        return 2
    trainer = TeacherTrainer(config, None, train_samples=[], eval_samples=[])
    trainer.model.load_state_dict(_load(found / "model.safetensors"))
    trainer.export(args.out)
    log.info("exported %s (step %s) to %s", found, found.name, args.out)
    return 0


def _load(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path))


def run_eval(args) -> int:
    from engine.models.loading import load_model
    from engine.teachers.data import load_cache
    from engine.teachers.train import evaluate_model

    model, _ = load_model(args.model)
    samples = load_cache(args.data, "heldout", args.scenes)
    metrics = evaluate_model(model, samples, sheet=args.sheet)
    print(json.dumps(metrics, indent=1))
    return 0
