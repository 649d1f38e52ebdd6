"""The released VIST3A stitched decoder (``HJGO/VIST3A`` ``anysplat_stitched.pth``) on top of a base AnySplat.

The file (NOTES.md §8, ``shared/models/vist3a_stitched_schema.json``) is a ``torch.save``d dict::

    "lora":            {X.lora_A, X.bias (if the layer has one), X.lora_B  for every LoRA module X}
    "stitching_layer": {"weight": (1024, 16, 5, 3, 3), "bias": (1024,)}
    "cls_token": (1, 1, 1024), "register_tokens": (1, 4, 1024), "mask_token": (1, 1024)

X are module names of the official stitched model: AnySplat's (``encoder.aggregator...``,
``encoder.camera_head...``, ``encoder.depth_head...``, ``encoder.gaussian_param_head...``, and, in
checkpoints made from a model with teacher copies, ``encoder.distill_*``), with the kept DINOv2 blocks
re-indexed from 0 (``patch_embed.blocks.0`` = original block 2 for the "enc_blocks_2" cut).

LoRA is loralib's (rank r = 64, alpha 32, scaling alpha/r = 0.5):

* Linear (in -> out): A (r, in), B (out, r); effective weight ``W + (B @ A) * scaling``.
* ConvLoRA on a k×k Conv2d (in -> out, groups 1): A (r·k, in·k), B (out·k, r·k); effective weight
  ``W + (B @ A).view(out, in, k, k) * scaling`` - a plain row-major reshape of the (out·k, in·k) product,
  exactly loralib's ``.view(self.conv.weight.shape)``.

The bias entries *replace* the base biases (the official code loads them with ``strict=False`` over the
base model). Loading here merges every LoRA product into the base weights (in float32, then cast to the
requested dtype) and returns an ordinary :class:`StitchedDecoder`. The official inference casts the
aggregator's Linear/Conv2d weights to bf16 (heads stay fp32); our decoder runs the aggregator under bf16
autocast on CUDA, which rounds the same merged weights the same way up to summation order.

Key handling: every checkpoint key is either applied or reported. Keys of the teacher copies
(``encoder.distill_*``, not built here) are dropped and reported; any other key that does not name a
LoRA-able layer of the stitched model is reported as unmapped. Every Linear/Conv2d of the kept network
must receive its LoRA pair, and the tokens and stitching layer must be present: anything missing fails.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from engine.models.anysplat import AnySplat
from engine.models.loading import load_model
from engine.stitching.decoder import (
    RELEASED_CUT_STAGE,
    RELEASED_SPEC,
    WAN_VAE,
    StitchedDecoder,
    VAEReference,
    aggregator_prefix,
)
from engine.stitching.layer_spec import StitchingLayer

log = logging.getLogger(__name__)

RELEASED_RANK = 64
RELEASED_ALPHA = 32
TOKEN_KEYS = ("cls_token", "register_tokens", "mask_token")
TEACHER_PREFIX = "encoder.distill_"
_LORA_SUFFIXES = (".lora_A", ".lora_B", ".bias")
_LIST_LIMIT = 8


class ReleasedCheckpointError(ValueError):
    """The released stitched checkpoint does not fit the base model (missing or mis-shaped entries)."""


@dataclass
class ReleasedLoadReport:
    """What :func:`load_released_stitched` did with every key of the file."""

    source: str
    merged_linear: int = 0
    merged_conv: int = 0
    replaced_biases: int = 0
    dropped_teacher_keys: list[str] = field(default_factory=list)
    unmapped_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{self.source}: merged LoRA into {self.merged_linear} Linear and {self.merged_conv} Conv2d layers, "
            f"replaced {self.replaced_biases} biases, loaded tokens and stitching layer"
        ]
        if self.dropped_teacher_keys:
            parts.append(
                f"dropped {len(self.dropped_teacher_keys)} '{TEACHER_PREFIX}*' keys (teacher copies, not built)"
            )
        if self.unmapped_keys:
            shown = ", ".join(self.unmapped_keys[:_LIST_LIMIT])
            parts.append(f"UNMAPPED {len(self.unmapped_keys)} keys: {shown}")
        return "; ".join(parts)


def released_to_ours(module_name: str, removed_blocks: int) -> str:
    """Released module name -> our StitchedDecoder module name.

    ``encoder.aggregator.patch_embed.blocks.{j}...`` -> ``network.encoder.aggregator.patch_embed.blocks.{j +
    removed_blocks}...``; every other name only gains the ``network.`` prefix.
    """
    match = re.match(r"^encoder\.aggregator\.patch_embed\.blocks\.(\d+)(\..*)?$", module_name)
    if match:
        rest = match.group(2) or ""
        return f"network.encoder.aggregator.patch_embed.blocks.{int(match.group(1)) + removed_blocks}{rest}"
    return f"network.{module_name}"


def ours_to_released(module_name: str, removed_blocks: int) -> str:
    """Inverse of :func:`released_to_ours` for modules of the kept network."""
    if not module_name.startswith("network."):
        raise ValueError(f"{module_name!r} is not a module of the stitched network")
    name = module_name.removeprefix("network.")
    match = re.match(r"^encoder\.aggregator\.patch_embed\.blocks\.(\d+)(\..*)?$", name)
    if match:
        index = int(match.group(1)) - removed_blocks
        if index < 0:
            raise ValueError(f"{module_name!r} was cut away; it has no released name")
        return f"encoder.aggregator.patch_embed.blocks.{index}{match.group(2) or ''}"
    return name


def lora_target_names(decoder: StitchedDecoder) -> list[str]:
    """Our names of every nn.Linear and nn.Conv2d of the kept network (ConvTranspose2d is not a Conv2d)."""
    return [
        f"network.{name}" for name, module in decoder.network.named_modules() if type(module) in (nn.Linear, nn.Conv2d)
    ]


def lora_delta(module: nn.Module, lora_a: Tensor, lora_b: Tensor, scaling: float, name: str) -> Tensor:
    """loralib's weight update for ``module`` (float32), with shape checks naming ``name``."""
    a, b = lora_a.float(), lora_b.float()
    if isinstance(module, nn.Linear):
        rank = a.shape[0]
        expected_a, expected_b = (rank, module.in_features), (module.out_features, rank)
        if tuple(a.shape) != expected_a or tuple(b.shape) != expected_b:
            raise ReleasedCheckpointError(
                f"{name}: Linear LoRA shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not fit "
                f"{module.in_features}->{module.out_features} (expected A {expected_a}, B {expected_b})"
            )
        return (b @ a) * scaling
    kh, kw = module.kernel_size
    if kh != kw or module.groups != 1:
        raise ReleasedCheckpointError(f"{name}: ConvLoRA needs a square kernel and groups=1, got {module}")
    k = kh
    rank = a.shape[0] // k
    expected_a = (rank * k, module.in_channels * k)
    expected_b = (module.out_channels * k, rank * k)
    if a.shape[0] % k or tuple(a.shape) != expected_a or tuple(b.shape) != expected_b:
        raise ReleasedCheckpointError(
            f"{name}: ConvLoRA shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not fit a {k}x{k} conv "
            f"{module.in_channels}->{module.out_channels} (expected A (r*{k}, {module.in_channels * k}), "
            f"B ({module.out_channels * k}, r*{k}))"
        )
    return (b @ a).view(module.weight.shape) * scaling


def _group_lora(entries: dict[str, Tensor], report: ReleasedLoadReport) -> dict[str, dict[str, Tensor]]:
    """{module name: {"lora_A", "lora_B", "bias"}}; teacher keys and malformed names go to the report."""
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, value in entries.items():
        if key.startswith(TEACHER_PREFIX):
            report.dropped_teacher_keys.append(f"lora.{key}")
            continue
        suffix = next((s for s in _LORA_SUFFIXES if key.endswith(s)), None)
        if suffix is None or not isinstance(value, Tensor):
            report.unmapped_keys.append(f"lora.{key}")
            continue
        grouped.setdefault(key[: -len(suffix)], {})[suffix[1:]] = value
    return grouped


def _merge_lora_layer(
    module: nn.Module, released_name: str, parts: dict, rank: int, scaling: float, report: ReleasedLoadReport
) -> None:
    """Adds one layer's released LoRA (and replaces its bias when the checkpoint has one), in place."""
    a, b = parts["lora_A"], parts["lora_B"]
    delta = lora_delta(module, a, b, scaling, released_name)
    if a.shape[0] != rank * (1 if isinstance(module, nn.Linear) else module.kernel_size[0]):
        raise ReleasedCheckpointError(f"{released_name}: LoRA rank {a.shape[0]} does not match rank {rank}")
    module.weight.copy_((module.weight.float() + delta).to(module.weight.dtype))
    if isinstance(module, nn.Linear):
        report.merged_linear += 1
    else:
        report.merged_conv += 1
    if "bias" in parts:
        if module.bias is None or module.bias.shape != parts["bias"].shape:
            raise ReleasedCheckpointError(
                f"{released_name}.bias {tuple(parts['bias'].shape)} does not fit "
                f"{None if module.bias is None else tuple(module.bias.shape)}"
            )
        module.bias.copy_(parts["bias"].to(module.bias.dtype))
        report.replaced_biases += 1


def _copy_tokens_and_stitching_layer(decoder: StitchedDecoder, checkpoint: dict, source: str) -> None:
    """Copies the released DINOv2 tokens and stitching conv into ``decoder`` (shapes checked), in place."""
    dino = decoder.network.aggregator.patch_embed
    for key in TOKEN_KEYS:
        target = getattr(dino, key)
        value = checkpoint[key]
        if target is None or not isinstance(value, Tensor) or value.shape != target.shape:
            raise ReleasedCheckpointError(
                f"{source}: {key} {tuple(getattr(value, 'shape', ()))} does not fit "
                f"{None if target is None else tuple(target.shape)}"
            )
        target.copy_(value.to(target.dtype))
    layer_state = checkpoint["stitching_layer"]
    own = decoder.stitching_layer.state_dict()
    if not isinstance(layer_state, dict) or set(layer_state) != set(own):
        raise ReleasedCheckpointError(f"{source}: stitching_layer must hold exactly {sorted(own)}")
    for key, value in layer_state.items():
        if value.shape != own[key].shape:
            raise ReleasedCheckpointError(
                f"{source}: stitching_layer.{key} {tuple(value.shape)} does not fit {tuple(own[key].shape)}"
            )
        getattr(decoder.stitching_layer, key).copy_(value.to(own[key].dtype))


def apply_released_state(
    decoder: StitchedDecoder,
    checkpoint: dict,
    rank: int = RELEASED_RANK,
    alpha: float = RELEASED_ALPHA,
    source: str = "<released checkpoint>",
) -> ReleasedLoadReport:
    """Merges a released-format checkpoint dict into ``decoder`` (in place); see the module doc."""
    if not isinstance(checkpoint, dict):
        raise ReleasedCheckpointError(f"{source} is not a dict")
    report = ReleasedLoadReport(source=source)
    missing_top = [k for k in ("lora", "stitching_layer", *TOKEN_KEYS) if k not in checkpoint]
    if missing_top:
        raise ReleasedCheckpointError(f"{source} lacks {missing_top}; expected the anysplat_stitched.pth layout")
    report.unmapped_keys += [k for k in checkpoint if k not in ("lora", "stitching_layer", *TOKEN_KEYS)]
    scaling = alpha / rank
    removed = decoder.removed_dino_blocks
    modules = dict(decoder.named_modules())
    targets = set(lora_target_names(decoder))
    grouped = _group_lora(checkpoint["lora"], report)

    done = set()
    with torch.no_grad():
        for released_name, parts in grouped.items():
            ours = released_to_ours(released_name, removed)
            module = modules.get(ours)
            if ours not in targets or "lora_A" not in parts or "lora_B" not in parts:
                report.unmapped_keys += [f"lora.{released_name}.{p}" for p in parts]
                continue
            _merge_lora_layer(module, released_name, parts, rank, scaling, report)
            done.add(ours)

        missing = sorted(targets - done)
        if missing:
            shown = ", ".join(ours_to_released(n, removed) for n in missing[:_LIST_LIMIT])
            raise ReleasedCheckpointError(f"{source}: no LoRA for {len(missing)} layers of the stitched model: {shown}")

        _copy_tokens_and_stitching_layer(decoder, checkpoint, source)

    decoder.lora_info = {"rank": rank, "alpha": alpha, "dropout": 0.0, "merged": True, "source": source}
    if report.unmapped_keys:
        log.warning(report.summary())
    else:
        log.info(report.summary())
    return report


def released_spec_for(checkpoint: dict, source: str = "<released checkpoint>") -> str:
    """The released stitching conv (k 5x3x3, stride 1x2x2, padding 2x1x1) with the checkpoint's width."""
    layer = checkpoint.get("stitching_layer") if isinstance(checkpoint, dict) else None
    weight = layer.get("weight") if isinstance(layer, dict) else None
    if not isinstance(weight, Tensor) or weight.ndim != 5:
        raise ReleasedCheckpointError(f"{source}: stitching_layer.weight must be a (out, C, 5, 3, 3) tensor")
    return RELEASED_SPEC.replace("_o1024_", f"_o{int(weight.shape[0])}_")


def load_released_stitched(
    checkpoint: Union[str, Path, dict],
    base_model: Union[str, Path, AnySplat],
    *,
    cut_stage: str = RELEASED_CUT_STAGE,
    spec: Optional[str] = RELEASED_SPEC,
    vae: VAEReference = WAN_VAE,
    rank: int = RELEASED_RANK,
    alpha: float = RELEASED_ALPHA,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[StitchedDecoder, ReleasedLoadReport]:
    """The released stitched decoder, LoRA merged; returns (decoder in eval mode, report).

    A converter of a foreign format (the official ``anysplat_stitched.pth`` on a base AnySplat), not a
    loader of ours: the ``StitchedDecoder`` it returns follows the contract (``save_pretrained`` /
    ``StitchedDecoder.from_pretrained``).

    Args:
        checkpoint: path of ``anysplat_stitched.pth`` (read with ``torch.load(weights_only=True)``) or the
            loaded dict.
        base_model: the base AnySplat (``lhjiang/anysplat`` folder/hub id, or a built ``AnySplat``, which
            is consumed: it is cut and modified in place).
        cut_stage, spec, vae: the released stitch (DINOv2 blocks 0-1 removed, Wan 2.1 latent, 5x3x3 conv).
            ``spec=None`` takes the released conv with the output width of the checkpoint's stitching
            layer (``released_spec_for``), so that smaller AnySplat configurations load the same way.
        device, dtype: where the returned decoder lives and its parameters' dtype (use
            ``StitchedDecoder.set_precision`` for the official mixed policy).

    Raises:
        ReleasedCheckpointError: the file is missing, unreadable or does not fit the base model.
        engine.models.checkpoint.CheckpointError: the base model cannot be found or loaded.
        rank, alpha: the LoRA settings (scaling alpha/rank).
    """
    source = "<dict>"
    if not isinstance(checkpoint, dict):
        source = str(checkpoint)
        path = Path(checkpoint)
        if not path.is_file():
            raise ReleasedCheckpointError(f"released checkpoint not found: {path}")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ReleasedCheckpointError(f"cannot read {path} with torch.load(weights_only=True): {error}") from error
    if isinstance(base_model, AnySplat):
        network = base_model
    else:
        network, _ = load_model(base_model, model_type="anysplat", device=device)
    if aggregator_prefix(network) != "encoder.aggregator":
        raise ReleasedCheckpointError("the released stitched checkpoint is for AnySplat")
    if spec is None:
        spec = released_spec_for(checkpoint, source)
    param = next(network.parameters())
    layer = StitchingLayer(spec, vae.latent_channels, dtype=param.dtype, device=param.device)
    decoder = StitchedDecoder(network, cut_stage, layer, vae)
    report = apply_released_state(decoder, checkpoint, rank, alpha, source)
    decoder.to(device=device, dtype=dtype)
    return decoder.eval(), report
