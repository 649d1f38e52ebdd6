"""Our stitched-decoder checkpoint format: one folder, written by ``StitchedDecoder.save_pretrained`` and read
by ``StitchedDecoder.from_pretrained`` (``engine.stitching.decoder``); this module holds the format itself.

Layout::

    <dir>/model.safetensors      every tensor of StitchedDecoder.state_dict(), LoRA MERGED into the weights
    <dir>/stitched_config.json   what is needed to rebuild the module (see below)

Keys are ``stitching_layer.{weight,bias}`` and ``network.<base-model key>`` for the kept part only; kept
DINOv2 blocks keep their original index (``network.encoder.aggregator.patch_embed.blocks.2...`` for the
released cut). LoRA is stored merged (``W + B·A·alpha/r``): the file is then a plain network that loads
without peft, runs at the base model's speed, and is what the generator's reward finetuning and the
generation pipeline consume. The LoRA settings used in training are recorded in the config for
provenance; to keep finetuning, the trainer's own resumable checkpoints (``engine.stitching.train``) hold
the separate LoRA factors.

``stitched_config.json``::

    {"format": "vist3a-stitched-decoder", "format_version": 1,
     "model": {"model_type": "anysplat", "config": {... AnySplatConfig.to_dict() ...}},
     "cut_stage": "patch_embed.blocks.1",
     "stitching_spec": "conv3d_k5x3x3_o1024_s1x2x2_p2x1x1",
     "vae": {"class_name": "AutoencoderKLWan", "latent_channels": 16, "spatial_factor": 8,
             "temporal_factor": 4, "name_or_path": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"},
     "lora": {"rank": 64, "alpha": 32, "dropout": 0.0, "merged": true, ...} or null,
     "dtype": "float32"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from engine.models.checkpoint import state_dict_problems

FORMAT = "vist3a-stitched-decoder"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "stitched_config.json"


class StitchedCheckpointError(ValueError):
    """A stitched-decoder checkpoint is missing, malformed or does not fit its description."""


def stitched_config(decoder) -> dict:
    """The ``stitched_config.json`` content describing ``decoder``."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"model_type": decoder.model_type, "config": decoder.network.config.to_dict()},
        "cut_stage": decoder.cut_stage,
        "stitching_spec": decoder.spec,
        "vae": decoder.vae.to_dict(),
        "lora": decoder.lora_info,
        "dtype": str(decoder.stitching_layer.weight.dtype).removeprefix("torch."),
    }


def read_stitched_config(path: Union[str, Path]) -> dict:
    """Reads and validates ``stitched_config.json`` of a checkpoint folder."""
    folder = Path(path)
    config_path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise StitchedCheckpointError(f"stitched decoder checkpoint folder not found: {folder}")
    if not config_path.is_file():
        raise StitchedCheckpointError(f"{folder} has no {CONFIG_FILE}: not a stitched-decoder checkpoint")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise StitchedCheckpointError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StitchedCheckpointError(f"{config_path}: 'format' must be {FORMAT!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise StitchedCheckpointError(
            f"{config_path}: format_version {data.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    required = ("model", "cut_stage", "stitching_spec", "vae", "lora")
    missing = [k for k in required if k not in data]
    if missing:
        raise StitchedCheckpointError(f"{config_path}: missing entries {missing}")
    model = data["model"]
    if not isinstance(model, dict) or not isinstance(model.get("config"), dict):
        raise StitchedCheckpointError(f"{config_path}: 'model' must be {{'model_type': ..., 'config': {{...}}}}")
    if model.get("config", {}).get("model_type") != model.get("model_type"):
        raise StitchedCheckpointError(f"{config_path}: model.model_type disagrees with model.config.model_type")
    return data


def check_state_dict(decoder: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raises StitchedCheckpointError listing missing, unexpected and mis-shaped keys."""
    problems = state_dict_problems(decoder.state_dict(keep_vars=True), state, "decoder")
    if problems:
        raise StitchedCheckpointError(f"{source} does not fit its stitched decoder: " + "; ".join(problems))


def assign_state_dict(
    decoder: torch.nn.Module, state: dict[str, Tensor], device: Union[str, torch.device], dtype: torch.dtype
) -> None:
    """Strictly loads ``state`` (checked with :func:`check_state_dict`) into a decoder, possibly on meta."""
    own = decoder.state_dict(keep_vars=True)
    converted = {
        k: state[k].to(device=device, dtype=dtype if own[k].is_floating_point() else own[k].dtype) for k in own
    }
    decoder.load_state_dict(converted, strict=True, assign=True)
