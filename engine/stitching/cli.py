"""``python -m engine stitch search``: find the layer of a 3D network to stitch a video VAE into.

Streams clips once through the video VAE (latents) and the 3D network (activations of the candidate
stages), fits a linear stitching conv per stage and writes ``layer_search.json``, ``layer_search_mse.png``
and the chosen conv ``stitching_layer.safetensors`` into --out. Stage names are those of
``engine.models`` (``python -m engine stitch search --list-stages --model PATH`` prints them), e.g.
``patch_embed.blocks.1`` = output of DINOv2 block 1, the released VIST3A AnySplat stitch point
("enc_blocks_2": the conv replaces the input of block 2).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.stitching.train_cli import add_train_parser

log = logging.getLogger(__name__)

RELEASED_SPEC = "conv3d_k5x3x3_o1024_s1x2x2_p2x1x1"
VAE_DTYPES = ("float32", "bfloat16", "float16")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("stitch", help="model stitching: find the stitch layer of a 3D network")
    commands = parser.add_subparsers(dest="stitch_command", metavar="SUBCOMMAND")
    search = commands.add_parser(
        "search", help="find the best stitching layer k*", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    search.add_argument("--vae", required=True, help="diffusers video VAE folder or pipeline folder")
    search.add_argument("--model", required=True, help="3D network checkpoint (file, folder or hub id)")
    data = search.add_mutually_exclusive_group()
    data.add_argument("--data", type=Path, help="folder of clips: sub-folders of ordered images or video files")
    data.add_argument("--synthetic", type=int, metavar="N", help="N synthetic clips (wiring check, no real data)")
    data.add_argument(
        "--world", type=int, metavar="N", help="N orbit clips of the procedural world (the default model's data)"
    )
    search.add_argument("--clip-cache", type=Path, help="with --world: keep the rendered clips here")
    search.add_argument("--spec", default=RELEASED_SPEC, help=f"stitching conv spec (default {RELEASED_SPEC})")
    search.add_argument(
        "--layers",
        help="comma-separated candidate stages (default: the patch embedding and every DINOv2 block)",
    )
    search.add_argument("--list-stages", action="store_true", help="print the model's stage names and exit")
    search.add_argument("--out", type=Path, help="report folder")
    search.add_argument("--frames", type=int, default=13, help="frames per clip (the VAE's rule, e.g. 4k+1)")
    search.add_argument("--size", type=int, default=512, help="VAE input resolution (square)")
    search.add_argument("--stride", type=int, default=1, help="use every N-th frame of a clip")
    search.add_argument("--max-clips", type=int, help="use at most the first N clips (short ones are skipped)")
    search.add_argument("--ridge", type=float, default=1e-4, help="ridge on the diagonal of XᵀX (default 1e-4)")
    search.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    search.add_argument("--vae-dtype", choices=VAE_DTYPES, default="float32", help="VAE weights dtype")
    search.add_argument("--seed", type=int, default=0, help="seed of the synthetic clips")
    search.set_defaults(func=run_search)
    add_train_parser(commands)
    evaluate = commands.add_parser(
        "evaluate",
        help="held-out figures of a stitched decoder against its teacher",
        description="Novel-view PSNR, depth AbsRel and camera error of the teacher (on frames) and the stitched "
        "decoder (on the video-VAE latent of the same views), and the stitched decoder's renders against the "
        "teacher's, on held-out scenes of a 'teacher data' cache.",
    )
    evaluate.add_argument("--decoder", required=True, type=Path, help="stitched decoder folder (stitch train export)")
    evaluate.add_argument("--teacher", required=True, help="the 3D network it was cut from (folder, file or hub id)")
    evaluate.add_argument("--vae", required=True, help="diffusers video VAE folder or pipeline folder")
    evaluate.add_argument("--data", required=True, type=Path, help="folder written by 'teacher data'")
    evaluate.add_argument("--scenes", type=int, default=24, help="held-out scenes (default 24)")
    evaluate.add_argument("--vae-size", type=int, default=128, help="frame size the VAE encodes (default 128)")
    evaluate.add_argument("--sheet", type=Path, help="write true novel views / teacher / stitched renders to this PNG")
    evaluate.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads")
    evaluate.set_defaults(func=run_evaluate)
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    import torch

    from engine.io.atomic import atomic_write
    from engine.models.loading import load_model
    from engine.stitching.decoder import StitchedDecoder
    from engine.stitching.evaluate import PAIRED_KEYS, evaluate_stitched
    from engine.stitching.vae import load_video_vae
    from engine.teachers.data import load_cache

    if args.threads:
        torch.set_num_threads(args.threads)
    decoder = StitchedDecoder.from_pretrained(args.decoder)
    teacher, _ = load_model(args.teacher, device="cpu")
    vae = load_video_vae(args.vae)
    samples = load_cache(args.data, "heldout", args.scenes)
    result = evaluate_stitched(decoder, teacher, vae, samples, args.vae_size, sheet=args.sheet)
    print(f"{result['scenes']} held-out scenes          teacher    stitched")
    for key in PAIRED_KEYS:
        if f"teacher_{key}" in result:
            print(f"  {key:<26}{result[f'teacher_{key}']:>9.3f}  {result[f'stitched_{key}']:>9.3f}")
    if "stitched_vs_teacher_psnr" in result:
        print(f"  stitched renders vs teacher renders: {result['stitched_vs_teacher_psnr']:.2f} dB")
    if "stitched_vs_teacher_points" in result:
        print(f"  stitched points vs teacher points: {result['stitched_vs_teacher_points']:.4f} (mean distance)")
    if args.json:
        with atomic_write(args.json, "w") as f:
            f.write(json.dumps(result, indent=1))
    return 0


def run_search(args: argparse.Namespace) -> int:
    from engine.training.distributed import close_distributed, init_distributed

    context = init_distributed()
    try:
        return _search(args, context)
    finally:
        close_distributed()


def _data_label(args: argparse.Namespace) -> str:
    """What the search ran on, for its report."""
    if args.data is not None:
        return str(args.data)
    if args.world is not None:
        return f"world:{args.world} (world version {_world_version()}, training orbit clips)"
    return f"synthetic:{args.synthetic}"


def _world_version() -> int:
    from engine.data import WORLD_VERSION

    return WORLD_VERSION


def _search(args: argparse.Namespace, context) -> int:
    import torch

    from engine.models.loading import load_model
    from engine.stitching.layer_spec import parse_spec
    from engine.stitching.search import find_stitch_layer
    from engine.stitching.sources import ModelActivations, folder_clips, synthetic_clips, world_clips
    from engine.stitching.vae import load_video_vae

    device = context.device(args.device)
    model, _ = load_model(args.model, device=device)
    if args.list_stages:
        print("\n".join(model.stage_names()))
        return 0
    if args.out is None or (args.data is None and args.synthetic is None and args.world is None):
        raise SystemExit("stitch search: --out and one of --data DIR / --world N / --synthetic N are required")

    spec = parse_spec(args.spec)
    vae = load_video_vae(args.vae, torch_dtype=getattr(torch, args.vae_dtype), device=device)
    latent_size = args.size // vae.spatial_factor
    if args.size % vae.spatial_factor:
        raise SystemExit(f"--size {args.size} is not a multiple of the VAE's spatial factor {vae.spatial_factor}")
    vae.latent_frames(args.frames)  # validates T for this VAE
    _, grid_h, grid_w = spec.output_size(args.frames, latent_size, latent_size)
    patch = model.aggregator.patch_size
    image_size = (grid_h * patch, grid_w * patch)  # the 3D network's patch grid = the conv's token grid

    if args.layers:
        stages = [name.strip() for name in args.layers.split(",") if name.strip()]
    else:
        stages = [name for name in model.stage_names() if name.startswith("patch_embed.")]
    activations = ModelActivations(model, stages, image_size)

    if args.data is not None:
        clips = folder_clips(args.data, args.frames, args.size, args.stride, max_clips=args.max_clips, context=context)
    elif args.world is not None:
        count = args.world if args.max_clips is None else min(args.world, args.max_clips)
        clips = world_clips(count, args.frames, args.size, args.clip_cache, context=context)
    else:
        count = args.synthetic if args.max_clips is None else min(args.synthetic, args.max_clips)
        clips = synthetic_clips(count, args.frames, args.size, args.seed, context=context)

    def encoded():
        # runs inside find_stitch_layer's no_grad; one clip in memory at a time
        for frames in clips:
            yield frames, vae.encode(frames, normalized=False)

    log.info(
        "searching %d stages; VAE %s at %dpx (latent %d), 3D network at %dx%d px, %d frames",
        len(stages), vae, args.size, latent_size, *image_size, args.frames,
    )  # fmt: skip
    result = find_stitch_layer(
        encoded(),
        activations,
        stages,
        spec,
        num_prefix_tokens=activations.prefix_tokens,
        ridge=args.ridge,
        out_dir=args.out,
        extra_settings={
            "vae": str(args.vae),
            "model": str(args.model),
            "data": _data_label(args),
            "vae_size": args.size,
            "model_image_size": list(image_size),
        },
        context=context,
    )
    if not context.is_main:
        return 0
    width = max(len(name) for name in stages)
    for name, mse, rel in zip(result.layer_names, result.mse, result.relative_mse):
        marker = "  <- k*" if name == result.best_layer else ""
        print(f"{name:<{width}}  MSE {mse:.6g}  relative {rel:.4f}{marker}")
    print(f"report written to {args.out}")
    return 0
