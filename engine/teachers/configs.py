"""Small configurations of AnySplat and VGGT for the default model (same code as the full-size networks).

Input: 13 views of 112 x 112 (an 8 x 8 patch grid at patch 14, the grid the stitched decoder sees).
Sizes are chosen for the budgets of ``docs/default_model.md`` (fp16 weights: AnySplat <= 7 MB, VGGT <= 6 MB)
and for a training step of a few seconds on one CPU thread.
"""

from __future__ import annotations

from engine.models.config import (
    AggregatorConfig,
    AnySplatConfig,
    CameraHeadConfig,
    DPTHeadConfig,
    GaussianHeadConfig,
    PatchEmbedConfig,
    VGGTConfig,
)

IMAGE_SIZE = 112
NUM_VIEWS = 13
# LayerScale starts at 1 (the official 0.01 suits finetuning from a pretrained DINOv2): trained from scratch,
# 0.01 leaves the camera token nearly the same for every view, and the camera head predicts one pose for
# all views 1..T-1 for hundreds of steps (measured: 100 degrees mean rotation error after 300 steps).
LAYER_SCALE_INIT = 1.0


def _backbone(embed_dim: int, depth: int, heads: int, dino_depth: int) -> tuple[AggregatorConfig, CameraHeadConfig]:
    patch_embed = PatchEmbedConfig(
        img_size=IMAGE_SIZE,
        patch_size=14,
        embed_dim=embed_dim,
        depth=dino_depth,
        num_heads=heads,
        num_register_tokens=4,
    )
    aggregator = AggregatorConfig(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
        num_register_tokens=4,
        patch_embed=patch_embed,
        init_values=LAYER_SCALE_INIT,
    )
    camera = CameraHeadConfig(
        dim_in=2 * embed_dim, trunk_depth=1, num_heads=heads, num_iterations=4, init_values=LAYER_SCALE_INIT
    )
    return aggregator, camera


def _taps(depth: int) -> tuple[int, ...]:
    return (1, depth // 2, depth - 2, depth - 1)


def anysplat_teacher_config(
    embed_dim: int = 96, depth: int = 6, heads: int = 4, features: int = 32, sh_degree: int = 1
) -> AnySplatConfig:
    """AnySplat teacher: DINOv2 (2 blocks, 4 registers) + 6 frame/global blocks of width 96, DPT heads of
    width 32, Gaussians with SH degree 1 (the procedural world's colours do not depend on direction)."""
    aggregator, camera = _backbone(embed_dim, depth, heads, dino_depth=2)
    channels = (features // 2, features, 2 * features, 2 * features)
    return AnySplatConfig(
        aggregator=aggregator,
        camera_head=camera,
        depth_head=DPTHeadConfig(
            dim_in=2 * embed_dim, features=features, out_channels=channels, intermediate_layer_idx=_taps(depth)
        ),
        gaussian_head=GaussianHeadConfig(
            dim_in=2 * embed_dim,
            features=features,
            out_channels=channels,
            intermediate_layer_idx=_taps(depth),
            sh_degree=sh_degree,
        ),
    )


def vggt_teacher_config(embed_dim: int = 96, depth: int = 6, heads: int = 4, features: int = 32) -> VGGTConfig:
    """VGGT teacher: the AnySplat teacher's backbone with a depth head and a point head of width 32."""
    aggregator, camera = _backbone(embed_dim, depth, heads, dino_depth=2)
    channels = (features // 2, features, 2 * features, 2 * features)
    return VGGTConfig(
        aggregator=aggregator,
        camera_head=camera,
        depth_head=DPTHeadConfig(
            dim_in=2 * embed_dim, features=features, out_channels=channels, intermediate_layer_idx=_taps(depth)
        ),
        point_head=DPTHeadConfig(
            dim_in=2 * embed_dim,
            output_dim=4,
            activation="inv_log",
            features=features,
            out_channels=channels,
            intermediate_layer_idx=_taps(depth),
        ),
    )
