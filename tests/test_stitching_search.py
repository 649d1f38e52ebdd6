"""Streaming layer search: exactness on a planted problem, equality with a direct solve, exact moment MSE."""

import json

import pytest
import torch

from engine.stitching.layer_spec import StitchingLayer, latent_patches, parse_spec
from engine.stitching.search import NormalEquations, find_stitch_layer

SPEC = parse_spec("conv3d_k3x3x3_o6_s1x2x2_p1x1x1")
LATENT_CHANNELS = 3
FRAMES = 9  # 3 latent frames, upsampled x4 in time
PREFIX = 2  # e.g. cls + one register token
LAYERS = ["patch_embed", "block_0", "block_1", "block_2"]
PLANTED = 2  # block_1 is exactly linear in the latent


def toy_encoder(frames):
    """A fixed 'VAE': (B, T, 3, H, W) -> (B, 3, T_lat, H/2, W/2), keeping frames 0, 4, 8 and 2x2 pooling."""
    keyframes = frames[:, ::4].permute(0, 2, 1, 3, 4)  # (B, 3, T_lat, H, W)
    pooled = torch.nn.functional.avg_pool3d(keyframes, (1, 2, 2))
    mix = torch.tensor([[1.0, 0.5, -0.2], [0.1, -1.0, 0.3], [0.4, 0.2, 0.9]], dtype=frames.dtype)
    return torch.einsum("oc,bcthw->bothw", mix, pooled) * 3 - 1


class PlantedNetwork:
    """Layer PLANTED = exact affine conv of the upsampled latent; the other layers are nonlinear or noisy."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.layer = StitchingLayer(SPEC, LATENT_CHANNELS, dtype=torch.float64)
        with torch.no_grad():
            self.layer.weight.copy_(torch.randn(self.layer.weight.shape, generator=g, dtype=torch.float64))
            self.layer.bias.copy_(torch.randn(SPEC.out_channels, generator=g, dtype=torch.float64) * 3)

    def __call__(self, frames):
        tokens = self.layer(toy_encoder(frames), FRAMES)  # (B, T, h'w', 6)
        prefix = torch.full((*tokens.shape[:2], PREFIX, tokens.shape[-1]), 7.0, dtype=tokens.dtype)

        def with_prefix(t):
            return torch.cat([prefix, t], dim=2)

        return [
            with_prefix(torch.tanh(2 * tokens)),
            with_prefix(tokens + 0.3 * torch.sin(1e3 * tokens)),  # deterministic "noise"
            with_prefix(tokens),
            with_prefix(tokens.square()),
        ]


def clips(count, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, FRAMES, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(count)]


class ToyVAE:
    def encode(self, frames, normalized=True):
        assert not normalized, "the search must ask for the raw VAE latent"
        return toy_encoder(frames)


def test_planted_layer_is_found_and_recovered(tmp_path):
    network = PlantedNetwork()
    result = find_stitch_layer(
        clips(6), network, LAYERS, SPEC, vae=ToyVAE(), num_prefix_tokens=PREFIX, ridge=1e-12, out_dir=tmp_path
    )
    assert result.best_layer == LAYERS[PLANTED]
    assert result.mse[PLANTED] < 1e-16
    assert min(m for k, m in enumerate(result.mse) if k != PLANTED) > 1e-3
    torch.testing.assert_close(result.state_dict["weight"], network.layer.weight.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.state_dict["bias"], network.layer.bias.detach(), atol=1e-6, rtol=0)
    assert result.stitching_layer(torch.float64).weight.shape == (6, 3, 3, 3, 3)

    report = json.loads((tmp_path / "layer_search.json").read_text())
    assert report["best_layer"] == "block_1"
    assert report["spec"] == "conv3d_k3_o6_s1x2x2_p1"
    assert [entry["name"] for entry in report["layers"]] == LAYERS
    assert report["settings"]["num_clips"] == 12 and report["settings"]["num_rows"] == 12 * FRAMES * 4
    assert (tmp_path / "layer_search_mse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "stitching_layer.safetensors")
    assert saved["weight"].dtype == torch.float32 and saved["weight"].shape == (6, 3, 3, 3, 3)
    assert not list(tmp_path.glob(".*.tmp"))


def _stacked_rows(items, network, layer):
    """Direct (non-streaming) design matrix and targets of one layer over all clips."""
    xs, ys = [], []
    for frames in items:
        latent = toy_encoder(frames)
        xs.append(latent_patches(latent, SPEC, FRAMES).reshape(-1, SPEC.in_features(LATENT_CHANNELS)))
        ys.append(network(frames)[layer][:, :, PREFIX:].reshape(-1, SPEC.out_channels))
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_streaming_fit_equals_direct_lstsq(ridge):
    torch.manual_seed(0)
    network = PlantedNetwork()
    items = clips(5, batch=1, seed=3)
    layer = 3  # a nonlinear layer: the fit has a real residual
    x, y = _stacked_rows(items, network, layer)
    moments = NormalEquations(x.shape[1], [y.shape[1]])
    for start in range(0, x.shape[0], 37):  # uneven chunks
        moments.update(x[start : start + 37], [y[start : start + 37]])
    weight, bias = moments.solve(0, ridge)

    # direct: centred rows, ridge as extra rows sqrt(ridge)·I with zero targets; bias = mean residual
    x_centred, y_centred = x - x.mean(0), y - y.mean(0)
    eye = (ridge**0.5) * torch.eye(x.shape[1], dtype=x.dtype)
    augmented_x = torch.cat([x_centred, eye])
    augmented_y = torch.cat([y_centred, torch.zeros(x.shape[1], y.shape[1], dtype=y.dtype)])
    direct_weight = torch.linalg.lstsq(augmented_x, augmented_y).solution
    direct_bias = (y - x @ direct_weight).mean(0)
    torch.testing.assert_close(weight, direct_weight, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(bias, direct_bias, atol=1e-8, rtol=1e-8)


def test_moment_mse_equals_direct_mse():
    network = PlantedNetwork()
    items = clips(4, batch=2, seed=5)
    names = LAYERS
    result = find_stitch_layer(items, network, names, SPEC, vae=ToyVAE(), num_prefix_tokens=PREFIX)
    # the selected layer: its conv applied to the clips reproduces the MSE of the report
    layer = result.stitching_layer(torch.float64)
    for k in range(len(names)):
        x, y = _stacked_rows(items, network, k)
        moments = NormalEquations(x.shape[1], [y.shape[1]])
        moments.update(x[:50], [y[:50]])
        moments.update(x[50:], [y[50:]])
        weight, bias = moments.solve(0, 1e-4)
        direct = (y - x @ weight - bias).square().mean().item()
        # exact up to float64 rounding of the moments, i.e. relative to the size of the targets
        rounding = 1e-12 * y.square().mean().item()
        assert moments.mse(0, weight, bias) == pytest.approx(direct, rel=1e-9, abs=rounding)
        assert result.mse[k] == pytest.approx(direct, rel=1e-9, abs=rounding)
        # any (W, b), not only the fitted one
        g = torch.Generator().manual_seed(k)
        other_w = torch.randn(weight.shape, generator=g, dtype=torch.float64)
        other_b = torch.randn(bias.shape, generator=g, dtype=torch.float64)
        direct_other = (y - x @ other_w - other_b).square().mean().item()
        assert moments.mse(0, other_w, other_b) == pytest.approx(direct_other, rel=1e-10)
    predicted = torch.cat([layer(toy_encoder(f), FRAMES) for f in items])
    target = torch.cat([network(f)[result.best_index][:, :, PREFIX:] for f in items])
    rounding = 1e-12 * target.square().mean().item()
    assert result.mse[result.best_index] == pytest.approx((predicted - target).square().mean().item(), abs=rounding)


def test_precomputed_latents_and_per_layer_prefixes():
    network = PlantedNetwork()
    pairs = [(frames, toy_encoder(frames)) for frames in clips(3)]
    result = find_stitch_layer(pairs, network, LAYERS, SPEC, num_prefix_tokens=[PREFIX] * 4, ridge=1e-12)
    assert result.best_layer == "block_1"


def test_search_rejects_bad_inputs():
    network = PlantedNetwork()
    with pytest.raises(ValueError, match="vae is needed"):
        find_stitch_layer(clips(1), network, LAYERS, SPEC)
    with pytest.raises(ValueError, match="returned 4 layers, expected 3"):
        find_stitch_layer(clips(1), network, LAYERS[:3], SPEC, vae=ToyVAE(), num_prefix_tokens=PREFIX)
    with pytest.raises(ValueError, match="layer 'patch_embed' must be"):
        find_stitch_layer(clips(1), network, LAYERS, SPEC, vae=ToyVAE(), num_prefix_tokens=0)
    with pytest.raises(ValueError, match="6-d tokens but spec"):
        find_stitch_layer(clips(1), network, LAYERS, "conv3d_k3_o8_s1x2x2_p1", vae=ToyVAE(), num_prefix_tokens=2)
    with pytest.raises(ValueError, match="clips yielded nothing"):
        find_stitch_layer([], network, LAYERS, SPEC, vae=ToyVAE())
