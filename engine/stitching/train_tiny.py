"""Tiny finetuning set-ups (random tiny Wan VAE + tiny AnySplat teacher) for tests and benchmarks.

:func:`tiny_trainer` builds a :class:`DistillationTrainer` that runs a step in about a second on a CPU:
a tiny diffusers ``AutoencoderKLWan`` (4 latent channels, 4x spatial, 4x temporal), the visible tiny
AnySplat of :func:`engine.testing.tiny.build_visible_anysplat` as teacher, synthetic clips of 5 views at 32 px
for the VAE and 56 px (4x4 tokens) for the network, stitched after DINOv2 block 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from engine.stitching.clips import SyntheticClips
from engine.stitching.decoder import VAEReference
from engine.stitching.train import DistillationTrainer, TrainConfig

TINY_CUT_STAGE = "patch_embed.blocks.0"
TINY_SPEC = "conv3d_k3_o32_s1x2x2_p1"  # tiny Wan latent 8x8 (32 px, factor 4) -> 4x4 tokens (56 px, patch 14)
TINY_SETTINGS = dict(
    cut_stage=TINY_CUT_STAGE,
    spec=TINY_SPEC,
    steps=20,
    lr=2e-3,
    warmup_steps=0,
    views=(5, 5),
    vae_size=32,
    model_size=56,
    lora_rank=4,
    lora_alpha=2,
    save_every=1000,
)


def tiny_wan_vae(seed: int = 0):
    """A randomly initialised diffusers ``AutoencoderKLWan`` of 4 latent channels (non-trivial latent stats)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[1.5, 0.8, 1.0, 1.2],
    ).eval()


def tiny_wan_adapter(seed: int = 0):
    """:func:`tiny_wan_vae` wrapped in ``WanVAEAdapter``."""
    from engine.stitching.vae import WanVAEAdapter

    return WanVAEAdapter(tiny_wan_vae(seed))


def tiny_trainer(out_dir: Optional[Union[str, Path]] = None, seed: int = 0, **overrides) -> DistillationTrainer:
    """A trainer on tiny random models and synthetic clips; ``overrides`` replace ``TrainConfig`` fields."""
    from engine.testing.tiny import build_visible_anysplat

    teacher = build_visible_anysplat(seed)
    vae = tiny_wan_adapter(seed)
    settings = {**TINY_SETTINGS, "seed": seed, **overrides}
    return DistillationTrainer(
        TrainConfig(**settings), teacher, vae, VAEReference.from_adapter(vae), SyntheticClips(), out_dir=out_dir
    )
