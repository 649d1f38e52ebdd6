"""Stitching-layer spec grammar and the StitchingLayer module."""

import pytest
import torch

from engine.stitching.layer_spec import (
    ConvSpec,
    LayerSpecError,
    StitchingLayer,
    format_spec,
    latent_patches,
    parse_spec,
    upsample_time,
)

RELEASED = "conv3d_k5x3x3_o1024_s1x2x2_p2x1x1"


def test_parse_released_spec():
    spec = parse_spec(RELEASED)
    assert spec == ConvSpec(3, (5, 3, 3), 1024, (1, 2, 2), (2, 1, 1), (1, 1, 1))
    assert spec.in_features(16) == 720
    assert spec.weight_shape(16) == (1024, 16, 5, 3, 3)
    assert spec.output_size(13, 64, 64) == (13, 32, 32)


@pytest.mark.parametrize(
    "text",
    [RELEASED, "conv3d_k5x7x7_o1024_s1x3x3_p2x0x0", "conv2d_k3_o64", "conv2d_k3x1_o8_s2_d2", "conv1d_k5_o32_p2_d3"],
)
def test_format_round_trip(text):
    spec = parse_spec(text)
    assert format_spec(spec) == text
    assert parse_spec(format_spec(spec)) == spec


def test_format_is_canonical():
    spec = parse_spec("conv3d_k3x3x3_o8_s1_p0x0x0_d1x1x1")
    assert format_spec(spec) == "conv3d_k3_o8"
    assert str(ConvSpec.create(3, 5, 16, stride=(1, 2, 2), padding=(2, 1, 1))) == "conv3d_k5_o16_s1x2x2_p2x1x1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("conv4d_k3_o8", "bad head 'conv4d'"),
        ("linear_k3_o8", "bad head 'linear'"),
        ("conv3d_o8_k3", "must continue with _k<kernel>_o<out_channels>"),
        ("conv3d_k3", "must continue with _k<kernel>_o<out_channels>"),
        ("conv3d_k3x3_o8", "bad kernel 'k3x3'.*2 values for conv3d"),
        ("conv3d_kAx3x3_o8", "bad kernel 'kAx3x3'"),
        ("conv3d_k3_o", "bad out_channels 'o'"),
        ("conv3d_k3_o8_q2", "unknown part 'q2'"),
        ("conv3d_k3_o8_p1_s2", "part 's2' .* out of order"),
        ("conv3d_k3_o8_s2_s2", "part 's2' .* repeated"),
        ("conv2d_k3_o8_sx", "bad stride 'sx'"),
        ("conv2d_k3_o8_d1x", "bad dilation 'd1x'"),
        ("conv2d_k0_o8", "kernel \\(0, 0\\) has an entry below 1"),
        ("conv2d_k3_o0", "out_channels must be >= 1"),
        ("", "non-empty string"),
    ],
)
def test_parse_errors_name_the_bad_part(text, message):
    with pytest.raises(LayerSpecError, match=message):
        parse_spec(text)


def test_upsample_time_keeps_endpoints_and_interpolates():
    latent = torch.randn(2, 4, 4, 3, 5)
    up = upsample_time(latent, 13)
    assert up.shape == (2, 4, 13, 3, 5)
    torch.testing.assert_close(up[:, :, 0], latent[:, :, 0])
    torch.testing.assert_close(up[:, :, 12], latent[:, :, 3])
    torch.testing.assert_close(up[:, :, 4], latent[:, :, 1])  # latent frames sit at 0, 4, 8, 12
    torch.testing.assert_close(up[:, :, 1], 0.75 * latent[:, :, 0] + 0.25 * latent[:, :, 1])
    assert upsample_time(latent, 4) is latent


def test_stitching_layer_matches_replicate_padded_conv3d():
    torch.manual_seed(0)
    layer = StitchingLayer(RELEASED.replace("o1024", "o32"), in_channels=16)
    reference = torch.nn.Conv3d(16, 32, (5, 3, 3), (1, 2, 2), (2, 1, 1), padding_mode="replicate")
    reference.load_state_dict(layer.state_dict())
    latent = torch.randn(2, 16, 4, 8, 8)
    tokens = layer(latent, num_frames=13)
    assert tokens.shape == (2, 13, 16, 32)  # (B, T, h'*w', C_out)
    expected = reference(upsample_time(latent, 13))  # (B, 32, 13, 4, 4)
    torch.testing.assert_close(tokens, expected.flatten(3).permute(0, 2, 3, 1))
    # token p of frame t is output position (row, col) = divmod(p, w')
    torch.testing.assert_close(tokens[1, 5, 4 * 2 + 3], expected[1, :, 5, 2, 3])


def test_replicate_padding_differs_from_zero_padding():
    layer = StitchingLayer("conv2d_k3_o1_p1", in_channels=1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
    latent = torch.ones(1, 1, 1, 4, 4)
    # replicate padding: every 3x3 window sums nine ones, corners included (zero padding would give 4)
    torch.testing.assert_close(layer(latent), torch.full((1, 1, 16, 1), 9.0))


def test_released_checkpoint_dict_loads_directly():
    checkpoint = {"weight": torch.randn(1024, 16, 5, 3, 3), "bias": torch.randn(1024)}
    layer = StitchingLayer(RELEASED, in_channels=16)
    layer.load_state_dict(checkpoint)
    assert sorted(layer.state_dict()) == ["bias", "weight"]
    torch.testing.assert_close(layer.weight.detach(), checkpoint["weight"])


def test_from_args_and_2d_1d_layouts():
    layer = StitchingLayer.from_args(16, 8, kernel=(5, 3, 3), stride=(1, 2, 2), padding=(2, 1, 1))
    assert str(layer.spec) == "conv3d_k5x3x3_o8_s1x2x2_p2x1x1"
    latent = torch.randn(1, 16, 2, 6, 6)
    frame_conv = StitchingLayer("conv2d_k3_o8_s2_p1", 16)
    assert frame_conv.weight.shape == (8, 16, 3, 3)
    assert frame_conv(latent, num_frames=5).shape == (1, 5, 9, 8)
    per_frame = torch.nn.functional.conv2d(
        torch.nn.functional.pad(upsample_time(latent, 5)[:, :, 2], (1, 1, 1, 1), mode="replicate"),
        frame_conv.weight,
        frame_conv.bias,
        stride=2,
    )
    torch.testing.assert_close(frame_conv(latent, num_frames=5)[:, 2], per_frame.flatten(2).transpose(1, 2))
    time_conv = StitchingLayer("conv1d_k3_o8_p1", 16)
    assert time_conv.weight.shape == (8, 16, 3)
    assert time_conv(latent, num_frames=5).shape == (1, 5, 36, 8)


@pytest.mark.parametrize("text", [RELEASED.replace("o1024", "o4"), "conv2d_k3_o4_s2_p2_d2", "conv1d_k3_o4_s2_p1"])
def test_latent_patches_reproduce_the_conv(text):
    torch.manual_seed(0)
    layer = StitchingLayer(text, in_channels=3, dtype=torch.float64)
    latent = torch.randn(2, 3, 3, 8, 8, dtype=torch.float64)
    patches = latent_patches(latent, layer.spec, num_frames=9)
    assert patches.shape[-1] == layer.spec.in_features(3)
    by_matmul = patches @ layer.weight.reshape(4, -1).T + layer.bias
    torch.testing.assert_close(by_matmul.flatten(2, 3), layer(latent, num_frames=9))


def test_bad_latent_shape_is_reported():
    layer = StitchingLayer(RELEASED.replace("o1024", "o4"), in_channels=16)
    with pytest.raises(ValueError, match=r"latent must be \(B, 16, T_lat, h, w\)"):
        layer(torch.randn(1, 4, 2, 8, 8))
    with pytest.raises(LayerSpecError, match="smaller than the kernel span"):
        layer.output_grid(13, 0, 64)
