"""Before/after figures of direct reward finetuning (issue 15 §2): what the reward asks for, measured.

For one caption and seed, :func:`scene_figures` samples the model's video latent with the full sampler
(the inference path, ``Vist3aPipeline.sample_latent``), decodes it both ways as the reward does
(``AlignmentTrainer.score_latent``: VAE frames resized to the 3D network's input, the stitched decoder's
per-pixel Gaussians rendered at its own predicted cameras, black background) and measures, on *every*
view rather than the reward's two random ones:

- ``consistency_psnr``: PSNR in dB of the renders against the decoded frames (the paper's consistency
  term C is −L1 of the same pair; PSNR is the figure the issue asks for);
- ``consistency_l1``: the mean absolute difference of the same pair (−C without LPIPS), in [0, 1] units;
- ``clip_decoded`` / ``clip_rendered``: the CLIP-family scorer's score of the caption against the decoded
  frames and the renders, averaged over the views (the reward's quality term is Q = score − 1);
- ``colors_visible`` / ``relations_correct``: the caption check of the first decoded frame (the caption's
  reference view) with :func:`engine.generator.quality.check_frame`, as in ``benchmarks/default_generator.py``.

:func:`compare` runs this for several models (bundle folders) over the same captions and seeds, so the rows
differ only by the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from engine.pipeline.settings import GenerationSettings
from engine.render import rasterize
from engine.teachers.losses import psnr_from_mse

BACKGROUND = (0.0, 0.0, 0.0)  # the reward's renders (AlignConfig.background)


@dataclass
class SceneFigures:
    """One caption's figures (see the module docstring for each)."""

    consistency_psnr: float
    consistency_l1: float
    clip_decoded: float
    clip_rendered: float
    colors_visible: list[bool]
    relations_correct: list[bool]


@torch.no_grad()
def scene_figures(pipe, scene, settings: GenerationSettings, scorer) -> SceneFigures:
    """The figures of ``pipe`` (a ``Vist3aPipeline`` with a Gaussian decoder) for ``scene`` (a world scene
    whose ``caption`` is the prompt, or a parsed caption with a ``caption`` attribute added by the caller).

    ``settings``: the generation settings (prompt, sizes, steps, guidance, seed); ``scorer``: a
    ``QualityScorer`` (images (N, 3, H, W) in [0, 1], prompts) -> (N,) scores.
    Raises ValueError when the model's decoder does not make Gaussians (consistency needs renders).
    """
    from engine.generator.quality import check_frame

    latent = pipe.sample_latent(settings, settings.seed)
    vae_latent = pipe.denormalize_latent(latent)
    frames = pipe.decode_frames(vae_latent).clamp(0, 1)  # (1, T, 3, H, W)
    decoded = pipe.decoder.decode(vae_latent, frames, voxel_merge=False, relative_to_first=False, clamp_frames=True)
    if decoded.gaussians is None:
        raise ValueError("this model's 3D decoder makes point clouds: the consistency figure needs Gaussians")
    network_frames = decoded.frames.float()  # (T, 3, h, w): what the decoder read
    renders = rasterize(decoded.gaussians, decoded.cameras, background=BACKGROUND).rgb.permute(0, 3, 1, 2).clamp(0, 1)
    difference = renders - network_frames
    prompts = [settings.prompt] * network_frames.shape[0]
    check = check_frame(frames[0, 0].permute(1, 2, 0).numpy(), scene)
    return SceneFigures(
        consistency_psnr=psnr_from_mse(float(difference.pow(2).mean())),
        consistency_l1=float(difference.abs().mean()),
        clip_decoded=float(scorer(network_frames, prompts).mean()),
        clip_rendered=float(scorer(renders, prompts).mean()),
        colors_visible=list(check.colors_visible.values()),
        relations_correct=list(check.relations_correct),
    )


def summarize(figures: Sequence[SceneFigures]) -> dict:
    """Means over captions (colour and relation accuracies pooled over objects and relations)."""
    colours = [v for f in figures for v in f.colors_visible]
    relations = [v for f in figures for v in f.relations_correct]
    return {
        "captions": len(figures),
        "consistency_psnr": float(np.mean([f.consistency_psnr for f in figures])),
        "consistency_l1": float(np.mean([f.consistency_l1 for f in figures])),
        "clip_decoded": float(np.mean([f.clip_decoded for f in figures])),
        "clip_rendered": float(np.mean([f.clip_rendered for f in figures])),
        "color_accuracy": float(np.mean(colours)) if colours else float("nan"),
        "relation_accuracy": float(np.mean(relations)) if relations else float("nan"),
        "relations": len(relations),
    }


def compare(
    models: Sequence[str],
    scenes: Sequence,
    scorer,
    *,
    num_steps: Optional[int] = None,
    guidance_scale: Optional[float] = None,
    seed: int = 0,
    runtime=None,
) -> dict[str, dict]:
    """``summarize`` of each model (bundle folder) over ``scenes`` (caption i sampled with seed + i);
    sizes, flow shift and (unless given) steps and guidance are each bundle's defaults."""
    from engine.pipeline.settings import ModelBundle, RuntimeOptions
    from engine.pipeline.vist3a import Vist3aPipeline

    runtime = runtime or RuntimeOptions(device="cpu", dtype="float32")
    results = {}
    for model in models:
        bundle = ModelBundle.load(model)
        pipe = Vist3aPipeline.from_pretrained(str(model), runtime=runtime)
        try:
            figures = []
            for index, scene in enumerate(scenes):
                overrides = {"prompt": scene.caption, "seed": seed + index}
                if num_steps is not None:
                    overrides["num_steps"] = num_steps
                if guidance_scale is not None:
                    overrides["guidance_scale"] = guidance_scale
                settings = bundle.generation_settings(overrides).resolved(pipe.default_conditioning)
                figures.append(scene_figures(pipe, scene, settings, scorer))
            results[str(model)] = summarize(figures)
        finally:
            pipe.release()
    return results
