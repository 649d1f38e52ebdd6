"""VGGT's aggregator: DINOv2 patch tokens, then alternating frame-wise and global attention.

Official computation (``vggt/models/aggregator.py``), for images (B, S, 3, H, W) in [0, 1]:

1. ImageNet normalisation ``(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]``; DINOv2 gives patch
   tokens (B*S, h*w, C) with h = H/p, w = W/p.
2. Tokens per frame = [camera token, R register tokens, h*w patch tokens] (P' = 1 + R + h*w). The
   learned ``camera_token`` (1, 2, 1, C) and ``register_token`` (1, 2, R, C) have two slots: slot 0 for
   frame 0 (the reference view that defines the world frame), slot 1 for every other frame.
3. RoPE positions: patch tokens get (row+1, col+1), the special tokens (0, 0); the same per-frame
   positions are used in the global blocks (RoPE carries no frame index).
4. Layer i = ``frame_blocks[i]`` on (B*S, P', C), then ``global_blocks[i]`` on (B, S*P', C) (for the
   default ``aa_order`` and ``aa_block_size`` 1). Tap i = cat(frame output i, global output i) ->
   (B, S, P', 2C).

Activation access for stitching
-------------------------------
Every intermediate result is a named *stage*, in execution order (``stage_names()``):

* ``"patch_embed.patch_embed"`` - patch projections (B*S, h*w, C), before cls/positions/registers;
* ``"patch_embed.blocks.{i}"`` - output of DINOv2 block i, (B*S, 1 + R_dino + h*w, C) including the
  cls and register tokens in front (``patch_embed.num_prefix_tokens`` of them);
* ``"frame_blocks.{i}"`` / ``"global_blocks.{i}"`` - aggregator block outputs, (B, S, P', C).

``trace(images, stages)`` returns the requested stages' outputs and stops after the last one (heads are
never run). ``forward_from(stage, tokens, ...)`` runs everything *after* ``stage`` given that stage's
output, and returns the taps like ``forward``. To feed tokens in place of the patch projections while
skipping DINOv2 blocks 0..k-1 (the released VIST3A stitch), call
``patch_embed.add_prefix_tokens(tokens, H, W)`` and pass the result as the output of
``"patch_embed.blocks.{k-1}"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import torch
from torch import Tensor, nn

from engine.models.config import AggregatorConfig
from engine.models.dinov2 import DinoVisionTransformer
from engine.models.layers import Block, RotaryPositionEmbedding2D, patch_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def slot_tokens(tokens: Tensor, batch: int, views: int) -> Tensor:
    """(1, 2, n, C) learned tokens -> (batch*views, n, C): slot 0 for view 0, slot 1 for the others."""
    first = tokens[:, :1].expand(batch, 1, *tokens.shape[2:])
    others = tokens[:, 1:].expand(batch, views - 1, *tokens.shape[2:])
    return torch.cat([first, others], dim=1).reshape(batch * views, *tokens.shape[2:])


class Aggregator(nn.Module):
    """Alternating-attention backbone. Keys: camera_token, register_token, patch_embed.*,
    frame_blocks.{i}.*, global_blocks.{i}.* (in this order, as the official module)."""

    # dtype the ImageNet constants are rounded to before use (None: exact float32), see normalization_constants
    constants_dtype: Optional[torch.dtype] = None

    def __init__(self, config: AggregatorConfig) -> None:
        super().__init__()
        if config.patch_embed.depth < 1:
            raise ValueError("the DINOv2 patch embedding needs at least one block")
        self.config = config
        c = config.embed_dim
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config.num_register_tokens, c))
        self.patch_embed = DinoVisionTransformer(config.patch_embed)
        self.rope = RotaryPositionEmbedding2D(config.rope_freq) if config.rope_freq > 0 else None

        def make_block() -> Block:
            return Block(
                c,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                proj_bias=config.proj_bias,
                ffn_bias=config.ffn_bias,
                init_values=config.init_values,
                norm_eps=config.norm_eps,
                qk_norm=config.qk_norm,
                rope=self.rope,
            )

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(config.depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(config.depth))
        if not self.camera_token.is_meta:
            nn.init.normal_(self.camera_token, std=1e-6)
            nn.init.normal_(self.register_token, std=1e-6)

        plan = [("patch_embed.patch_embed", "embed", 0)]
        plan += [(f"patch_embed.blocks.{i}", "dino", i) for i in range(config.patch_embed.depth)]
        for group in range(config.depth // config.aa_block_size):
            for kind in config.aa_order:
                for i in range(group * config.aa_block_size, (group + 1) * config.aa_block_size):
                    plan.append((f"{kind}_blocks.{i}", kind, i))
        self._plan = plan
        self._stage_index = {name: k for k, (name, _, _) in enumerate(plan)}

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def patch_start_idx(self) -> int:
        return self.config.patch_start_idx

    @property
    def depth(self) -> int:
        return self.config.depth

    def stage_names(self) -> list[str]:
        """Every stage whose output ``trace`` can return, in execution order."""
        return [name for name, _, _ in self._plan]

    # ----------------------------------------------------------------------------------------------------
    def forward(
        self, images: Tensor, intermediate_layer_idx: Optional[Iterable[int]] = None
    ) -> tuple[list[Optional[Tensor]], int]:
        """images (B, S, 3, H, W) in [0, 1] -> (taps, patch_start_idx).

        ``taps`` has one entry per layer (length ``depth``): (B, S, P', 2C) for the layers in
        ``intermediate_layer_idx`` plus the last layer (the camera head reads it), None for the others.
        With ``intermediate_layer_idx=None`` every layer is returned, exactly as the official VGGT.
        """
        b, s, h, w = self._check_images(images)
        x = self.normalize(images).reshape(b * s, 3, h, w)
        taps, _ = self._execute(x, 0, b, s, h, w, self._tap_set(intermediate_layer_idx), set(), len(self._plan))
        return taps, self.patch_start_idx

    def normalization_constants(self, dtype: torch.dtype, device=None) -> tuple[Tensor, Tensor]:
        """ImageNet (mean, std), each (1, 1, 3, 1, 1), as this model's official build holds them.

        With ``constants_dtype`` set (AnySplat: bfloat16) the float32 constants are first rounded to that
        dtype, as the official AnySplat's ``aggregator.to(torch.bfloat16)`` rounds its mean/std buffers
        (so its released weights were trained and run with mean ≈ [0.4844, 0.4551, 0.4062] and std ≈
        [0.2285, 0.2236, 0.2246]); VGGT keeps the exact values.
        """
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
        if self.constants_dtype is not None:
            mean, std = mean.to(self.constants_dtype), std.to(self.constants_dtype)
        return (
            mean.to(device=device, dtype=dtype).view(1, 1, 3, 1, 1),
            std.to(device=device, dtype=dtype).view(1, 1, 3, 1, 1),
        )

    def normalize(self, images: Tensor) -> Tensor:
        """[0, 1] RGB (B, S, 3, H, W) -> ImageNet-normalised, in the images' dtype.

        The constants (``normalization_constants``) are made per call rather than kept as buffers, so
        that a model built on the meta device and filled with ``load_state_dict(assign=True)`` has no
        uninitialised state.
        """
        mean, std = self.normalization_constants(images.dtype, images.device)
        return (images - mean) / std

    def trace(self, images: Tensor, stages: Optional[Iterable[str]] = None) -> dict[str, Tensor]:
        """Outputs of the named stages (all if None) for images (B, S, 3, H, W) in [0, 1].

        Execution stops after the last requested stage; nothing else is kept. Layouts: see the module doc.
        """
        names = self.stage_names() if stages is None else list(stages)
        unknown = [n for n in names if n not in self._stage_index]
        if unknown:
            raise KeyError(f"unknown aggregator stages {unknown}; valid: see Aggregator.stage_names()")
        if not names:
            return {}
        stop = max(self._stage_index[n] for n in names) + 1
        b, s, h, w = self._check_images(images)
        x = self.normalize(images).reshape(b * s, 3, h, w)
        _, records = self._execute(x, 0, b, s, h, w, set(), set(names), stop)
        return records

    def forward_from(
        self,
        stage: str,
        tokens: Tensor,
        num_views: int,
        image_size: tuple[int, int],
        intermediate_layer_idx: Optional[Iterable[int]] = None,
    ) -> tuple[list[Optional[Tensor]], int]:
        """Runs every stage after ``stage``, given that stage's output ``tokens`` (layout as in ``trace``).

        ``num_views`` is S and ``image_size`` the (H, W) of the frames the tokens stand for (it fixes the
        patch grid and the RoPE positions). Returns (taps, patch_start_idx) like ``forward``; a tap whose
        frame-block output lies before the starting point is None (asking for it is an error).
        """
        if stage not in self._stage_index:
            raise KeyError(f"unknown aggregator stage {stage!r}; valid: see Aggregator.stage_names()")
        h, w = image_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        start = self._stage_index[stage] + 1
        kind = self._plan[start - 1][1]
        views = num_views
        if kind in ("frame", "global"):
            if tokens.dim() != 4 or tokens.shape[1] != views:
                raise ValueError(f"tokens for {stage} must be (B, {views}, P, C), got {tuple(tokens.shape)}")
            batch = tokens.shape[0]
        else:
            if tokens.dim() != 3 or tokens.shape[0] % views:
                raise ValueError(f"tokens for {stage} must be (B*{views}, N, C), got {tuple(tokens.shape)}")
            batch = tokens.shape[0] // views
        taps = self._tap_set(intermediate_layer_idx)
        out, _ = self._execute(tokens, start, batch, views, h, w, taps, set(), len(self._plan))
        missing = sorted(i for i in taps if out[i] is None)
        if missing:
            raise ValueError(f"taps {missing} need block outputs from before stage {stage!r}; they cannot be computed")
        return out, self.patch_start_idx

    # ----------------------------------------------------------------------------------------------------
    def _check_images(self, images: Tensor) -> tuple[int, int, int, int]:
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (B, S, 3, H, W), got {tuple(images.shape)}")
        b, s, _, h, w = images.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return b, s, h, w

    def _tap_set(self, intermediate_layer_idx: Optional[Iterable[int]]) -> set[int]:
        if intermediate_layer_idx is None:
            return set(range(self.depth))
        taps = {int(i) % self.depth for i in intermediate_layer_idx}
        taps.add(self.depth - 1)
        return taps

    def _execute(
        self,
        x: Tensor,
        start: int,
        batch: int,
        views: int,
        height: int,
        width: int,
        taps: set[int],
        record: set[str],
        stop: int,
    ) -> tuple[list[Optional[Tensor]], dict[str, Tensor]]:
        """Runs plan stages start..stop-1 on x, the output of stage start-1 (normalised images if 0)."""
        dino = self.patch_embed
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        space = "pixels" if start == 0 else {"embed": "patch", "dino": "dino"}.get(self._plan[start - 1][1], "agg")
        pos_frame = pos_global = None
        outputs: dict[str, dict[int, Tensor]] = {"frame": {}, "global": {}}
        if space == "agg":
            _, prev_kind, prev_layer = self._plan[start - 1]
            outputs[prev_kind][prev_layer] = x
        tap_list: list[Optional[Tensor]] = [None] * self.depth
        records: dict[str, Tensor] = {}
        for name, kind, i in self._plan[start:stop]:
            if kind == "embed":
                x = dino.patch_embed(x)
                space = "patch"
            elif kind == "dino":
                if space == "patch":
                    x = dino.add_prefix_tokens(x, height, width)
                x = dino.blocks[i](x)
                space = "dino"
            else:
                if space == "dino":
                    patch = dino.patch_tokens_from(x)
                    camera = slot_tokens(self.camera_token, batch, views)
                    registers = slot_tokens(self.register_token, batch, views)
                    x = torch.cat([camera, registers, patch], dim=1)
                    x = x.reshape(batch, views, *x.shape[1:])
                    space = "agg"
                if pos_frame is None and self.rope is not None:
                    pos_frame = patch_positions(batch * views, grid_h, grid_w, self.patch_start_idx, x.device)
                    pos_global = pos_frame.reshape(batch, -1, 2)
                b, s, p, c = x.shape
                if kind == "frame":
                    x = self.frame_blocks[i](x.reshape(b * s, p, c), pos=pos_frame).reshape(b, s, p, c)
                else:
                    x = self.global_blocks[i](x.reshape(b, s * p, c), pos=pos_global).reshape(b, s, p, c)
                outputs[kind][i] = x
                if i in outputs["frame"] and i in outputs["global"]:
                    frame, global_ = outputs["frame"].pop(i), outputs["global"].pop(i)
                    if i in taps:
                        tap_list[i] = torch.cat([frame, global_], dim=-1)
            if name in record:
                records[name] = x
        return tap_list, records
