"""DINOv2 vision transformer with register tokens: the patch embedding of VGGT's aggregator.

Official computation (``DinoVisionTransformer`` as built by VGGT's aggregator, ViT-L/14 + 4 registers):

1. ``patch_embed.proj``: Conv2d(3, C, patch, stride patch) -> (B, h*w, C) tokens, row-major.
2. Prepend ``cls_token``; add ``pos_embed`` (cls entry + a square grid) resized to (h, w) with bicubic,
   antialiased interpolation by explicit output size, computed in float32 and cast back. The resize is
   skipped only when the token count equals the grid's and the image is square.
3. Insert ``register_tokens`` after cls (they get no positional embedding).
4. ``depth`` pre-norm blocks (LayerNorm eps 1e-6, no qk-norm, no RoPE, LayerScale), final ``norm``.
5. Output = normalised patch tokens (cls and registers dropped).

``mask_token`` is kept only because it is in the checkpoints; no code path uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.config import PatchEmbedConfig
from engine.models.layers import Block


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p * W/p, C)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with registers. Keys: cls_token, pos_embed, register_tokens, mask_token, patch_embed.proj,
    blocks.{i}, norm (in this order, as the official module)."""

    def __init__(self, config: PatchEmbedConfig) -> None:
        super().__init__()
        self.config = config
        c = config.embed_dim
        self.num_register_tokens = config.num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.pos_grid**2, c))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, c)) if config.num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, c), requires_grad=False)
        self.patch_embed = PatchEmbed(config.patch_size, c)
        self.blocks = nn.ModuleList(
            Block(
                c,
                config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                proj_bias=config.proj_bias,
                ffn_bias=config.ffn_bias,
                init_values=config.init_values,
                norm_eps=config.norm_eps,
            )
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(c, eps=config.norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)

    @property
    def num_prefix_tokens(self) -> int:
        """cls + registers, in front of the patch tokens in every block's input and output."""
        return 1 + self.num_register_tokens

    def interpolate_pos_encoding(self, num_patches: int, height: int, width: int, dtype: torch.dtype) -> Tensor:
        """Positional embedding (1, 1 + h*w, C) for an image of height x width pixels."""
        grid = self.config.pos_grid
        if num_patches == grid * grid and height == width:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        dim = patch_pos.shape[-1]
        h, w = height // self.config.patch_size, width // self.config.patch_size
        offset = self.config.interpolate_offset
        if offset:
            size_kwargs = {"scale_factor": ((h + offset) / grid, (w + offset) / grid)}
        else:
            size_kwargs = {"size": (h, w)}
        patch_pos = F.interpolate(
            patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2),
            mode="bicubic",
            antialias=self.config.interpolate_antialias,
            **size_kwargs,
        )
        if tuple(patch_pos.shape[-2:]) != (h, w):
            raise RuntimeError(f"positional-embedding resize gave {tuple(patch_pos.shape[-2:])}, expected {(h, w)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        return torch.cat([cls_pos, patch_pos], dim=1).to(dtype)

    def add_prefix_tokens(self, patch_tokens: Tensor, height: int, width: int) -> Tensor:
        """Patch tokens (N, h*w, C) -> block input (N, 1 + R + h*w, C): cls, positions, registers.

        This is step 2-3 above; the stitched decoder calls it on tokens from its stitching layer.
        """
        x = torch.cat([self.cls_token.expand(patch_tokens.shape[0], -1, -1), patch_tokens], dim=1)
        x = x + self.interpolate_pos_encoding(patch_tokens.shape[1], height, width, x.dtype)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        return x

    def prepare_tokens(self, images: Tensor) -> Tensor:
        """Normalised images (N, 3, H, W) -> input of block 0 (N, 1 + R + h*w, C)."""
        _, _, h, w = images.shape
        return self.add_prefix_tokens(self.patch_embed(images), h, w)

    def run_blocks(self, x: Tensor, start: int = 0, stop: int | None = None, collect: bool = False):
        """Runs blocks[start:stop] on x (N, 1 + R + h*w, C).

        Returns the final tokens, or (final tokens, list of every block's output) with ``collect``.
        """
        outputs = []
        for block in self.blocks[start:stop]:
            x = block(x)
            if collect:
                outputs.append(x)
        return (x, outputs) if collect else x

    def patch_tokens_from(self, x: Tensor) -> Tensor:
        """Output of the last block (N, 1 + R + h*w, C) -> normalised patch tokens (N, h*w, C)."""
        return self.norm(x)[:, self.num_prefix_tokens :]

    def forward(self, images: Tensor) -> Tensor:
        """ImageNet-normalised images (N, 3, H, W) -> normalised patch tokens (N, H/p * W/p, C)."""
        return self.patch_tokens_from(self.run_blocks(self.prepare_tokens(images)))
