"""DPT heads of the 3D decoders: VGGT's ``DPTHead`` and AnySplat's Gaussian-parameter head.

Both turn the aggregator's multi-layer tokens into dense per-pixel maps. They load the official
checkpoints unchanged (same parameter names and shapes) and reproduce the official forward pass
numerically, quirks included:

* ``ResidualConvUnit`` in the official code starts with an in-place ReLU, so its skip connection adds
  ``relu(x)``, not ``x``. We compute the same value without mutating the caller's tensor.
* Every bilinear resize uses ``align_corners=True``.
* The positional embedding is a sincos embedding of an aspect-ratio-normalised uv grid, evaluated in
  float64, cast to float32 and scaled by 0.1 (see :func:`uv_sincos_embedding`).
* Frames can be processed in chunks (``frames_chunk_size``): every operation is per frame, so chunking
  changes memory use only, never the result.

Shapes: B batch, S frames, P tokens per frame, C token width (2 x aggregator width), H x W image,
h x w = (H / patch_size) x (W / patch_size) patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.gaussian_adapter import gaussian_head_output_dim

# Official constants: the sincos frequency base and the weight of the positional embedding.
POS_EMBED_OMEGA_0 = 100.0
POS_EMBED_RATIO = 0.1
# ``F.interpolate`` fails on outputs above this many elements on some backends; the official code
# splits the batch (which is exact, frames are independent) above this limit.
_MAX_INTERPOLATE_ELEMENTS = 1610612736

VALUE_ACTIVATIONS = ("exp", "inv_log", "linear", "relu", "sigmoid", "norm", "norm_exp", "xy_inv_log")
CONF_ACTIVATIONS = ("expp1", "expp0", "sigmoid")


# --------------------------------------------------------------------------------------------------
# Functional pieces
# --------------------------------------------------------------------------------------------------


def inverse_log_transform(y: Tensor) -> Tensor:
    """sign(y) * (exp(|y|) - 1), the inverse of sign(x) * log(1 + |x|)."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


def activate_values(values: Tensor, activation: str) -> Tensor:
    """Applies a DPT value activation to a channels-last tensor (..., C)."""
    if activation == "exp":
        return torch.exp(values)
    if activation == "inv_log":
        return inverse_log_transform(values)
    if activation == "linear":
        return values
    if activation == "relu":
        return F.relu(values)
    if activation == "sigmoid":
        return torch.sigmoid(values)
    if activation == "norm":
        return values / values.norm(dim=-1, keepdim=True)
    if activation == "norm_exp":
        norm = values.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        return values / norm * torch.expm1(norm)
    if activation == "xy_inv_log":
        xy, z = values.split([2, 1], dim=-1)
        z = inverse_log_transform(z)
        return torch.cat([xy * z, z], dim=-1)
    raise ValueError(f"unknown DPT activation {activation!r}; expected one of {VALUE_ACTIVATIONS}")


def activate_confidence(conf: Tensor, conf_activation: str) -> Tensor:
    """Applies a DPT confidence activation ("expp1" = 1 + exp(c), "expp0" = exp(c), "sigmoid")."""
    if conf_activation == "expp1":
        return 1 + conf.exp()
    if conf_activation == "expp0":
        return conf.exp()
    if conf_activation == "sigmoid":
        return torch.sigmoid(conf)
    raise ValueError(f"unknown DPT confidence activation {conf_activation!r}; expected one of {CONF_ACTIVATIONS}")


def uv_grid(width: int, height: int, aspect_ratio: float, dtype: torch.dtype, device=None) -> Tensor:
    """The official normalised uv grid, shape (height, width, 2) with [..., 0] = u (x), [..., 1] = v (y).

    The plane has the given width/height aspect ratio and unit half-diagonal; grid points are cell
    centres, so they span +-span * (n - 1) / n. Built with ``linspace`` in ``dtype`` as upstream does
    (the embedding later reads these rounded values).
    """
    diagonal = (aspect_ratio**2 + 1.0) ** 0.5
    span_x = aspect_ratio / diagonal
    span_y = 1.0 / diagonal
    half_x = span_x * (width - 1) / width
    half_y = span_y * (height - 1) / height
    xs = torch.linspace(-half_x, half_x, steps=width, dtype=dtype, device=device)
    ys = torch.linspace(-half_y, half_y, steps=height, dtype=dtype, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack((uu, vv), dim=-1)


def sincos_embedding_1d(positions: Tensor, dim: int, omega_0: float = POS_EMBED_OMEGA_0) -> Tensor:
    """[sin(p * w_j), cos(p * w_j)] with w_j = omega_0^(-j / (dim/2)), j < dim/2; (M,) -> (M, dim) float32.

    Evaluated in float64 (as upstream) and cast to float32 at the end.
    """
    if dim % 2 != 0:
        raise ValueError(f"sincos embedding width must be even, got {dim}")
    exponents = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    frequencies = 1.0 / omega_0**exponents
    angles = positions.reshape(-1, 1).to(torch.float64) * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def uv_sincos_embedding(
    channels: int, height: int, width: int, aspect_ratio: float, grid_dtype: torch.dtype, device=None
) -> Tensor:
    """The DPT positional embedding (unscaled), shape (channels, height, width), float32.

    The first channels/2 channels embed u (x), the last channels/2 embed v (y).
    """
    if channels % 4 != 0:
        raise ValueError(f"the uv positional embedding needs a channel count divisible by 4, got {channels}")
    grid = uv_grid(width, height, aspect_ratio, grid_dtype, device).reshape(-1, 2)
    emb_u = sincos_embedding_1d(grid[:, 0], channels // 2)
    emb_v = sincos_embedding_1d(grid[:, 1], channels // 2)
    return torch.cat([emb_u, emb_v], dim=-1).view(height, width, channels).permute(2, 0, 1)


def add_uv_pos_embed(x: Tensor, image_width: int, image_height: int) -> Tensor:
    """x (N, C, h, w) + 0.1 * uv embedding of an h x w grid with the image's aspect ratio."""
    _, channels, height, width = x.shape
    embedding = uv_sincos_embedding(channels, height, width, image_width / image_height, x.dtype, x.device)
    return x + POS_EMBED_RATIO * embedding[None]


def interpolate_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with ``align_corners=True`` of x (N, C, h, w) -> (N, C, *size).

    Splits along N when the output would exceed the backend's element limit (exact: rows are
    independent).
    """
    num_elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if num_elements <= _MAX_INTERPOLATE_ELEMENTS:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    pieces = torch.chunk(x, chunks=num_elements // _MAX_INTERPOLATE_ELEMENTS + 1, dim=0)
    return torch.cat([F.interpolate(p, size=size, mode="bilinear", align_corners=True) for p in pieces]).contiguous()


# --------------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------------


class ResidualConvUnit(nn.Module):
    """relu(x) + conv2(relu(conv1(relu(x)))): both convs 3x3, same width, with bias.

    The official unit applies ``ReLU(inplace=True)`` to its input and then adds that same (now
    rectified) tensor as the skip, hence ``relu(x)`` in the skip. We keep that value but leave the
    caller's tensor untouched.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        rectified = F.relu(x)
        residual = self.conv2(F.relu(self.conv1(rectified)))
        return residual + rectified


class FeatureFusionBlock(nn.Module):
    """One DPT refinement stage: (x + RCU1(skip)) -> RCU2 -> bilinear resize -> 1x1 ``out_conv``.

    The deepest stage (``has_residual=False``) has no skip input and no ``resConfUnit1``. Without an
    explicit ``size`` the output is upsampled 2x.
    """

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, stride=1, padding=0, bias=True)
        # Attribute names (including their spelling) are the checkpoint's.
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        """x, skip: (N, F, h, w) -> (N, F, *size) (or 2h x 2w)."""
        if self.has_residual:
            if skip is None:
                raise ValueError("this fusion block fuses a skip feature map; pass `skip`")
            x = x + self.resConfUnit1(skip)
        elif skip is not None:
            raise ValueError("the deepest fusion block takes no skip feature map")
        x = self.resConfUnit2(x)
        if size is None:
            size = (int(x.shape[-2] * 2), int(x.shape[-1] * 2))
        x = interpolate_bilinear(x, tuple(size))
        return self.out_conv(x)


class _Scratch(nn.Module):
    """Container whose attribute names give the checkpoint's ``scratch.*`` keys."""


def _output_conv2(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    """Conv3x3 -> ReLU -> Conv1x1; the ReLU sits at index 1 so the convs are keys ``0`` and ``2``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size=3, stride=1, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, out_channels, kernel_size=1, stride=1, padding=0),
    )


class DPTHead(nn.Module):
    """VGGT's DPT head: four aggregator taps -> a dense map at image resolution.

    Args:
        dim_in: token width C (2 x aggregator width; 2048 for VGGT-1B).
        patch_size: pixels per patch side (14).
        output_dim: output channels; the last one is the confidence.
        activation: value activation, one of ``VALUE_ACTIVATIONS`` ("exp" for depth, "inv_log" for points).
        conf_activation: confidence activation, one of ``CONF_ACTIVATIONS``.
        features: width of the fusion stages (256).
        out_channels: width of each tap after its 1x1 projection ([256, 512, 1024, 1024]).
        intermediate_layer_idx: aggregator layers used as the four taps ([4, 11, 17, 23]).
        pos_embed: add the uv sincos embedding after the projections and before ``output_conv2``.
        feature_only: stop after the final resize and return features (used by the track head).
        down_ratio: the output is (h * patch_size / down_ratio) x (w * patch_size / down_ratio).

    Checkpoint layout: ``norm``, ``projects.{0..3}``, ``resize_layers.{0,1,3}`` (2 is an identity),
    ``scratch.layer{1..4}_rn`` (no bias), ``scratch.refinenet{1..4}`` (4 without ``resConfUnit1``),
    ``scratch.output_conv1`` and, unless ``feature_only``, ``scratch.output_conv2.{0,2}``.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
    ) -> None:
        super().__init__()
        out_channels = [int(c) for c in out_channels]
        intermediate_layer_idx = [int(i) for i in intermediate_layer_idx]
        if len(out_channels) != 4 or len(intermediate_layer_idx) != 4:
            raise ValueError(
                f"DPTHead fuses exactly 4 taps: got out_channels={out_channels}, "
                f"intermediate_layer_idx={intermediate_layer_idx}"
            )
        if activation not in VALUE_ACTIVATIONS:
            raise ValueError(f"unknown DPT activation {activation!r}; expected one of {VALUE_ACTIVATIONS}")
        if conf_activation not in CONF_ACTIVATIONS:
            raise ValueError(
                f"unknown DPT confidence activation {conf_activation!r}; expected one of {CONF_ACTIVATIONS}"
            )
        if not feature_only and output_dim < 2:
            raise ValueError(f"output_dim must be >= 2 (values + confidence), got {output_dim}")
        if features % 2 != 0:
            raise ValueError(f"features must be even, got {features}")
        if pos_embed:
            final_width = features if feature_only else features // 2
            bad = [c for c in [*out_channels, final_width] if c % 4 != 0]
            if bad:
                raise ValueError(
                    f"with pos_embed=True every embedded width must be divisible by 4: out_channels={out_channels}, "
                    f"final width {final_width} (features={features})"
                )

        self.dim_in = dim_in
        self.patch_size = int(patch_size)
        self.output_dim = output_dim
        self.activation = activation
        self.conf_activation = conf_activation
        self.features = features
        self.intermediate_layer_idx = intermediate_layer_idx
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, kernel_size=1, stride=1, padding=0) for c in out_channels])
        # Tap 0 is upsampled 4x, tap 1 2x, tap 2 kept, tap 3 downsampled 2x.
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4, padding=0),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2, padding=0),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = _Scratch()
        for i, c in enumerate(out_channels, start=1):
            setattr(
                self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, kernel_size=3, stride=1, padding=1, bias=False)
            )
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, stride=1, padding=1)
            self.scratch.output_conv2 = _output_conv2(features // 2, 32, output_dim)

    # -- public ------------------------------------------------------------------------------------

    def forward(
        self,
        aggregated_tokens_list: Sequence[Tensor],
        images: Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None = 8,
    ) -> tuple[Tensor, Tensor] | Tensor:
        """Dense prediction for every frame.

        Args:
            aggregated_tokens_list: either the 4 taps in ``intermediate_layer_idx`` order or all
                aggregator layers (indexed by layer then); each (B, S, P, C). A list of exactly 4
                tensors is always read as the taps.
            images: (B, S, 3, H, W) in [0, 1]; only its shape is used here.
            patch_start_idx: index of the first patch token (5 in VGGT: camera + 4 registers).
            frames_chunk_size: frames per chunk; None or >= S processes all frames at once.

        Returns:
            (preds (B, S, H', W', output_dim - 1), conf (B, S, H', W')), with H' = h * patch_size /
            down_ratio (H' = H when down_ratio = 1); or features (B, S, F, H', W') if ``feature_only``.
        """
        outputs = self._forward_in_chunks(aggregated_tokens_list, images, patch_start_idx, frames_chunk_size)
        return outputs[0] if self.feature_only else outputs

    # -- shared by the subclasses ------------------------------------------------------------------

    def _forward_in_chunks(
        self,
        aggregated_tokens_list: Sequence[Tensor],
        images: Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None,
    ) -> tuple[Tensor, ...]:
        """Runs ``_forward_frames`` on frame chunks and concatenates every output along S."""
        taps = self._select_taps(aggregated_tokens_list)
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (B, S, 3, H, W), got {tuple(images.shape)}")
        num_frames = images.shape[1]
        for tap in taps:
            if tap.dim() != 4 or tap.shape[:2] != images.shape[:2] or tap.shape[-1] != self.dim_in:
                raise ValueError(
                    f"each token tensor must be (B, S, P, {self.dim_in}) with (B, S) = {tuple(images.shape[:2])}, "
                    f"got {tuple(tap.shape)}"
                )
        if frames_chunk_size is None or frames_chunk_size >= num_frames:
            return self._forward_frames(taps, images, patch_start_idx)
        if frames_chunk_size <= 0:
            raise ValueError(f"frames_chunk_size must be positive or None, got {frames_chunk_size}")
        chunks = [
            self._forward_frames(
                [t[:, start : start + frames_chunk_size] for t in taps],
                images[:, start : start + frames_chunk_size],
                patch_start_idx,
            )
            for start in range(0, num_frames, frames_chunk_size)
        ]
        return tuple(torch.cat(parts, dim=1) for parts in zip(*chunks))

    def _select_taps(self, aggregated_tokens_list: Sequence[Tensor]) -> list[Tensor]:
        """The 4 tapped layers, from either the taps themselves or the list of all layers."""
        count = len(aggregated_tokens_list)
        if count == len(self.intermediate_layer_idx):
            return list(aggregated_tokens_list)
        if count > max(self.intermediate_layer_idx):
            return [aggregated_tokens_list[i] for i in self.intermediate_layer_idx]
        raise ValueError(
            f"got {count} token tensors: expected the {len(self.intermediate_layer_idx)} taps or all layers "
            f"(more than {max(self.intermediate_layer_idx)}) for intermediate_layer_idx={self.intermediate_layer_idx}"
        )

    def _fused_features(self, taps: Sequence[Tensor], images: Tensor, patch_start_idx: int) -> Tensor:
        """Taps (B, S, P, C) -> fused map after ``output_conv1``, (B*S, F/2 or F if feature_only, 8h, 8w).

        The resolution is 8x the patch grid: 4x from the first tap's resize, 2x from ``refinenet1``.
        """
        batch, frames, _, height, width = images.shape
        patch_h, patch_w = height // self.patch_size, width // self.patch_size
        levels = []
        for level, tap in enumerate(taps):
            x = tap[:, :, patch_start_idx:]
            if x.shape[2] != patch_h * patch_w:
                raise ValueError(
                    f"tap {level} has {x.shape[2]} patch tokens after index {patch_start_idx}, but a "
                    f"{height}x{width} image gives a {patch_h}x{patch_w} grid of {self.patch_size}-pixel patches"
                )
            x = self.norm(x.reshape(batch * frames, patch_h * patch_w, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(batch * frames, x.shape[-1], patch_h, patch_w)
            x = self.projects[level](x)
            if self.pos_embed:
                x = add_uv_pos_embed(x, width, height)
            levels.append(self.resize_layers[level](x))

        scratch = self.scratch
        layer1, layer2, layer3, layer4 = (getattr(scratch, f"layer{i + 1}_rn")(x) for i, x in enumerate(levels))
        out = scratch.refinenet4(layer4, size=layer3.shape[2:])
        out = scratch.refinenet3(out, layer3, size=layer2.shape[2:])
        out = scratch.refinenet2(out, layer2, size=layer1.shape[2:])
        out = scratch.refinenet1(out, layer1)
        return scratch.output_conv1(out)

    def _forward_frames(self, taps: Sequence[Tensor], images: Tensor, patch_start_idx: int) -> tuple[Tensor, ...]:
        """One chunk of frames: taps (B, S, P, C), images (B, S, 3, H, W) -> outputs with leading (B, S)."""
        batch, frames, _, height, width = images.shape
        out = self._fused_features(taps, images, patch_start_idx)
        patch_h, patch_w = height // self.patch_size, width // self.patch_size
        size = (int(patch_h * self.patch_size / self.down_ratio), int(patch_w * self.patch_size / self.down_ratio))
        out = interpolate_bilinear(out, size)
        if self.pos_embed:
            out = add_uv_pos_embed(out, width, height)
        if self.feature_only:
            return (out.view(batch, frames, *out.shape[1:]),)

        out = self.scratch.output_conv2(out).permute(0, 2, 3, 1)  # (B*S, H', W', output_dim)
        preds = activate_values(out[..., :-1], self.activation)
        conf = activate_confidence(out[..., -1], self.conf_activation)
        return preds.view(batch, frames, *preds.shape[1:]), conf.view(batch, frames, *conf.shape[1:])


class GaussianParamHead(DPTHead):
    """AnySplat's ``VGGT_DPT_GS_Head``: the DPT trunk -> raw per-pixel Gaussian parameters.

    Same trunk as :class:`DPTHead` up to ``output_conv1`` (features -> features/2), then: bilinear
    resize to H x W, + ``input_merger`` (Conv7x7 3 -> features/2, ReLU) of the [0, 1] image, + uv
    positional embedding, ``output_conv2`` (Conv3x3 features/2 -> head_hidden, ReLU, Conv1x1 ->
    output_dim). No final activation: see :mod:`engine.models.gaussian_adapter` for the channel layout
    and the activations.

    Args:
        dim_in, patch_size, features, out_channels, intermediate_layer_idx, pos_embed: as in DPTHead.
        output_dim: raw channels, ``gaussian_head_output_dim(sh_degree)`` (84 for SH degree 4).
        head_hidden: width of ``output_conv2``'s hidden layer; None -> features/2 (128 in the released
            model). Upstream picks 128 if output_dim > 50 else 32, but also sizes ``input_merger`` with
            it, which only runs when it equals features/2; we size ``input_merger`` by features/2.

    Checkpoint layout: DPTHead's keys (with ``output_conv2`` resized) + ``input_merger.0``.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 84,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        head_hidden: int | None = None,
    ) -> None:
        super().__init__(
            dim_in,
            patch_size=patch_size,
            output_dim=output_dim,
            activation="linear",
            conf_activation="expp1",
            features=features,
            out_channels=out_channels,
            intermediate_layer_idx=intermediate_layer_idx,
            pos_embed=pos_embed,
            feature_only=False,
            down_ratio=1,
        )
        merged_width = features // 2
        self.head_hidden = merged_width if head_hidden is None else head_hidden
        self.input_merger = nn.Sequential(nn.Conv2d(3, merged_width, kernel_size=7, stride=1, padding=3), nn.ReLU())
        self.scratch.output_conv2 = _output_conv2(merged_width, self.head_hidden, output_dim)

    @classmethod
    def for_sh_degree(cls, dim_in: int, sh_degree: int = 4, **kwargs) -> GaussianParamHead:
        """A head whose output has the channel count of the given SH degree."""
        return cls(dim_in, output_dim=gaussian_head_output_dim(sh_degree), **kwargs)

    @property
    def sh_degree(self) -> int:
        """SH degree implied by output_dim (raises if output_dim fits no degree)."""
        sh_channels = self.output_dim - gaussian_head_output_dim(0) + 3
        degree = math.isqrt(max(sh_channels // 3, 0)) - 1
        if degree < 0 or gaussian_head_output_dim(degree) != self.output_dim:
            raise ValueError(f"output_dim {self.output_dim} is not 9 + 3*(d+1)^2 for any SH degree d")
        return degree

    def forward(
        self,
        aggregated_tokens_list: Sequence[Tensor],
        images: Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None = 8,
    ) -> Tensor:
        """Raw Gaussian parameters per pixel.

        Args: as :meth:`DPTHead.forward`; ``images`` (B, S, 3, H, W) in [0, 1] feed ``input_merger``.

        Returns:
            raw (B, S, output_dim, H, W), channels first as upstream (channel layout in
            :mod:`engine.models.gaussian_adapter`).
        """
        return self._forward_in_chunks(aggregated_tokens_list, images, patch_start_idx, frames_chunk_size)[0]

    def _forward_frames(self, taps: Sequence[Tensor], images: Tensor, patch_start_idx: int) -> tuple[Tensor, ...]:
        batch, frames, _, height, width = images.shape
        out = self._fused_features(taps, images, patch_start_idx)
        image_features = self.input_merger(images.flatten(0, 1))
        out = interpolate_bilinear(out, (height, width)) + image_features
        if self.pos_embed:
            out = add_uv_pos_embed(out, width, height)
        out = self.scratch.output_conv2(out)
        return (out.view(batch, frames, *out.shape[1:]),)
