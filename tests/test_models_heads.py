"""DPT head and AnySplat Gaussian-parameter head: shapes, official quirks, checkpoint layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engine.models.dpt_head import (
    DPTHead,
    FeatureFusionBlock,
    GaussianParamHead,
    ResidualConvUnit,
    uv_sincos_embedding,
)

SCHEMA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "models"

# Tiny configuration: 4 taps of width 32, 2 special tokens before the patches, 14-pixel patches.
DIM = 32
OUT_CHANNELS = (8, 16, 24, 24)
TAPS = (0, 1, 2, 3)
PATCH_START = 2


def _tokens(batch, frames, height, width, layers=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    count = PATCH_START + (height // 14) * (width // 14)
    return [torch.randn(batch, frames, count, DIM, generator=generator) for _ in range(layers)]


def _images(batch, frames, height, width, seed=1):
    return torch.rand(batch, frames, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _randomise(module, seed=0, std=0.1):
    """Random weights everywhere (default inits leave some paths near zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return module


def _tiny_dpt(**kwargs):
    kwargs.setdefault("features", 16)
    return _randomise(DPTHead(DIM, out_channels=OUT_CHANNELS, intermediate_layer_idx=TAPS, **kwargs))


def _tiny_gs(**kwargs):
    return _randomise(
        GaussianParamHead(DIM, features=16, out_channels=OUT_CHANNELS, intermediate_layer_idx=TAPS, **kwargs)
    )


# -- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, value_channels",
    [
        (dict(output_dim=2, activation="exp"), 1),
        (dict(output_dim=4, activation="inv_log"), 3),
        (dict(output_dim=3, activation="linear", conf_activation="sigmoid"), 2),
    ],
)
def test_dpt_head_output_shapes_and_activations(kwargs, value_channels):
    head = _tiny_dpt(**kwargs).eval()
    with torch.no_grad():
        preds, conf = head(_tokens(2, 2, 28, 42), _images(2, 2, 28, 42), PATCH_START)
    assert preds.shape == (2, 2, 28, 42, value_channels)
    assert conf.shape == (2, 2, 28, 42)
    if kwargs["activation"] == "exp":
        assert (preds > 0).all()
    if kwargs.get("conf_activation", "expp1") == "expp1":
        assert (conf > 1).all()
    else:
        assert ((conf > 0) & (conf < 1)).all()


def test_feature_only_head_with_down_ratio():
    # The configuration of VGGT's track-head feature extractor.
    head = _tiny_dpt(features=16, feature_only=True, down_ratio=2, pos_embed=False).eval()
    with torch.no_grad():
        features = head(_tokens(1, 3, 28, 56), _images(1, 3, 28, 56), PATCH_START)
    assert features.shape == (1, 3, 16, 14, 28)
    assert not hasattr(head.scratch, "output_conv2")


def test_gaussian_head_shape_and_sh_degree():
    head = _tiny_gs(output_dim=84).eval()
    assert head.sh_degree == 4
    with torch.no_grad():
        raw = head(_tokens(1, 2, 28, 42), _images(1, 2, 28, 42), PATCH_START)
    assert raw.shape == (1, 2, 84, 28, 42)
    low = GaussianParamHead.for_sh_degree(DIM, 1, features=16, out_channels=OUT_CHANNELS, intermediate_layer_idx=TAPS)
    assert low.output_dim == 1 + 3 + 4 + 3 * 4 + 1
    assert low.sh_degree == 1


def test_gaussian_head_sees_the_image_through_input_merger():
    head = _tiny_gs().eval()
    tokens = _tokens(1, 1, 28, 28)
    with torch.no_grad():
        a = head(tokens, _images(1, 1, 28, 28, seed=1), PATCH_START)
        b = head(tokens, _images(1, 1, 28, 28, seed=2), PATCH_START)
    assert not torch.allclose(a, b)


# -- chunking, tap selection, no mutation ------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: _tiny_dpt(output_dim=4), lambda: _tiny_gs()])
def test_chunked_frames_give_identical_results(make):
    head = make().eval()
    tokens, images = _tokens(2, 3, 28, 42), _images(2, 3, 28, 42)
    with torch.no_grad():
        whole = head(tokens, images, PATCH_START, frames_chunk_size=None)
        chunked = head(tokens, images, PATCH_START, frames_chunk_size=2)
        single = head(tokens, images, PATCH_START, frames_chunk_size=1)
    whole, chunked, single = (x if isinstance(x, tuple) else (x,) for x in (whole, chunked, single))
    for w, c, s in zip(whole, chunked, single):
        assert torch.equal(w, c)
        assert torch.equal(w, s)


def test_all_layers_or_taps_only_give_the_same_result():
    head = DPTHead(DIM, output_dim=2, features=16, out_channels=OUT_CHANNELS, intermediate_layer_idx=(1, 3, 4, 6))
    _randomise(head).eval()
    all_layers = _tokens(1, 2, 28, 28, layers=7)
    taps = [all_layers[i] for i in (1, 3, 4, 6)]
    images = _images(1, 2, 28, 28)
    with torch.no_grad():
        a = head(all_layers, images, PATCH_START)
        b = head(taps, images, PATCH_START)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="token tensors"):
        head(all_layers[:5], images, PATCH_START)


def test_forward_leaves_the_input_tokens_untouched():
    head = _tiny_dpt(output_dim=2).eval()
    tokens = _tokens(1, 2, 28, 28)
    before = [t.clone() for t in tokens]
    with torch.no_grad():
        head(tokens, _images(1, 2, 28, 28), PATCH_START)
    assert all(torch.equal(a, b) for a, b in zip(tokens, before))


def test_bad_inputs_raise_clear_errors():
    head = _tiny_dpt(output_dim=2)
    with pytest.raises(ValueError, match="patch tokens"):
        head(_tokens(1, 1, 28, 28), _images(1, 1, 42, 28), PATCH_START)
    with pytest.raises(ValueError, match="images must be"):
        head(_tokens(1, 1, 28, 28), torch.rand(1, 3, 28, 28), PATCH_START)
    with pytest.raises(ValueError, match="unknown DPT activation"):
        DPTHead(DIM, activation="softmax")
    with pytest.raises(ValueError, match="divisible by 4"):
        DPTHead(DIM, features=16, out_channels=(6, 16, 24, 24))


# -- the in-place ReLU quirk ------------------------------------------------------------------------


def test_residual_conv_unit_skip_adds_relu_of_input():
    unit = ResidualConvUnit(4)
    with torch.no_grad():
        for p in unit.parameters():
            p.zero_()
    x = torch.randn(1, 4, 5, 5)
    x_before = x.clone()
    # With a zero residual branch the official unit returns relu(x), not x.
    assert torch.equal(unit(x), torch.relu(x))
    assert (x < 0).any() and torch.equal(x, x_before)

    _randomise(unit, std=0.3)
    with torch.no_grad():
        expected = torch.relu(x) + unit.conv2(torch.relu(unit.conv1(torch.relu(x))))
        assert torch.allclose(unit(x), expected, atol=1e-6)


def test_fusion_block_fuses_relu_of_skip_and_upsamples_with_aligned_corners():
    block = FeatureFusionBlock(4)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        block.out_conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    x, skip = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    out = block(x, skip)  # default: 2x upsampling
    # RCU1(skip) = relu(skip); RCU2(y) = relu(y); then bilinear with align_corners=True keeps corners.
    fused = torch.relu(x + torch.relu(skip))
    assert out.shape == (1, 4, 6, 6)
    expected = torch.nn.functional.interpolate(fused, size=(6, 6), mode="bilinear", align_corners=True)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out[..., 0, 0], fused[..., 0, 0]) and torch.allclose(out[..., -1, -1], fused[..., -1, -1])
    assert not hasattr(FeatureFusionBlock(4, has_residual=False), "resConfUnit1")


# -- positional embedding ---------------------------------------------------------------------------


def test_uv_sincos_embedding_matches_the_documented_formula():
    channels, height, width = 8, 2, 3
    image_w, image_h = 42, 28
    aspect = image_w / image_h
    embedding = uv_sincos_embedding(channels, height, width, aspect, torch.float32)
    assert embedding.shape == (channels, height, width) and embedding.dtype == torch.float32

    diagonal = math.sqrt(aspect**2 + 1)
    half_x = aspect / diagonal * (width - 1) / width
    half_y = 1 / diagonal * (height - 1) / height
    quarter = channels // 4  # frequencies per coordinate
    for row in range(height):
        for col in range(width):
            u = -half_x + 2 * half_x * col / (width - 1)
            v = -half_y + 2 * half_y * row / (height - 1)
            expected = []
            for coordinate in (u, v):
                freqs = [100.0 ** (-k / quarter) for k in range(quarter)]
                expected += [math.sin(coordinate * f) for f in freqs] + [math.cos(coordinate * f) for f in freqs]
            assert torch.allclose(embedding[:, row, col], torch.tensor(expected), atol=1e-6)


# -- checkpoint layout ------------------------------------------------------------------------------


def _schema(name: str) -> dict[str, list[int]]:
    path = SCHEMA_DIR / name
    if not path.exists():
        pytest.skip(f"checkpoint schema {path} is not in this checkout")
    data = json.loads(path.read_text())
    entries = data["state_dict"] if isinstance(data, dict) else data
    return {key: shape for key, shape, _dtype in entries}


def _subset(schema: dict[str, list[int]], prefix: str) -> dict[str, list[int]]:
    return {key[len(prefix) :]: shape for key, shape in schema.items() if key.startswith(prefix)}


def _layout(module) -> dict[str, list[int]]:
    return {key: list(tensor.shape) for key, tensor in module.state_dict().items()}


@pytest.mark.parametrize(
    "prefix, build",
    [
        ("depth_head.", lambda: DPTHead(2048, output_dim=2, activation="exp", conf_activation="expp1")),
        ("point_head.", lambda: DPTHead(2048, output_dim=4, activation="inv_log", conf_activation="expp1")),
        (
            "track_head.feature_extractor.",
            lambda: DPTHead(2048, features=128, feature_only=True, down_ratio=2, pos_embed=False),
        ),
    ],
)
def test_full_size_dpt_heads_match_the_vggt_checkpoint_layout(prefix, build):
    expected = _subset(_schema("vggt_schema.json"), prefix)
    assert expected, f"no {prefix} keys in the schema"
    with torch.device("meta"):
        head = build()
    assert _layout(head) == expected


def test_full_size_gaussian_head_matches_the_anysplat_checkpoint_layout():
    expected = _subset(_schema("anysplat_schema.json"), "encoder.gaussian_param_head.")
    assert expected
    with torch.device("meta"):
        head = GaussianParamHead.for_sh_degree(2048, sh_degree=4)
    assert _layout(head) == expected
    # The depth head of AnySplat is VGGT's.
    with torch.device("meta"):
        depth_head = DPTHead(2048, output_dim=2, activation="exp")
    assert _layout(depth_head) == _subset(_schema("anysplat_schema.json"), "encoder.depth_head.")
