"""Writing a generation's run folder atomically, and re-running a generation from it.

The folder's layout (file names, metadata format and version) is defined once, in
:mod:`engine.io.run_format`, which the add-on reads too. The folder is built in a hidden sibling and
renamed into place at the end, so a reader never sees a half-written run and a failed or cancelled run
leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from engine.geometry.cameras import interpolate_cameras, orthonormalized
from engine.io import atomic_directory, atomic_write
from engine.io.run_format import (
    CAMERAS_FILE,
    DEPTH_FILE,
    FLYTHROUGH_FILE,
    FRAMES_FILE,
    METADATA_FILE,
    OUTPUT_FILES,
    RUN_FORMAT,
    RUN_VERSION,
    SCENE_FILE,
    read_run_metadata,
)
from engine.pipeline.settings import GenerationSettings, ModelNotFoundError, RuntimeOptions
from engine.pipeline.vist3a import (
    CancelCheck,
    GenerationResult,
    ProgressCallback,
    Vist3aPipeline,
    check_cancel,
    software_versions,
)
from engine.scene import Cameras, GaussianScene, PointScene

logger = logging.getLogger(__name__)

VIDEO_FPS = 12
FLYTHROUGH_FPS = 24
# Interpolated poses between two consecutive predicted cameras in the fly-through.
FLYTHROUGH_POSES_BETWEEN = 3
# Cameras rendered per rasterizer call (bounds memory for millions of Gaussians).
RENDER_BATCH = 8


# ----------------------------------------------------------------------------- videos


def _write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """(N, H, W, 3) uint8 -> H.264 MP4 (yuv420p, so odd sizes are padded by one edge row/column)."""
    import imageio_ffmpeg

    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=8, macro_block_size=1
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def _to_uint8(images: Tensor) -> np.ndarray:
    """(N, H, W, 3) float in [0, 1] -> uint8 numpy."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def colorize_depth(depth: Tensor, valid: Optional[Tensor] = None) -> np.ndarray:
    """(N, H, W) depth -> (N, H, W, 3) uint8 with the turbo colour map on inverse depth (near = bright).

    The range is the 2nd..98th percentile of the valid inverse depths over the whole video, so the
    colours are comparable between frames; invalid pixels (depth <= 0 or not finite) are black.
    """
    from matplotlib import colormaps

    depth = depth.detach().float().cpu()
    valid = (depth > 0) & torch.isfinite(depth) if valid is None else valid & (depth > 0) & torch.isfinite(depth)
    inverse = torch.where(valid, 1.0 / depth.clamp_min(1e-8), torch.zeros_like(depth))
    if valid.any():
        values = inverse[valid]
        low, high = torch.quantile(values[:1_000_000], torch.tensor([0.02, 0.98])).tolist()
    else:
        low, high = 0.0, 1.0
    scaled = ((inverse - low) / max(high - low, 1e-8)).clamp(0, 1).numpy()
    rgb = colormaps["turbo"](scaled)[..., :3]
    rgb[~valid.numpy()] = 0
    return (rgb * 255).round().astype(np.uint8)


def _points_as_gaussians(points: PointScene, cameras: Cameras) -> GaussianScene:
    """Coloured points -> small round opaque Gaussians about one pixel wide as seen from the nearest camera."""
    from engine.scene import rgb_to_sh_dc

    distances = torch.cdist(points.points.float(), cameras.centers.float()).min(dim=1).values
    focal = float(cameras.fx.float().mean())
    scales = (distances / focal).clamp_min(1e-6)[:, None].expand(-1, 3)
    count = len(points)
    return GaussianScene(
        means=points.points.float(),
        rotations=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(count, 4).contiguous(),
        log_scales=scales.log().contiguous(),
        opacity_logits=torch.full((count,), 4.0),
        sh=rgb_to_sh_dc(points.colors.float())[:, None],
    )


def render_flythrough(
    scene: Union[GaussianScene, PointScene],
    cameras: Cameras,
    *,
    poses_between: int = FLYTHROUGH_POSES_BETWEEN,
    device: Optional[torch.device] = None,
    backend: str = "auto",
    cancel: CancelCheck = None,
) -> tuple[Tensor, Tensor]:
    """Renders the scene along the (interpolated) cameras: rgb (N, H, W, 3) and depth (N, H, W), on the CPU."""
    from engine.render import rasterize

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gaussians = scene if isinstance(scene, GaussianScene) else _points_as_gaussians(scene, cameras)
    gaussians = gaussians.to(device=device, dtype=torch.float32)
    path = interpolate_cameras(cameras, poses_between).to(device=device, dtype=torch.float32)
    rgb, depth = [], []
    with torch.no_grad():
        for start in range(0, len(path), RENDER_BATCH):
            check_cancel(cancel)
            out = rasterize(gaussians, path[start : start + RENDER_BATCH], background=(1.0, 1.0, 1.0), backend=backend)
            rgb.append(out.rgb.cpu())
            depth.append(out.depth.cpu())
    return torch.cat(rgb), torch.cat(depth)


# ----------------------------------------------------------------------------- the run folder


def metadata_of(result: GenerationResult, files: dict) -> dict:
    """The metadata.json content of a result (format ``RUN_FORMAT``, version ``RUN_VERSION``)."""
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": result.settings.to_dict(),
        "seed": result.settings.seed,
        "full_prompt": result.full_prompt,
        "unknown_words": list(result.unknown_words),
        "runtime": result.runtime.to_dict(),
        "device": result.device,
        "dtype": result.dtype,
        "memory_policy": result.memory,
        "model": result.model,
        "versions": software_versions(),
        "timings": result.timings,
        "outputs": files,
        "latent_shape": list(result.latent.shape),
    }


def write_outputs(
    result: GenerationResult,
    out_dir: Union[str, Path],
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelCheck = None,
    render_device: Optional[torch.device] = None,
    render_backend: str = "auto",
    flythrough: bool = True,
) -> Path:
    """Writes the run folder (``engine.io.run_format``) atomically; returns its path.

    ``flythrough=False`` leaves ``flythrough.mp4`` out (metadata ``outputs.flythrough_frames`` is then 0):
    rendering it is most of this function's time on a CPU, and the Blender add-on, which renders the
    scene itself, never shows it. Without the decoder's depth, ``depth.mp4`` is then rendered at the
    predicted cameras alone instead of being taken from the fly-through.

    Raises:
        FileExistsError: ``out_dir`` exists already (nothing is written).
        GenerationCancelled: ``cancel`` was set; the half-built folder is removed.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"output folder {out_dir} already exists")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    total = len(OUTPUT_FILES) - (0 if flythrough else 1)
    step = 0

    def advance():
        nonlocal step
        step += 1
        if progress:
            progress("write_outputs", step, total, None)
        check_cancel(cancel)

    from engine.io.scene_io import save_cameras_json, save_gaussian_ply, save_point_ply

    with atomic_directory(out_dir) as work:
        check_cancel(cancel)
        files = {"scene_kind": result.settings.output_kind, "num_primitives": len(result.scene)}
        if isinstance(result.scene, GaussianScene):
            files["dropped_non_finite"] = save_gaussian_ply(work / SCENE_FILE, result.scene, non_finite="drop")
        else:
            files["dropped_non_finite"] = save_point_ply(work / SCENE_FILE, result.scene, non_finite="drop")
        advance()
        cameras = orthonormalized(result.cameras)
        save_cameras_json(work / CAMERAS_FILE, cameras)
        advance()
        _write_video(work / FRAMES_FILE, _to_uint8(result.frames.permute(0, 2, 3, 1)), VIDEO_FPS)
        advance()
        if flythrough or result.depth is None:
            # without the fly-through video, only the predicted cameras are rendered (for their depth)
            poses_between = FLYTHROUGH_POSES_BETWEEN if flythrough else 0
            flythrough_rgb, flythrough_depth = render_flythrough(
                result.scene,
                cameras,
                poses_between=poses_between,
                device=render_device,
                backend=render_backend,
                cancel=cancel,
            )
        if result.depth is not None:
            depth, files["depth_source"] = result.depth, "decoder"
        else:  # the rendered depth at the predicted cameras (every (poses_between+1)-th rendered frame)
            depth, files["depth_source"] = flythrough_depth[:: poses_between + 1], "rendered"
        _write_video(work / DEPTH_FILE, colorize_depth(depth), VIDEO_FPS)
        advance()
        files["flythrough_frames"] = 0
        if flythrough:
            _write_video(work / FLYTHROUGH_FILE, _to_uint8(flythrough_rgb), FLYTHROUGH_FPS)
            files["flythrough_frames"] = len(flythrough_rgb)
            advance()
        result.timings["write_outputs"] = round(time.perf_counter() - start, 3)
        with atomic_write(work / METADATA_FILE, "w") as f:
            json.dump(metadata_of(result, files), f, indent=2)
            f.write("\n")
        step += 1
        if progress:
            progress("write_outputs", step, total, None)
    return out_dir


def unique_run_dir(root: Union[str, Path], settings: GenerationSettings) -> Path:
    """A new folder name under ``root``: ``YYYYmmdd-HHMMSS-<prompt words>-<seed>`` (suffixed if taken)."""
    slug = re.sub(r"[^a-z0-9]+", "-", settings.prompt.lower()).strip("-")[:40].rstrip("-") or "scene"
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{settings.seed if settings.seed is not None else 'random'}"
    candidate = Path(root) / base
    counter = 2
    while candidate.exists():
        candidate = Path(root) / f"{base}-{counter}"
        counter += 1
    return candidate


# ----------------------------------------------------------------------------- reproducing a run


def regenerate(
    metadata_path: Union[str, Path],
    out_dir: Union[str, Path],
    *,
    pipeline: Optional[Vist3aPipeline] = None,
    model: Optional[Union[str, Path]] = None,
    runtime: Optional[RuntimeOptions] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelCheck = None,
) -> Path:
    """Re-runs a generation from its metadata.json (same settings and seed) into ``out_dir``.

    The model is ``pipeline`` if given, else the bundle at ``model``, else the bundle recorded in the
    metadata. Runtime options default to the recorded ones. A model whose recorded identity differs
    from the one loaded is reported in the log (results may then differ).
    """
    data = read_run_metadata(metadata_path)
    settings = GenerationSettings.from_dict(data["settings"])
    if pipeline is None:
        bundle_path = model or data["model"].get("bundle")
        if not bundle_path or not Path(bundle_path).exists():
            raise ModelNotFoundError(f"the model bundle recorded in {metadata_path} ({bundle_path}) does not exist")
        runtime = runtime or RuntimeOptions.from_dict(data["runtime"])
        pipeline = Vist3aPipeline.from_pretrained(bundle_path, runtime=runtime, progress=progress, cancel=cancel)
    recorded, loaded = data.get("model", {}), pipeline.model_identity
    for part in ("wan", "lora", "decoder"):
        if (recorded.get(part) or {}).get("quick_sha256") != (loaded.get(part) or {}).get("quick_sha256"):
            logger.warning(
                "model part %r differs from the one recorded in %s; the scene may differ", part, metadata_path
            )
    result = pipeline.generate(settings, progress=progress, cancel=cancel)
    pipeline.free_gpu_memory()
    return write_outputs(result, out_dir, progress=progress, cancel=cancel)
