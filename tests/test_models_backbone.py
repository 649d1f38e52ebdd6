"""Backbone of the 3D decoders on tiny configs: RoPE, DINOv2, aggregator stages, camera head, pose encoding."""

import math

import pytest
import torch

from engine.models.aggregator import Aggregator
from engine.models.camera_head import CameraHead
from engine.models.config import AggregatorConfig, PatchEmbedConfig
from engine.models.dinov2 import DinoVisionTransformer
from engine.models.layers import RotaryPositionEmbedding2D, patch_positions
from engine.models.pose_encoding import (
    ANYSPLAT_FOV_EPS,
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
)
from engine.testing.tiny import tiny_vggt_config


@pytest.fixture(scope="module")
def aggregator():
    torch.manual_seed(0)
    agg = Aggregator(tiny_vggt_config().aggregator).eval()
    with torch.no_grad():  # the official init (std 1e-6) makes both token slots nearly equal
        agg.camera_token.normal_()
        agg.register_token.normal_()
    return agg


def _images(views=3, height=28, width=42, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, views, 3, height, width, generator=generator)


def test_rope_rotates_first_half_by_row_and_second_by_column():
    rope = RotaryPositionEmbedding2D(frequency=100.0)
    head_dim = 8  # halves of 4: frequency pairs (0, 2) and (1, 3) in rotate-half layout
    tokens = torch.randn(1, 1, 2, head_dim)
    positions = torch.tensor([[[3, 5], [0, 2]]])
    out = rope(tokens, positions)
    inv_freq = [1.0, 100.0 ** (-0.5)]
    for n in range(2):
        for half, coord in ((0, positions[0, n, 0]), (1, positions[0, n, 1])):
            x = tokens[0, 0, n, half * 4 : half * 4 + 4]
            y = out[0, 0, n, half * 4 : half * 4 + 4]
            for j in range(2):
                angle = float(coord) * inv_freq[j]
                c, s = math.cos(angle), math.sin(angle)
                assert torch.allclose(y[j], x[j] * c - x[j + 2] * s, atol=1e-6)
                assert torch.allclose(y[j + 2], x[j + 2] * c + x[j] * s, atol=1e-6)


def test_patch_positions_are_row_major_shifted_with_special_tokens_at_origin():
    pos = patch_positions(2, 2, 3, num_special=2, device=torch.device("cpu"))
    assert pos.shape == (2, 8, 2)
    assert pos[0, :2].tolist() == [[0, 0], [0, 0]]
    assert pos[0, 2:].tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]


def test_pos_embed_resized_along_rows_and_columns():
    config = PatchEmbedConfig(img_size=56, patch_size=14, embed_dim=8, depth=1, num_heads=2, num_register_tokens=1)
    dino = DinoVisionTransformer(config)
    grid = config.pos_grid
    with torch.no_grad():
        rows = torch.arange(grid).float().repeat_interleave(grid)
        cols = torch.arange(grid).float().repeat(grid)
        dino.pos_embed.zero_()
        dino.pos_embed[0, 1:, 0] = rows
        dino.pos_embed[0, 1:, 1] = cols
    # Square image with the native grid: the parameter itself.
    assert dino.interpolate_pos_encoding(grid * grid, 56, 56, torch.float32) is dino.pos_embed
    pos = dino.interpolate_pos_encoding(2 * 4, 28, 56, torch.float32)[0, 1:].reshape(2, 4, 8)
    # Channel 0 (row index) varies down the rows only, channel 1 (column index) along the columns only.
    assert torch.allclose(pos[:, :, 0], pos[:, :1, 0].expand(2, 4), atol=1e-5)
    assert torch.allclose(pos[:, :, 1], pos[:1, :, 1].expand(2, 4), atol=1e-5)
    assert pos[1, 0, 0] > pos[0, 0, 0] and pos[0, 3, 1] > pos[0, 0, 1]


def test_taps_shapes_and_determinism(aggregator):
    images = _images()
    with torch.no_grad():
        taps, start = aggregator(images)
        again, _ = aggregator(images)
    config = aggregator.config
    assert start == 1 + config.num_register_tokens
    assert len(taps) == config.depth
    assert all(t.shape == (1, 3, start + 2 * 3, 2 * config.embed_dim) for t in taps)
    assert all(torch.equal(a, b) for a, b in zip(taps, again))


def test_only_requested_taps_are_kept(aggregator):
    with torch.no_grad():
        taps, _ = aggregator(_images(), intermediate_layer_idx=[1])
    assert [t is not None for t in taps] == [False, True, False, True]  # the last layer is always kept


def test_view_zero_uses_its_own_camera_and_register_slot(aggregator):
    frame = _images(views=1)
    images = frame.expand(1, 3, *frame.shape[2:]).contiguous()
    with torch.no_grad():
        taps, _ = aggregator(images)
    last = taps[-1][0]
    assert torch.allclose(last[1], last[2], atol=1e-5)  # identical frames in slot 1 agree
    assert not torch.allclose(last[0], last[1], atol=1e-3)  # the reference view differs


@pytest.mark.parametrize(
    "stage", ["patch_embed.patch_embed", "patch_embed.blocks.0", "patch_embed.blocks.2", "frame_blocks.0"]
)
def test_forward_from_any_stage_reproduces_forward(aggregator, stage):
    images = _images()
    with torch.no_grad():
        expected, _ = aggregator(images)
        tokens = aggregator.trace(images, [stage])[stage]
        taps, _ = aggregator.forward_from(stage, tokens, 3, (28, 42))
    for tap, ref in zip(taps, expected):
        assert torch.allclose(tap, ref, atol=1e-5)


def test_forward_from_global_stage_with_later_taps(aggregator):
    images = _images()
    with torch.no_grad():
        expected, _ = aggregator(images)
        tokens = aggregator.trace(images, ["global_blocks.1"])["global_blocks.1"]
        taps, _ = aggregator.forward_from("global_blocks.1", tokens, 3, (28, 42), intermediate_layer_idx=[2])
        with pytest.raises(ValueError, match="taps \\[0, 1\\]"):
            aggregator.forward_from("global_blocks.1", tokens, 3, (28, 42))
    assert taps[0] is None and taps[1] is None
    assert torch.allclose(taps[2], expected[2], atol=1e-5) and torch.allclose(taps[3], expected[3], atol=1e-5)


def test_stitch_recipe_prefix_tokens_then_later_blocks(aggregator):
    """Patch tokens given from outside + cls/positions/registers, then DINOv2 from block 0 on."""
    images = _images()
    dino = aggregator.patch_embed
    with torch.no_grad():
        expected, _ = aggregator(images)
        patch = aggregator.trace(images, ["patch_embed.patch_embed"])["patch_embed.patch_embed"]
        block0 = dino.blocks[0](dino.add_prefix_tokens(patch, 28, 42))
        taps, _ = aggregator.forward_from("patch_embed.blocks.0", block0, 3, (28, 42))
    assert torch.allclose(taps[-1], expected[-1], atol=1e-5)


def test_trace_layouts_and_early_stop(aggregator):
    calls = []
    hook = aggregator.frame_blocks[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            out = aggregator.trace(_images(), ["patch_embed.patch_embed", "patch_embed.blocks.1"])
    finally:
        hook.remove()
    assert calls == []
    c = aggregator.config.embed_dim
    assert out["patch_embed.patch_embed"].shape == (3, 6, c)
    assert out["patch_embed.blocks.1"].shape == (3, 1 + aggregator.config.patch_embed.num_register_tokens + 6, c)
    names = aggregator.stage_names()
    assert names[:2] == ["patch_embed.patch_embed", "patch_embed.blocks.0"]
    assert names[-2:] == ["frame_blocks.3", "global_blocks.3"]
    with pytest.raises(KeyError):
        aggregator.trace(_images(), ["no_such_stage"])


def test_gradient_checkpointing_keeps_values_and_gradients():
    torch.manual_seed(0)
    agg = Aggregator(tiny_vggt_config().aggregator).train()
    images = _images()

    def grads():
        agg.zero_grad()
        taps, _ = agg(images)
        taps[-1].square().mean().backward()
        return [p.grad.clone() for p in agg.parameters() if p.grad is not None]

    plain = grads()
    for block in list(agg.frame_blocks) + list(agg.global_blocks):
        block.gradient_checkpointing = True
    checkpointed = grads()
    assert len(plain) == len(checkpointed) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_config_rejects_mismatched_widths():
    with pytest.raises(ValueError, match="DINOv2 width"):
        AggregatorConfig(embed_dim=64, patch_embed=PatchEmbedConfig(embed_dim=32))


def test_camera_head_iterations_and_activations(aggregator):
    head = CameraHead(tiny_vggt_config().camera_head).eval()
    with torch.no_grad():
        taps, _ = aggregator(_images())
        poses = head(taps)
        more = head(taps, num_iterations=3)
    assert len(poses) == head.config.num_iterations and len(more) == 3
    assert poses[-1].shape == (1, 3, 9)
    assert (poses[-1][..., 7:] >= 0).all()  # ReLU on the fields of view
    assert torch.equal(poses[0], more[0])


def test_quaternion_round_trip_and_standardisation():
    generator = torch.Generator().manual_seed(0)
    quats = torch.randn(64, 4, generator=generator, dtype=torch.float64)
    rotations = quat_to_mat(quats)
    assert torch.allclose(rotations @ rotations.transpose(1, 2), torch.eye(3, dtype=torch.float64), atol=1e-10)
    back = mat_to_quat(rotations)
    assert (back[:, 3] >= 0).all()
    unit = quats / quats.norm(dim=-1, keepdim=True)
    assert torch.allclose(back, unit * unit[:, 3:].sign(), atol=1e-8)


def test_pose_encoding_round_trip_and_anysplat_epsilon():
    generator = torch.Generator().manual_seed(0)
    quat = torch.nn.functional.normalize(torch.randn(1, 2, 4, generator=generator), dim=-1)
    encoding = torch.cat(
        [
            torch.randn(1, 2, 3, generator=generator),
            quat * quat[..., 3:].sign(),
            torch.tensor([[[0.9, 1.2], [0.7, 0.8]]]),
        ],
        -1,
    )
    extrinsics, intrinsics = pose_encoding_to_extri_intri(encoding, (28, 42))
    assert intrinsics[0, 0, 0, 2] == 21 and intrinsics[0, 0, 1, 2] == 14
    assert torch.allclose(intrinsics[0, 0, 1, 1], torch.tensor(14 / math.tan(0.45)))
    assert torch.allclose(extri_intri_to_pose_encoding(extrinsics, intrinsics, (28, 42)), encoding, atol=1e-5)
    _, anysplat = pose_encoding_to_extri_intri(encoding, (28, 42), fov_eps=ANYSPLAT_FOV_EPS)
    assert torch.allclose(anysplat[0, 0, 0, 0], torch.tensor(21 / (math.tan(0.6) + 1e-3)))
