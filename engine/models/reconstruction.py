"""What VGGT and AnySplat share: the input contract, precision, activation access, checkpointing.

Input contract
--------------
``images``: float RGB in [0, 1] (not ImageNet-normalised: the aggregator does that), shape (S, 3, H, W)
or (B, S, 3, H, W), H and W multiples of the patch size (14), S >= ``config.min_views``, views ordered
like a video with the reference view first (view 0 defines the world frame).

Precision
---------
The official policy (AnySplat ``EncoderAnySplat``, VIST3A ``AnySplatStitched``): the aggregator's weights
are bf16 and it runs under bf16 autocast on images cast to bf16; the camera, depth and Gaussian heads and
every post-processing step run in float32 with autocast off. Two ways to get it:

* default (``precision`` None): on CUDA the aggregator runs under ``autocast_dtype`` autocast (bf16;
  None disables it) with float32 weights, the heads in float32; on the CPU everything is float32;
* ``set_precision(dtype)``: the explicit policy on any device. bf16/fp16: the aggregator's parameters
  are cast to ``dtype`` (half the memory) and it runs under ``dtype`` autocast on the images cast to
  ``dtype``; the heads keep float32 parameters and run with autocast off. float32: everything float32,
  no autocast (the exact reference).

Inference should use ``predict`` (eval mode, ``torch.no_grad``); ``forward`` keeps gradients for
training, where ``set_gradient_checkpointing`` trades compute for memory per block.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Optional

import torch
from torch import Tensor, nn

from engine.models.aggregator import Aggregator
from engine.models.checkpoint import instantiate, read_checkpoint, save_checkpoint
from engine.models.layers import Block

# Frames slightly outside [0, 1] (resampling overshoot) are tolerated, clearly wrong ranges are not.
_RANGE_TOLERANCE = 1e-3

_META_AUTOCAST = threading.local()


def meta_autocast_dtype() -> Optional[torch.dtype]:
    """The autocast dtype a meta-device dry run is emulating right now (None outside such a region).

    The meta device has no autocast; where the real run would enter autocast, a meta run records it
    here so that a dry-run dtype checker (``engine.testing.dry_run``) knows which mixed-dtype calls autocast
    would have reconciled.
    """
    return getattr(_META_AUTOCAST, "dtype", None)


@contextlib.contextmanager
def _emulated_autocast(dtype: torch.dtype):
    previous = meta_autocast_dtype()
    _META_AUTOCAST.dtype = dtype
    try:
        yield
    finally:
        _META_AUTOCAST.dtype = previous


class InputError(ValueError):
    """The frames given to a reconstruction network break its input contract."""


class ReconstructionModel(nn.Module):
    """Base of ``VGGT`` and ``AnySplat``.

    Subclasses provide ``config`` (with ``min_views``), an ``aggregator`` (attribute or property),
    ``_head_layers`` and ``_run_heads``.
    """

    config_class: type
    autocast_dtype: Optional[torch.dtype] = torch.bfloat16
    # None: the default policy (see the module doc); a dtype: set by ``set_precision``.
    precision: Optional[torch.dtype] = None
    aggregator: Aggregator

    def _run_heads(self, taps: list[Optional[Tensor]], images: Tensor, frames_chunk_size: Optional[int]):
        raise NotImplementedError

    def _head_layers(self) -> set[int]:
        """Aggregator layers the heads read (the camera head always reads the last)."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------------------
    def check_images(self, images: Tensor) -> Tensor:
        """Validates the input contract; returns the images as (B, S, 3, H, W)."""
        if not isinstance(images, Tensor) or not images.is_floating_point():
            raise InputError("images must be a floating-point tensor with values in [0, 1]")
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5 or images.shape[2] != 3:
            raise InputError(f"images must be (S, 3, H, W) or (B, S, 3, H, W) RGB, got {tuple(images.shape)}")
        _, views, _, height, width = images.shape
        patch = self.aggregator.patch_size
        if height % patch or width % patch:
            raise InputError(
                f"image size {height}x{width} (HxW) is not a multiple of the patch size {patch}; "
                f"resize or crop to e.g. {height // patch * patch}x{width // patch * patch}"
            )
        if views < self.config.min_views:
            raise InputError(f"{type(self).__name__} needs at least {self.config.min_views} views, got {views}")
        if images.is_meta:  # a dry run on the meta device: no values to check
            return images
        low, high = float(images.detach().min()), float(images.detach().max())
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise InputError(f"images must be in [0, 1], got values in [{low:.3g}, {high:.3g}]")
        return images

    def set_precision(self, dtype: torch.dtype) -> ReconstructionModel:
        """Applies the official precision policy for ``dtype`` (see the module doc); returns self.

        Raises ValueError for a dtype other than float32, bfloat16 and float16.
        """
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"precision must be float32, bfloat16 or float16, got {dtype}")
        self.float()
        if dtype != torch.float32:
            self.aggregator.to(dtype)
        self.precision = dtype
        return self

    def compute_dtype(self, device: torch.device) -> Optional[torch.dtype]:
        """The aggregator's autocast dtype on ``device`` (None: plain float32; meta counts as CUDA)."""
        if self.precision is not None:
            return None if self.precision == torch.float32 else self.precision
        return self.autocast_dtype if torch.device(device).type in ("cuda", "meta") else None

    def _autocast(self, images: Tensor):
        dtype = self.compute_dtype(images.device)
        if dtype is None:
            return contextlib.nullcontext()
        if images.is_meta:
            return _emulated_autocast(dtype)
        return torch.autocast(images.device.type, dtype=dtype)

    def _aggregator_input(self, images: Tensor) -> Tensor:
        """The images as the aggregator reads them: cast to the compute dtype (official: ``image.to(bf16)``)."""
        dtype = self.compute_dtype(images.device)
        return images if dtype is None else images.to(dtype)

    def _heads_in_float32(self, images: Tensor):
        if images.is_meta:
            return _emulated_autocast(None)
        if images.device.type != "cuda" and self.compute_dtype(images.device) is None:
            return contextlib.nullcontext()
        return torch.autocast(images.device.type, enabled=False)

    def _finish(self, taps: list[Optional[Tensor]], images: Tensor, frames_chunk_size: Optional[int]):
        with self._heads_in_float32(images):
            taps = [None if t is None else t.float() for t in taps]
            return self._run_heads(taps, images.float(), frames_chunk_size)

    def forward(self, images: Tensor, frames_chunk_size: Optional[int] = 8):
        """Frames (see the module doc) -> prediction (``VGGTPrediction`` / ``AnySplatPrediction``).

        ``frames_chunk_size``: frames per DPT-head chunk (memory only; None = all at once).
        """
        images = self.check_images(images)
        with self._autocast(images):
            taps, _ = self.aggregator(self._aggregator_input(images), intermediate_layer_idx=self._head_layers())
        return self._finish(taps, images, frames_chunk_size)

    @torch.no_grad()
    def predict(self, images: Tensor, frames_chunk_size: Optional[int] = 8):
        """Inference: eval mode and no gradients, otherwise as ``forward``."""
        was_training = self.training
        self.eval()
        try:
            return self(images, frames_chunk_size)
        finally:
            self.train(was_training)

    # --------------------------------------------------------------------------------------------------
    # Activation access for stitching
    def stage_names(self) -> list[str]:
        """Names of every stage of the patch embedding and the aggregator, in execution order."""
        return self.aggregator.stage_names()

    def trace(self, images: Tensor, stages: Optional[Iterable[str]] = None) -> dict[str, Tensor]:
        """Outputs of the named patch-embedding / aggregator stages (all if None) without running the heads.

        Stops after the last requested stage. Layouts: see ``engine.models.aggregator``.
        """
        images = self.check_images(images)
        with self._autocast(images):
            return self.aggregator.trace(self._aggregator_input(images), stages)

    def forward_from(self, stage: str, tokens: Tensor, images: Tensor, frames_chunk_size: Optional[int] = 8):
        """Runs the network after ``stage`` given that stage's output ``tokens``, heads included.

        ``images`` (B, S, 3, H, W) in [0, 1] are still needed: they fix S and the image size, and
        AnySplat's Gaussian head reads the RGB frames.
        """
        images = self.check_images(images)
        with self._autocast(images):
            taps, _ = self.aggregator.forward_from(
                stage, tokens, images.shape[1], tuple(images.shape[-2:]), self._head_layers()
            )
        return self._finish(taps, images, frames_chunk_size)

    # --------------------------------------------------------------------------------------------------
    def set_gradient_checkpointing(self, enabled: bool = True, blocks: Optional[Iterable[str]] = None) -> list[str]:
        """Turns activation recomputation on or off for transformer blocks; returns the names changed.

        ``blocks``: module names as in ``named_modules()`` (e.g. ``"aggregator.frame_blocks.3"``), or None
        for every block of the model.
        """
        all_blocks = {name: m for name, m in self.named_modules() if isinstance(m, Block)}
        names = list(all_blocks) if blocks is None else list(blocks)
        unknown = [n for n in names if n not in all_blocks]
        if unknown:
            raise KeyError(f"not transformer blocks of this model: {unknown[:5]} ({len(unknown)} in all)")
        for name in names:
            all_blocks[name].gradient_checkpointing = enabled
        return names

    # --------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory) -> None:
        """Writes ``config.json`` and ``model.safetensors`` (loadable with ``from_pretrained``)."""
        save_checkpoint(self, directory)

    @classmethod
    def from_pretrained(cls, path_or_id, device="cpu"):
        """Loads a checkpoint of this model type, strictly (see ``engine.models.checkpoint``)."""
        config, state_dict, weights_path = read_checkpoint(path_or_id, model_type=cls.config_class().model_type)
        model, _ = instantiate(cls, config, state_dict, str(weights_path), device)
        return model
