"""Checkpoint files of VGGT and AnySplat: reading, strict loading into a model, writing.

This module knows no model class (``engine.models.loading`` lists them); ``ReconstructionModel`` builds on it.

Accepted sources (``read_checkpoint(source)``):

* a weights file: ``.safetensors`` (any dtype, cast on load), or a ``torch.save``d state dict
  (``.pt``/``.pth``/``.bin``, read with ``weights_only=True``; a ``{"model": state_dict}`` wrapper, as
  written by the official trainer, is unwrapped);
* a folder: the official ``PyTorchModelHubMixin`` layout (``config.json`` + ``model.safetensors``, else
  ``pytorch_model.bin``, else ``model.pt``) or our own (``save_checkpoint``: ``config.json`` with a
  ``model_type`` entry + ``model.safetensors``);
* a Hugging Face hub id (``facebook/VGGT-1B``, ``lhjiang/anysplat``) resolved through the local hub
  cache; it is downloaded only when not cached and ``HF_HUB_OFFLINE`` is not set.

The model type comes from ``config.json`` or, failing that, from the key layout (VGGT: ``aggregator.*``,
AnySplat: ``encoder.aggregator.*``). Without a config the full-size architecture is assumed.

Strictness: every key of the model must be present with its shape, and every checkpoint key must be
used, except keys of official modules VIST3A does not need, which are dropped and reported:
VGGT's ``track_head.*`` and AnySplat's teacher copies ``encoder.distill_*``. Anything else missing,
unexpected or mis-shaped raises ``CheckpointError`` listing the first few of each kind with counts.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from engine.models.config import AnySplatConfig, VGGTConfig, config_from_dict

log = logging.getLogger(__name__)

# Official modules that exist in released checkpoints but are not built here (prefix -> reason).
DROPPED_PREFIXES = {
    "vggt": {"track_head.": "VGGT track head (point tracking, unused by VIST3A)"},
    "anysplat": {
        "encoder.distill_aggregator.": "AnySplat training teacher (distill) copy",
        "encoder.distill_camera_head.": "AnySplat training teacher (distill) copy",
        "encoder.distill_depth_head.": "AnySplat training teacher (distill) copy",
    },
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt")
_LIST_LIMIT = 8


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (keys, shapes, type) or cannot be found/read."""


@dataclass
class LoadReport:
    """What ``load_state_dict_strict`` did besides the 1:1 copy."""

    model_type: str
    source: str
    num_loaded: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # prefix -> number of keys dropped
    cast: dict[str, int] = field(default_factory=dict)  # "bfloat16->float32" -> number of tensors

    def summary(self) -> str:
        parts = [f"loaded {self.num_loaded} tensors into {self.model_type} from {self.source}"]
        for prefix, count in self.dropped.items():
            parts.append(f"dropped {count} '{prefix}*' keys ({_reason(self.model_type, prefix)})")
        for conversion, count in self.cast.items():
            parts.append(f"cast {count} tensors {conversion}")
        return "; ".join(parts)


def _reason(model_type: str, prefix: str) -> str:
    return DROPPED_PREFIXES.get(model_type, {}).get(prefix, "not part of this model")


def listing(keys: list[str]) -> str:
    """``"N (first, second, ...)"``: a count and the first few names, for error messages."""
    shown = ", ".join(keys[:_LIST_LIMIT])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > _LIST_LIMIT else ''})"


def state_dict_problems(own: dict[str, Tensor], state: dict[str, Tensor], owner: str) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``state`` against ``own`` (empty when it fits)."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {owner} {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {listing(mismatched)}")
    return problems


def load_safetensors_folder(model, folder: Union[str, Path], what: str) -> None:
    """Copies the weights in the ``*.safetensors`` files of ``folder`` (a diffusers model folder; any dtype,
    cast to the model's) into ``model`` (an ``nn.Module`` built with the architecture the run asks for).

    ``what`` names the model in messages ("the transformer", "the VAE"). Raises FileNotFoundError when the
    folder holds no safetensors file and ValueError naming the missing, unexpected or mis-shaped weights
    (the folder's model has another architecture than the one configured).
    """
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .safetensors weights")
    state = {}
    for file in files:
        state.update(load_file(str(file)))
    own = model.state_dict()
    problems = state_dict_problems(own, state, f"the configured {what.removeprefix('the ')}")
    if problems:
        raise ValueError(f"{what} in {folder} does not fit this run's settings: " + "; ".join(problems))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def detect_model_type(keys) -> Optional[str]:
    """'vggt' / 'anysplat' from the key layout, None if it is neither."""
    keys = list(keys)
    if any(k.startswith("encoder.aggregator.") for k in keys):
        return "anysplat"
    if any(k.startswith("aggregator.") for k in keys):
        return "vggt"
    return None


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, Tensor], source: str = "<state dict>") -> LoadReport:
    """Copies ``state_dict`` into ``model`` with the checks described in the module doc.

    Tensors are cast to the dtype of the model's parameter. A model built on the meta device is
    materialised by the assignment (the loaded tensors become its parameters).
    """
    model_type = model.config.model_type
    expected_type = model_type
    found_type = detect_model_type(state_dict)
    if found_type is not None and found_type != expected_type:
        raise CheckpointError(
            f"{source} holds {_pretty(found_type)} weights, but a {_pretty(expected_type)} model was requested"
        )
    report = LoadReport(model_type=model_type, source=source)
    own = model.state_dict(keep_vars=True)
    kept = {}
    for key, value in state_dict.items():
        prefix = next((p for p in DROPPED_PREFIXES.get(model_type, {}) if key.startswith(p)), None)
        if prefix is not None and key not in own:
            report.dropped[prefix] = report.dropped.get(prefix, 0) + 1
        else:
            kept[key] = value
    problems = state_dict_problems(own, kept, "model")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))

    materialise = any(p.is_meta for p in own.values())
    converted = {}
    for key, target in own.items():
        value = kept[key]
        if value.dtype != target.dtype:
            name = f"{str(value.dtype).removeprefix('torch.')}->{str(target.dtype).removeprefix('torch.')}"
            report.cast[name] = report.cast.get(name, 0) + 1
        device = value.device if target.is_meta else target.device
        converted[key] = value.to(device=device, dtype=target.dtype)
    model.load_state_dict(converted, strict=True, assign=materialise)
    report.num_loaded = len(converted)
    return report


def _pretty(model_type: str) -> str:
    return {"vggt": "VGGT", "anysplat": "AnySplat"}.get(model_type, model_type)


# ------------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------------


def read_state_dict(path: Union[str, Path]) -> dict[str, Tensor]:
    """Reads a weights file (safetensors or torch pickle with ``weights_only=True``) to CPU tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(f"cannot read {path} as a torch state dict: {error}") from error
        # training checkpoints wrap the weights: {"model": ...} (AnySplat), {"state_dict": ...} (HPSv2.1)
        for wrapper in ("model", "state_dict"):
            if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
                data = data[wrapper]
                break
        if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
            raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
        return data
    raise CheckpointError(f"unknown weights format {path.suffix!r} ({path}); use .safetensors, .pt, .pth or .bin")


def resolve_source(source: Union[str, Path]) -> Path:
    """A local file or folder, or a hub id resolved through the Hugging Face cache."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise CheckpointError(f"checkpoint not found: {source} (neither a local path nor a hub id 'owner/name')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["config.json", *WEIGHT_FILES]
    try:
        return Path(snapshot_download(text, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise CheckpointError(f"{text} is not in the Hugging Face cache and HF_HUB_OFFLINE is set") from None
    try:
        return Path(snapshot_download(text, allow_patterns=patterns))
    except Exception as error:
        raise CheckpointError(f"cannot download {text} from the Hugging Face hub: {error}") from error


def config_from_official(data: dict) -> Union[VGGTConfig, AnySplatConfig]:
    """The ``config.json`` of an official hub folder (VGGT mixin kwargs or AnySplat's encoder/decoder cfg)."""
    if "encoder_cfg" in data:
        encoder = data["encoder_cfg"] or {}
        head_type = encoder.get("pred_head_type", "depth")
        if head_type != "depth":
            raise CheckpointError(f"AnySplat config with pred_head_type={head_type!r}: only 'depth' is supported")
        taps = encoder.get("intermediate_layer_idx")
        if taps not in (None, [4, 11, 17, 23]):
            raise CheckpointError(f"AnySplat config with intermediate_layer_idx={taps}: expected [4, 11, 17, 23]")
        base = AnySplatConfig()
        sh_degree = (encoder.get("gaussian_adapter") or {}).get("sh_degree", base.gaussian_head.sh_degree)
        gaussian = type(base.gaussian_head)(sh_degree=sh_degree)
        return AnySplatConfig(gaussian_head=gaussian, voxel_size=encoder.get("voxel_size", base.voxel_size))
    official_vggt = {"img_size": 518, "patch_size": 14, "embed_dim": 1024}
    flags = ("enable_camera", "enable_point", "enable_depth", "enable_track")
    if set(data) <= set(official_vggt) | set(flags):
        different = {k: v for k, v in data.items() if k in official_vggt and v != official_vggt[k]}
        disabled = [k for k in flags[:3] if data.get(k) is False]
        if different or disabled:
            raise CheckpointError(
                f"unsupported VGGT config (only the released architecture is built): {different or disabled}"
            )
        return VGGTConfig()
    raise CheckpointError(f"config.json is neither ours (model_type) nor an official VGGT/AnySplat one: {sorted(data)}")


def read_folder(folder: Path):
    """(config or None, weights path) of a checkpoint folder."""
    config = None
    config_path = folder / "config.json"
    if config_path.is_file():
        data = json.loads(config_path.read_text())
        config = config_from_dict(data) if "model_type" in data else config_from_official(data)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return config, folder / name
    raise CheckpointError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}")


def read_checkpoint(source: Union[str, Path], model_type: Optional[str] = None):
    """(config, state dict, weights path) of a checkpoint file, folder or hub id, its type checked.

    ``model_type``: 'vggt' or 'anysplat' to require one (a checkpoint of the other type raises
    ``CheckpointError``); None accepts either. Without a ``config.json`` the full-size architecture is assumed.
    """
    path = resolve_source(source)
    config = None
    if path.is_dir():
        config, weights_path = read_folder(path)
    else:
        weights_path = path
    state_dict = read_state_dict(weights_path)
    found_type = detect_model_type(state_dict)
    if found_type is None:
        raise CheckpointError(f"{weights_path} holds neither VGGT ('aggregator.*') nor AnySplat ('encoder.*') weights")
    if config is not None and config.model_type != found_type:
        raise CheckpointError(f"{path}: config.json says {config.model_type} but the weights are {found_type}")
    if model_type is not None and found_type != model_type:
        raise CheckpointError(
            f"{source} holds {_pretty(found_type)} weights, but a {_pretty(model_type)} model was requested"
        )
    if config is None:
        config = VGGTConfig() if found_type == "vggt" else AnySplatConfig()
    return config, state_dict, weights_path


def instantiate(cls, config, state_dict: dict[str, Tensor], source: str, device: Union[str, torch.device] = "cpu"):
    """``cls(config)`` built on the meta device, filled strictly from ``state_dict``, moved to ``device``.

    Returns (model in eval mode, ``LoadReport``). Parameters are float32 whatever the file holds (the
    official exact evaluation); on CUDA the aggregator still computes in bf16 under autocast.
    """
    with torch.device("meta"):
        model = cls(config)
    report = load_state_dict_strict(model, state_dict, source=source)
    model.to(device)
    model.eval()
    log.info(report.summary())
    return model, report


def save_checkpoint(model: nn.Module, directory: Union[str, Path]) -> Path:
    """Writes ``config.json`` (with ``model_type``) and ``model.safetensors`` into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory
