"""Loading either reconstruction network from a checkpoint whose type is not known in advance.

The model classes are listed here explicitly (``MODEL_CLASSES``); checkpoint files themselves are read by
``engine.models.checkpoint``. A known type loads with ``VGGT.from_pretrained`` / ``AnySplat.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from engine.models.anysplat import AnySplat
from engine.models.checkpoint import instantiate, read_checkpoint
from engine.models.config import AnySplatConfig, VGGTConfig
from engine.models.vggt import VGGT

# model_type (``config.json``) -> class
MODEL_CLASSES = {"vggt": VGGT, "anysplat": AnySplat}


def build_model(config: Union[VGGTConfig, AnySplatConfig], device: Union[str, torch.device, None] = None):
    """An (uninitialised) model of the config's type; ``device="meta"`` allocates nothing."""
    with torch.device(device or "cpu"):
        return MODEL_CLASSES[config.model_type](config)


def load_model(
    source: Union[str, Path],
    model_type: Optional[str] = None,
    device: Union[str, torch.device] = "cpu",
):
    """Builds and loads a model; returns (model in eval mode, ``LoadReport``).

    ``source``: see ``engine.models.checkpoint``. ``model_type``: 'vggt' or 'anysplat' to require one (a
    checkpoint of the other type raises ``CheckpointError``); None accepts either.
    """
    config, state_dict, weights_path = read_checkpoint(source, model_type)
    return instantiate(MODEL_CLASSES[config.model_type], config, state_dict, str(weights_path), device)
