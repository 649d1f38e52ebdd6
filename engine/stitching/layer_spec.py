"""The stitching layer: a linear convolution from a video-VAE latent to a 3D network's patch tokens.

A layer is named by a spec string (the released VIST3A code's convention)::

    conv{1,2,3}d_k<kernel>_o<out_channels>[_s<stride>][_p<padding>][_d<dilation>]

Each of kernel/stride/padding/dilation is one integer (the same for every convolved axis) or an
``x``-separated tuple with one entry per axis, e.g. ``conv3d_k5x3x3_o1024_s1x2x2_p2x1x1`` (the Wan +
AnySplat layer). Omitted parts default to stride 1, padding 0, dilation 1.

What the convolution dimension means on a latent ``(B, C, T_lat, h, w)``:

- ``conv3d``: kernel over (time, height, width).
- ``conv2d``: kernel over (height, width), applied to every frame on its own.
- ``conv1d``: kernel over time, applied to every latent pixel on its own.

Every variant first upsamples the latent in time (trilinear, align_corners) to the clip's frame count T,
so that the output has one set of tokens per input frame, pads with *replicate* padding, and convolves.
All three are computed as one 3D convolution whose kernel has size 1 along the axes the variant does not
convolve; the parameters keep the shape ``nn.ConvNd`` would give them (conv3d: ``(out, C, kt, kh, kw)``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Axes each conv dimension convolves, as indices into (time, height, width).
_CONV_AXES = {1: (0,), 2: (1, 2), 3: (0, 1, 2)}
_HEAD = re.compile(r"^conv([123])d$")
_OPTIONAL_PARTS = ("s", "p", "d")  # in the order the grammar allows them
_PART_NAMES = {"k": "kernel", "o": "out_channels", "s": "stride", "p": "padding", "d": "dilation"}


class LayerSpecError(ValueError):
    """A stitching-layer spec string or its values are malformed."""


@dataclass(frozen=True)
class ConvSpec:
    """A parsed stitching-layer spec. Tuples have one entry per convolved axis (``dims`` entries)."""

    dims: int
    kernel: tuple[int, ...]
    out_channels: int
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.dims not in _CONV_AXES:
            raise LayerSpecError(f"dims must be 1, 2 or 3, got {self.dims}")
        for name in ("kernel", "stride", "padding", "dilation"):
            value = getattr(self, name)
            if len(value) != self.dims:
                raise LayerSpecError(f"{name} {value} needs {self.dims} entries for conv{self.dims}d")
            minimum = 0 if name == "padding" else 1
            if any(v < minimum for v in value):
                raise LayerSpecError(f"{name} {value} has an entry below {minimum}")
        if self.out_channels < 1:
            raise LayerSpecError(f"out_channels must be >= 1, got {self.out_channels}")

    @classmethod
    def create(
        cls,
        dims: int,
        kernel: int | tuple[int, ...],
        out_channels: int,
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
    ) -> ConvSpec:
        """Build a spec from explicit values; an int stands for the same value on every axis."""

        def expand(value: int | tuple[int, ...]) -> tuple[int, ...]:
            return (int(value),) * dims if isinstance(value, int) else tuple(int(v) for v in value)

        return cls(dims, expand(kernel), int(out_channels), expand(stride), expand(padding), expand(dilation))

    def as_3d(self) -> tuple[tuple[int, int, int], ...]:
        """(kernel, stride, padding, dilation) as (time, height, width) triples; unconvolved axes get 1/1/0/1."""
        axes = _CONV_AXES[self.dims]

        def lift(value: tuple[int, ...], neutral: int) -> tuple[int, int, int]:
            full = [neutral, neutral, neutral]
            for axis, v in zip(axes, value):
                full[axis] = v
            return tuple(full)

        return lift(self.kernel, 1), lift(self.stride, 1), lift(self.padding, 0), lift(self.dilation, 1)

    def in_features(self, in_channels: int) -> int:
        """Length of one unfolded input patch: C * prod(kernel) (720 for 16 channels and 5x3x3)."""
        return in_channels * math.prod(self.kernel)

    def output_size(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Output (T', h', w') for an upsampled latent of (frames, height, width)."""
        kernel, stride, padding, dilation = self.as_3d()
        sizes = []
        for size, k, s, p, d, axis in zip((frames, height, width), kernel, stride, padding, dilation, "Thw"):
            span = d * (k - 1) + 1
            if size + 2 * p < span:
                raise LayerSpecError(f"input {axis}={size} (+2x padding {p}) is smaller than the kernel span {span}")
            sizes.append((size + 2 * p - span) // s + 1)
        return tuple(sizes)

    def weight_shape(self, in_channels: int) -> tuple[int, ...]:
        """Shape ``nn.ConvNd`` gives its weight: (out, in, *kernel)."""
        return (self.out_channels, in_channels, *self.kernel)

    def __str__(self) -> str:
        return format_spec(self)


def _format_values(values: tuple[int, ...]) -> str:
    # canonical form: one number when every axis agrees
    return str(values[0]) if len(set(values)) == 1 else "x".join(str(v) for v in values)


def format_spec(spec: ConvSpec) -> str:
    """Canonical spec string: equal tuples written as one int, default stride/padding/dilation omitted."""
    parts = [f"conv{spec.dims}d", f"k{_format_values(spec.kernel)}", f"o{spec.out_channels}"]
    for letter, value, default in (("s", spec.stride, 1), ("p", spec.padding, 0), ("d", spec.dilation, 1)):
        if any(v != default for v in value):
            parts.append(f"{letter}{_format_values(value)}")
    return "_".join(parts)


def _parse_values(text: str, part: str, dims: int, spec: str) -> tuple[int, ...]:
    name = _PART_NAMES[part[0]]
    pieces = text.split("x")
    if not text or not all(p.isdigit() for p in pieces):
        raise LayerSpecError(f"bad {name} '{part}' in spec '{spec}': expected an int or ints joined by 'x'")
    values = tuple(int(p) for p in pieces)
    if len(values) == 1:
        return values * dims
    if len(values) != dims:
        raise LayerSpecError(
            f"bad {name} '{part}' in spec '{spec}': {len(values)} values for conv{dims}d (needs 1 or {dims})"
        )
    return values


def parse_spec(spec: str) -> ConvSpec:
    """Parse ``conv{1,2,3}d_k<k>_o<out>[_s<s>][_p<p>][_d<d>]``; errors name the offending part."""
    if not isinstance(spec, str) or not spec:
        raise LayerSpecError(f"a spec must be a non-empty string, got {spec!r}")
    head, *parts = spec.split("_")
    match = _HEAD.match(head)
    if match is None:
        raise LayerSpecError(f"bad head '{head}' in spec '{spec}': expected conv1d, conv2d or conv3d")
    dims = int(match.group(1))
    if len(parts) < 2 or not parts[0].startswith("k") or not parts[1].startswith("o"):
        raise LayerSpecError(f"spec '{spec}' must continue with _k<kernel>_o<out_channels> after '{head}'")
    kernel = _parse_values(parts[0][1:], parts[0], dims, spec)
    out_text = parts[1][1:]
    if not out_text.isdigit():
        raise LayerSpecError(f"bad out_channels '{parts[1]}' in spec '{spec}': expected one int")
    values = {"s": (1,) * dims, "p": (0,) * dims, "d": (1,) * dims}
    next_allowed = 0  # optional parts must appear in the order s, p, d, each at most once
    for part in parts[2:]:
        letter = part[:1]
        if letter not in _OPTIONAL_PARTS:
            raise LayerSpecError(f"unknown part '{part}' in spec '{spec}': expected _s<stride>, _p<pad> or _d<dil>")
        position = _OPTIONAL_PARTS.index(letter)
        if position < next_allowed:
            raise LayerSpecError(f"part '{part}' in spec '{spec}' is repeated or out of order (order: s, p, d)")
        next_allowed = position + 1
        values[letter] = _parse_values(part[1:], part, dims, spec)
    try:
        return ConvSpec(dims, kernel, int(out_text), values["s"], values["p"], values["d"])
    except LayerSpecError as error:
        raise LayerSpecError(f"spec '{spec}': {error}") from None


def upsample_time(latent: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Trilinear upsampling in time only (align_corners=True): (B, C, T_lat, h, w) -> (B, C, num_frames, h, w).

    First and last frames are kept exactly; frames in between are linear blends of their two neighbouring
    latent frames (Wan: 4 latent frames -> 13).
    """
    if latent.ndim != 5:
        raise ValueError(f"latent must be (B, C, T_lat, h, w), got shape {tuple(latent.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if latent.shape[2] == num_frames:
        return latent
    size = (num_frames, latent.shape[3], latent.shape[4])
    return F.interpolate(latent, size=size, mode="trilinear", align_corners=True)


def _pad_and_upsample(latent: torch.Tensor, spec: ConvSpec, num_frames: int | None) -> torch.Tensor:
    if num_frames is not None:
        latent = upsample_time(latent, num_frames)
    _, _, padding, _ = spec.as_3d()
    pt, ph, pw = padding
    if pt or ph or pw:
        latent = F.pad(latent, (pw, pw, ph, ph, pt, pt), mode="replicate")
    return latent


def latent_patches(latent: torch.Tensor, spec: ConvSpec, num_frames: int | None = None) -> torch.Tensor:
    """The design rows of the stitching conv: one unfolded input patch per output position.

    Args:
        latent: (B, C, T_lat, h, w).
        spec: the layer geometry.
        num_frames: frame count T to upsample to first (None: no upsampling).
    Returns:
        (B, T', h', w', C * prod(kernel)) with features in the order (C, kt, kh, kw) of the flattened conv
        weight, so ``patches @ weight.reshape(out, -1).T + bias`` equals the convolution.
    """
    x = _pad_and_upsample(latent, spec, num_frames)
    kernel, stride, _, dilation = spec.as_3d()
    for axis, k, s, d in zip((2, 3, 4), kernel, stride, dilation):
        # windows of the full dilated span, then every d-th element: Tensor.unfold has no dilation
        x = x.unfold(axis, d * (k - 1) + 1, s)
        if d > 1:
            x = x[..., ::d]
    # (B, C, T', h', w', kt, kh, kw) -> (B, T', h', w', C, kt, kh, kw)
    x = x.permute(0, 2, 3, 4, 1, 5, 6, 7)
    return x.reshape(*x.shape[:4], -1)


class StitchingLayer(nn.Module):
    """Linear conv from a (normalised) video latent to a 3D network's patch tokens.

    Parameters are ``weight`` (``nn.ConvNd`` shape, e.g. (1024, 16, 5, 3, 3)) and ``bias`` (out,), the
    layout of the released checkpoint's ``"stitching_layer"`` dict, so ``layer.load_state_dict(ckpt)``
    loads it directly.

    ``forward(latent (B, C, T_lat, h, w), num_frames=T) -> tokens (B, T', h'*w', out)``: T' is the
    number of output frames (T for the released 5-frame kernel with temporal padding 2), tokens are in
    row-major (row, col) order per frame: exactly the patch-token layout of DINOv2/VGGT, ready to take
    the place of the 3D network's patch tokens.
    """

    def __init__(self, spec: ConvSpec | str, in_channels: int, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.weight = nn.Parameter(torch.empty(self.spec.weight_shape(in_channels), dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(self.spec.out_channels, dtype=dtype, device=device))
        self.reset_parameters()

    @classmethod
    def from_args(
        cls,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        dims: int = 3,
        **kwargs,
    ) -> StitchingLayer:
        return cls(ConvSpec.create(dims, kernel, out_channels, stride, padding, dilation), in_channels, **kwargs)

    def reset_parameters(self) -> None:
        # the same initialisation nn.ConvNd uses
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.spec.in_features(self.in_channels))
        nn.init.uniform_(self.bias, -bound, bound)

    def output_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T', h', w') of the tokens for a latent of spatial size (height, width) upsampled to num_frames."""
        return self.spec.output_size(num_frames, height, width)

    def forward(self, latent: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """(B, C, T_lat, h, w) latent -> (B, T', h'*w', out) tokens; num_frames=None skips upsampling."""
        if latent.ndim != 5 or latent.shape[1] != self.in_channels:
            raise ValueError(
                f"latent must be (B, {self.in_channels}, T_lat, h, w) for spec {self.spec}, got {tuple(latent.shape)}"
            )
        x = _pad_and_upsample(latent, self.spec, num_frames)
        kernel, stride, _, dilation = self.spec.as_3d()
        weight = self.weight.reshape(self.spec.out_channels, self.in_channels, *kernel)
        out = F.conv3d(x, weight, self.bias, stride=stride, dilation=dilation)  # (B, out, T', h', w')
        return out.flatten(3).permute(0, 2, 3, 1)

    def extra_repr(self) -> str:
        return f"spec={self.spec}, in_channels={self.in_channels}"
