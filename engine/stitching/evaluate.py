"""Held-out evaluation of a stitched decoder against its teacher (VIST3A's "stitching barely costs
accuracy", method.md §4): ``python -m engine stitch evaluate``.

For each held-out scene of a ``teacher data`` cache (``engine.teachers.data``: the T input views of a
procedural orbit at the teacher's resolution, the T-1 half-way views as novel views, known depth and
cameras), both networks reconstruct the same scene:

* the teacher (the original 3D network) from the T input frames at its resolution;
* the stitched decoder from the video-VAE latent of the same T views, rendered at the VAE's resolution
  (``engine.data.synthetic_clip`` with the scene's seed draws exactly the input cameras), with the
  VAE-decoded frames resized to the network's resolution as its RGB input: the path generation takes.

Reported per network (``engine.teachers.losses.evaluate_prediction``): novel-view PSNR (dB) of its
Gaussians rendered at the held-out views against the true frames, depth AbsRel, camera rotation error
(degrees); and the stitched decoder's render PSNR against the teacher's Gaussians at the teacher's
cameras (``engine.stitching.train.render_psnr``). AnySplat (Gaussian) decoders give every figure; VGGT
(pointmap) ones all but the renders, and instead the world-point error of each network against the true
points (``points_err``) and the stitched decoder's mean distance to the teacher's points
(``stitched_vs_teacher_points``), both in the normalised units of the teacher data (unit mean distance of
the surface points).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

PAIRED_KEYS = ("novel_psnr", "novel_coverage", "depth_absrel", "rot_err_deg", "trans_err", "points_err")


@torch.no_grad()
def evaluate_stitched(
    decoder,
    teacher,
    vae,
    samples: list[dict],
    vae_size: int,
    sheet: Optional[Path] = None,
) -> dict:
    """Mean held-out figures of ``decoder`` (a :class:`StitchedDecoder`) and ``teacher`` over ``samples``.

    Args:
        decoder: the stitched decoder; teacher: the original network it was cut from (same type).
        vae: a ``VideoVAEAdapter`` (``engine.stitching.vae``) whose latent the decoder reads.
        samples: held-out samples of ``engine.teachers.data.load_cache`` (T input views each).
        vae_size: square frame size (pixels) the VAE encodes (128 for the default model).
        sheet: optional PNG: per scene (first two), the true novel views, the teacher's renders and
            the stitched decoder's renders, one row each.
    Returns:
        ``{"teacher_<metric>": ..., "stitched_<metric>": ..., "stitched_vs_teacher_psnr": ... (Gaussians)
        or "stitched_vs_teacher_points": ... (pointmaps), "scenes": n}``; metrics as in
        ``engine.teachers.losses.evaluate_prediction``.
    Raises:
        ValueError: no samples.
    """
    from engine.data import synthetic_clip
    from engine.stitching.train import render_psnr
    from engine.teachers import losses
    from engine.teachers.data import normalise
    from engine.teachers.train import write_sheet

    if not samples:
        raise ValueError("no held-out scenes to evaluate on")
    decoder.eval()
    teacher.eval()
    records, rows = [], []
    for index, sample in enumerate(samples):
        batch = normalise(sample)
        views, size = batch.images.shape[1], batch.images.shape[-1]
        teacher_prediction = teacher(batch.images)
        clip = synthetic_clip(int(sample["seed"]), views, vae_size, vae_size, "orbit")
        frames = clip.frames.permute(0, 3, 1, 2).float().unsqueeze(0).clamp(0, 1)  # (1, T, 3, S, S)
        latent = vae.encode(frames, normalized=False)
        decoded = vae.decode_raw(latent).clamp(0, 1)  # (1, T, 3, S, S)
        head_frames = F.interpolate(decoded[0], size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
        student_prediction = decoder(latent, head_frames.unsqueeze(0))
        gaussians = hasattr(teacher_prediction, "gaussian_scene")
        record = {}
        for name, prediction in (("teacher", teacher_prediction), ("stitched", student_prediction)):
            metrics = losses.evaluate_prediction(prediction, batch, render=gaussians)
            if sheet is not None and index < 2 and "_renders" in metrics:
                if name == "teacher":
                    pick = torch.linspace(0, len(batch.target_cameras) - 1, len(metrics["_renders"])).round().long()
                    rows.append(torch.cat(list(batch.target_images[pick]), dim=1))
                rows.append(torch.cat(list(metrics["_renders"]), dim=1))
            record.update({f"{name}_{k}": v for k, v in metrics.items() if not k.startswith("_")})
        if gaussians:
            record["stitched_vs_teacher_psnr"] = render_psnr(student_prediction, teacher_prediction)
        else:
            gap = (student_prediction.world_points[0].float() - teacher_prediction.world_points[0].float()).norm(dim=-1)
            record["stitched_vs_teacher_points"] = float(gap.mean())
        records.append(record)
    if sheet is not None and rows:
        write_sheet(rows, sheet)
    result = losses.mean_metrics(records)
    result["scenes"] = len(records)
    return result
