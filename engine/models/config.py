"""Hyper-parameters of the VGGT and AnySplat networks, one dataclass per component.

Field names follow the official constructor arguments (``img_size``, ``patch_size``, ``embed_dim``,
``depth``, ``num_heads``, ``mlp_ratio``, ``num_register_tokens``, ``aa_order``, ``aa_block_size``,
``qk_norm``, ``rope_freq``, ``init_values``, ``intermediate_layer_idx``, ``trunk_depth`` ...). The defaults
are the released full-size models (facebook/VGGT-1B, lhjiang/anysplat); ``engine.testing.tiny``'s
``tiny_vggt_config()`` and ``tiny_anysplat_config()`` give configurations of the *same* code that run in tests in a fraction of a
second.

Configs are plain frozen dataclasses; ``to_dict`` / ``from_dict`` give the nested JSON form written next
to saved weights (``config.json`` with a ``model_type`` entry).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.strict_config import dataclass_from_dict

MODEL_TYPES = ("vggt", "anysplat")


@dataclass(frozen=True)
class PatchEmbedConfig:
    """DINOv2 ViT with register tokens (``aggregator.patch_embed``); full size = ViT-L/14 + 4 registers.

    ``img_size // patch_size`` is the side of the square positional-embedding grid (37 for 518/14); it is
    resized (bicubic, antialiased, by explicit output size) to the patch grid of the input.
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    init_values: float = 1.0
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    norm_eps: float = 1e-6
    interpolate_antialias: bool = True
    interpolate_offset: float = 0.0

    @property
    def pos_grid(self) -> int:
        return self.img_size // self.patch_size


@dataclass(frozen=True)
class AggregatorConfig:
    """VGGT's alternating-attention aggregator (frame-wise and global blocks with 2D RoPE).

    ``depth`` frame blocks and ``depth`` global blocks; tap ``i`` = concat(frame_i, global_i), width
    2 * embed_dim. The DINOv2 width must equal ``embed_dim`` (its patch tokens are concatenated with the
    aggregator's camera and register tokens).
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    aa_order: tuple[str, ...] = ("frame", "global")
    aa_block_size: int = 1
    qk_norm: bool = True
    rope_freq: float = 100.0
    init_values: float = 0.01
    norm_eps: float = 1e-5
    patch_embed: PatchEmbedConfig = field(default_factory=PatchEmbedConfig)

    def __post_init__(self):
        if self.patch_embed.embed_dim != self.embed_dim:
            raise ValueError(
                f"DINOv2 width {self.patch_embed.embed_dim} must equal the aggregator width {self.embed_dim}"
            )
        if self.depth % self.aa_block_size != 0:
            raise ValueError(f"aggregator depth {self.depth} is not a multiple of aa_block_size {self.aa_block_size}")
        if sorted(self.aa_order) != ["frame", "global"]:
            raise ValueError(f"aa_order must contain 'frame' and 'global' once each, got {self.aa_order}")
        if (self.embed_dim // self.num_heads) % 4 != 0:
            raise ValueError("the aggregator head dimension must be divisible by 4 for the 2D RoPE")

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token: 1 camera token + the register tokens come first."""
        return 1 + self.num_register_tokens


@dataclass(frozen=True)
class CameraHeadConfig:
    """Iterative camera-pose refinement head reading the camera token of the last aggregator layer."""

    dim_in: int = 2048
    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float = 0.01
    trans_act: str = "linear"
    quat_act: str = "linear"
    fl_act: str = "relu"
    num_iterations: int = 4
    pose_encoding_type: str = "absT_quaR_FoV"

    def __post_init__(self):
        if self.pose_encoding_type != "absT_quaR_FoV":
            raise ValueError(f"only the 'absT_quaR_FoV' pose encoding exists, got {self.pose_encoding_type!r}")
        for name in ("trans_act", "quat_act", "fl_act"):
            if getattr(self, name) not in ("linear", "inv_log", "exp", "relu"):
                raise ValueError(f"{name} must be linear, inv_log, exp or relu, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class DPTHeadConfig:
    """A DPT prediction head (depth, world points); names are ``DPTHead``'s constructor arguments."""

    dim_in: int = 2048
    patch_size: int = 14
    output_dim: int = 2
    activation: str = "exp"
    conf_activation: str = "expp1"
    features: int = 256
    out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23)
    pos_embed: bool = True
    down_ratio: int = 1


@dataclass(frozen=True)
class GaussianHeadConfig:
    """AnySplat's DPT Gaussian-parameter head (reads the RGB frames through ``input_merger``).

    Raw output channels: 1 opacity logit + 3 scale + 4 quaternion (xyzw) + 3*(sh_degree+1)^2 SH + 1
    voxel-merging confidence (84 for degree 4).
    """

    dim_in: int = 2048
    patch_size: int = 14
    features: int = 256
    out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23)
    pos_embed: bool = True
    sh_degree: int = 4

    @property
    def output_dim(self) -> int:
        return 1 + 3 + 4 + 3 * (self.sh_degree + 1) ** 2 + 1


@dataclass(frozen=True)
class VGGTConfig:
    """facebook/VGGT-1B: aggregator + camera head + depth head + point head (track head not built)."""

    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    camera_head: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    depth_head: DPTHeadConfig = field(default_factory=DPTHeadConfig)
    point_head: DPTHeadConfig = field(
        default_factory=lambda: DPTHeadConfig(output_dim=4, activation="inv_log", conf_activation="expp1")
    )
    model_type: str = "vggt"

    def __post_init__(self):
        _check_heads(self.aggregator, self.camera_head, {"depth_head": self.depth_head, "point_head": self.point_head})

    @property
    def min_views(self) -> int:
        return 1

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VGGTConfig:
        return dataclass_from_dict(cls, data)


@dataclass(frozen=True)
class AnySplatConfig:
    """lhjiang/anysplat: VGGT aggregator + camera head + depth head + Gaussian head (keys under ``encoder.``).

    ``voxel_size`` is the default for optional voxel merging of the Gaussians (official: 0.002 in the
    network's normalised world units).
    """

    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    camera_head: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    depth_head: DPTHeadConfig = field(default_factory=DPTHeadConfig)
    gaussian_head: GaussianHeadConfig = field(default_factory=GaussianHeadConfig)
    voxel_size: float = 0.002
    model_type: str = "anysplat"

    def __post_init__(self):
        _check_heads(
            self.aggregator, self.camera_head, {"depth_head": self.depth_head, "gaussian_head": self.gaussian_head}
        )

    @property
    def min_views(self) -> int:
        # A single view has no multi-view evidence; the official pipeline targets many ordered views.
        return 2

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AnySplatConfig:
        return dataclass_from_dict(cls, data)


def _check_heads(aggregator: AggregatorConfig, camera: CameraHeadConfig, heads: dict) -> None:
    width = 2 * aggregator.embed_dim
    if camera.dim_in != width:
        raise ValueError(f"camera_head.dim_in is {camera.dim_in}, but the aggregator taps are {width} wide")
    for name, head in heads.items():
        if head.dim_in != width:
            raise ValueError(f"{name}.dim_in is {head.dim_in}, but the aggregator taps are {width} wide")
        if head.patch_size != aggregator.patch_size:
            raise ValueError(f"{name}.patch_size {head.patch_size} != aggregator patch size {aggregator.patch_size}")
        bad = [i for i in head.intermediate_layer_idx if not 0 <= i < aggregator.depth]
        if bad or len(head.intermediate_layer_idx) != 4:
            raise ValueError(
                f"{name}.intermediate_layer_idx must be 4 layer indices in 0..{aggregator.depth - 1}, "
                f"got {list(head.intermediate_layer_idx)}"
            )


def _to_dict(config) -> dict:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = _to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(data: dict) -> VGGTConfig | AnySplatConfig:
    """Our own ``config.json`` (with ``model_type``) -> the matching config object."""
    model_type = data.get("model_type")
    if model_type == "vggt":
        return VGGTConfig.from_dict(data)
    if model_type == "anysplat":
        return AnySplatConfig.from_dict(data)
    raise ValueError(f"config.json: model_type must be one of {MODEL_TYPES}, got {model_type!r}")
