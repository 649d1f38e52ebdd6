"""``python -m engine reconstruct FRAMES --model PATH --out DIR``: frames -> 3D scene + cameras.

Writes ``gaussians.ply`` (AnySplat; standard 3DGS PLY, SH truncated to degree 3) or ``points.ply``
(VGGT; coloured points with confidence) and ``cameras.json`` into DIR. Frames are a folder of ordered
images or a video; see ``engine.models.frames`` for the preprocessing modes (default: the official one
of the loaded model).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct a 3D scene and cameras from ordered frames with AnySplat or VGGT",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "frames",
        type=Path,
        help="folder of ordered images (png/jpg/webp/bmp/tif; hidden and system files are skipped) or a video file",
    )
    parser.add_argument("--model", required=True, help="checkpoint file, checkpoint folder or hub id")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--model-type", choices=("anysplat", "vggt"), help="require this model type (default: from the checkpoint)"
    )
    parser.add_argument(
        "--preprocess",
        choices=("auto", "anysplat", "vggt", "vggt-pad", "none"),
        default="auto",
        help=(
            "frame preprocessing (auto: the official one of the model; for VGGT its pad mode when the frames "
            "differ in aspect ratio; none: use frames as they are)"
        ),
    )
    parser.add_argument(
        "--size",
        type=int,
        help="preprocessing target size (default 448 AnySplat, 518 VGGT; a small model's own training size, "
        "e.g. 112 for the default model's teachers)",
    )
    parser.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    parser.add_argument("--max-views", type=int, help="use at most this many frames")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--voxel-size",
        type=float,
        help="AnySplat voxel merging edge (default: the model config's, 0.002 for the released model; 0 = off)",
    )
    parser.add_argument(
        "--points-from",
        choices=("points", "depth"),
        default="points",
        help="VGGT: the point head or the depth unprojected with the predicted cameras",
    )
    parser.add_argument("--min-confidence", type=float, help="VGGT: drop points below this confidence")
    parser.add_argument(
        "--network-frame",
        action="store_true",
        help="keep the network's own world frame instead of re-expressing everything in view 0's camera frame",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.io.run_format import CAMERAS_FILE
    from engine.io.scene_io import save_cameras_json, save_gaussian_ply, save_point_ply
    from engine.models.checkpoint import CheckpointError
    from engine.models.frames import FramesError, official_mode, preprocess_frames, read_frames
    from engine.models.loading import load_model
    from engine.models.outputs import PredictionError
    from engine.models.reconstruction import InputError

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        # Frames first: a bad photo folder is reported before a large model is loaded.
        frames = read_frames(args.frames, stride=args.stride, max_frames=args.max_views)
        model, _ = load_model(args.model, model_type=args.model_type, device=device)
        model_type = model.config.model_type
        mode = official_mode(model_type, frames) if args.preprocess == "auto" else args.preprocess
        size = args.size
        trained_size = model.config.aggregator.patch_embed.img_size
        if size is None and mode != "none" and trained_size != 518:
            size = trained_size  # a small model (the default model's teachers) trained at its own size
        images = preprocess_frames(frames, mode, size).to(device)
        log.info("%d views of %dx%d (HxW), preprocessing %s", images.shape[0], *images.shape[-2:], mode)
        prediction = model.predict(images)
        relative = not args.network_frame
        cameras = prediction.cameras(0, relative_to_first=relative).to("cpu")
    except (CheckpointError, FramesError, InputError, PredictionError) as error:
        log.error("%s", error)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    save_cameras_json(args.out / CAMERAS_FILE, cameras)
    if model_type == "anysplat":
        voxel_size = model.config.voxel_size if args.voxel_size is None else args.voxel_size
        scene = prediction.gaussian_scene(0, voxel_size=voxel_size or None, relative_to_first=relative)
        save_gaussian_ply(args.out / "gaussians.ply", scene.to("cpu"))
        log.info("wrote %d Gaussians and %d cameras to %s", len(scene), len(cameras), args.out)
    else:
        scene = prediction.point_scene(
            0, source=args.points_from, relative_to_first=relative, min_confidence=args.min_confidence
        )
        save_point_ply(args.out / "points.ply", scene.to("cpu"))
        log.info("wrote %d points and %d cameras to %s", len(scene), len(cameras), args.out)
    return 0
