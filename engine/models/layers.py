"""Transformer building blocks shared by DINOv2, the aggregator and the camera head.

The attribute names (``norm1``, ``attn.qkv``, ``attn.q_norm``, ``ls1.gamma``, ``mlp.fc1`` ...) reproduce
the official VGGT / DINOv2 state-dict keys, so the released checkpoints load unchanged.

Numerics follow the official code: pre-norm residual blocks, exact (erf) GELU, LayerScale as a plain
per-channel product, attention through ``scaled_dot_product_attention`` with the default 1/sqrt(head_dim)
scale, optional LayerNorm on queries and keys (eps 1e-5, affine) applied *before* the 2D rotary embedding.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class LayerScale(nn.Module):
    """Per-channel learnable scale ``x * gamma`` (gamma initialised to ``init_values``)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2, as the official ``Mlp`` (dropout 0 everywhere)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None, bias=True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RotaryPositionEmbedding2D(nn.Module):
    """2D rotary position embedding of VGGT (no parameters).

    The head dimension is split in two halves: the first half is rotated by the token's row (y), the
    second half by its column (x). Each half of size d uses ``inv_freq_j = frequency^(-2j/d)`` for
    j < d/2 and the rotate-half ("NeoX") layout: cos/sin tables are ``cat(angles, angles)`` and
    ``x' = x*cos + cat(-x[d/2:], x[:d/2])*sin``. Angles are computed in float32 and cast to the
    tokens' dtype before taking cos/sin, as the official code does.
    """

    def __init__(self, frequency: float = 100.0) -> None:
        super().__init__()
        self.frequency = float(frequency)

    def _tables(self, dim: int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos/sin tables (length, dim) for positions 0..length-1 of a half of size ``dim``."""
        exponents = torch.arange(0, dim, 2, device=device).float() / dim
        inv_freq = 1.0 / (self.frequency**exponents)
        positions = torch.arange(length, device=device, dtype=inv_freq.dtype)
        angles = torch.outer(positions, inv_freq).to(dtype)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def _rotate_half(x: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def _rotate(self, x: Tensor, positions: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        cos = F.embedding(positions, cos)[:, None]  # (B, 1, N, d)
        sin = F.embedding(positions, sin)[:, None]
        return x * cos + self._rotate_half(x) * sin

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens (B, heads, N, head_dim) with head_dim % 4 == 0; positions (B, N, 2) integer (y, x)."""
        if tokens.shape[-1] % 4 != 0:
            raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {tokens.shape[-1]}")
        if positions.dim() != 3 or positions.shape[-1] != 2:
            raise ValueError(f"RoPE positions must be (B, N, 2), got {tuple(positions.shape)}")
        half = tokens.shape[-1] // 2
        # positions of a grid of N tokens are < N + 1: the bound stands in for the maximum on meta (dry run)
        length = positions.shape[-2] + 1 if positions.is_meta else int(positions.max()) + 1
        cos, sin = self._tables(half, length, tokens.device, tokens.dtype)
        rows, cols = tokens.chunk(2, dim=-1)
        rows = self._rotate(rows, positions[..., 0], cos, sin)
        cols = self._rotate(cols, positions[..., 1], cos, sin)
        return torch.cat((rows, cols), dim=-1)


def patch_positions(batch: int, grid_h: int, grid_w: int, num_special: int, device: torch.device) -> Tensor:
    """RoPE positions (batch, num_special + grid_h*grid_w, 2) as the official ``PositionGetter``.

    Patch tokens get their integer (row, col) in row-major order, shifted by +1 so that (0, 0) is left for
    the ``num_special`` leading tokens (camera and registers), which all get position (0, 0).
    """
    rows = torch.arange(grid_h, device=device)
    cols = torch.arange(grid_w, device=device)
    grid = torch.cartesian_prod(rows, cols).view(1, grid_h * grid_w, 2) + 1
    special = torch.zeros(1, num_special, 2, dtype=grid.dtype, device=device)
    return torch.cat([special, grid], dim=1).expand(batch, -1, -1)


class Attention(nn.Module):
    """Multi-head self-attention with optional qk-LayerNorm and 2D RoPE, through SDPA.

    Keys: ``qkv`` (3C, C), ``q_norm``/``k_norm`` (head_dim, only with ``qk_norm``), ``proj`` (C, C).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        rope: Optional[RotaryPositionEmbedding2D] = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        # Shared by every block of the aggregator; it has no state, so it adds no checkpoint keys.
        self.rope = rope

    def forward(self, x: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        """x (B, N, C); pos (B, N, 2) integer (y, x) positions, required iff the layer uses RoPE."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            if pos is None:
                raise ValueError("this attention layer uses RoPE and needs token positions")
            q, k = self.rope(q, pos), self.rope(k, pos)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x))); x + ls2(mlp(norm2(x)))``.

    ``init_values`` None or 0 means no LayerScale (no ``ls*.gamma`` keys), as in the official code.
    Set ``gradient_checkpointing = True`` to recompute this block's activations in the backward pass
    (only while training with gradients enabled).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: Optional[float] = None,
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        rope: Optional[RotaryPositionEmbedding2D] = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.gradient_checkpointing = False

    def _forward(self, x: Tensor, pos: Optional[Tensor]) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos))
        return x + self.ls2(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        """x (B, N, C), pos (B, N, 2) or None -> (B, N, C)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, pos, use_reentrant=False)
        return self._forward(x, pos)
