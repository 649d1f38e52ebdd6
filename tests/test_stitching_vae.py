"""Video-VAE adapters over tiny configurations of the real diffusers classes."""

import functools
import json

import pytest
import torch

from engine.stitching.vae import (
    CogVideoXVAEAdapter,
    HunyuanVideoVAEAdapter,
    SVDVAEAdapter,
    WanVAEAdapter,
    adapt_video_vae,
    load_video_vae,
)
from engine.testing.tiny import (
    ADAPTER_WAN_LATENTS_MEAN,
    ADAPTER_WAN_LATENTS_STD,
    tiny_cogvideox_vae,
    tiny_hunyuan_vae,
    tiny_svd_vae,
    tiny_wan_vae,
)

WAN_MEAN, WAN_STD = ADAPTER_WAN_LATENTS_MEAN, ADAPTER_WAN_LATENTS_STD
tiny_wan = functools.partial(tiny_wan_vae, latents_mean=WAN_MEAN, latents_std=WAN_STD)


def frames(batch, count, size=16, seed=0):
    return torch.rand(batch, count, 3, size, size, generator=torch.Generator().manual_seed(seed))


# (factory, adapter class, spatial, temporal, a valid T, its T_lat, an invalid T)
CASES = {
    "wan": (tiny_wan, WanVAEAdapter, 4, 4, 9, 3, 8),
    "cogvideox": (tiny_cogvideox_vae, CogVideoXVAEAdapter, 4, 4, 9, 3, 12),
    "hunyuan": (tiny_hunyuan_vae, HunyuanVideoVAEAdapter, 4, 4, 9, 3, 10),
    "svd": (tiny_svd_vae, SVDVAEAdapter, 2, 1, 3, 3, 0),
}


@pytest.mark.parametrize("name", CASES)
def test_adapter_shapes_factors_and_frame_rule(name):
    factory, adapter_class, spatial, temporal, valid_t, latent_t, invalid_t = CASES[name]
    adapter = adapt_video_vae(factory())
    assert isinstance(adapter, adapter_class)
    assert (adapter.spatial_factor, adapter.temporal_factor, adapter.latent_channels) == (spatial, temporal, 4)
    assert adapter.latent_frames(valid_t) == latent_t
    assert adapter.frame_count(latent_t) == valid_t
    with pytest.raises(ValueError, match=f"got T={invalid_t}"):
        adapter.latent_frames(invalid_t)

    clip = frames(2, valid_t)
    with torch.no_grad():
        latent = adapter.encode(clip)
        assert latent.shape == (2, 4, latent_t, 16 // spatial, 16 // spatial)
        assert latent.dtype == torch.float32
        decoded = adapter.decode(latent)
    assert decoded.shape == clip.shape
    assert 0 <= decoded.min() and decoded.max() <= 1


@pytest.mark.parametrize("name", CASES)
def test_encode_is_the_normalised_posterior_mode(name):
    factory = CASES[name][0]
    adapter = adapt_video_vae(factory())
    clip = frames(1, CASES[name][4], seed=1)
    with torch.no_grad():
        latent = adapter.encode(clip)
        if name == "svd":
            raw = adapter.vae.encode(clip[0] * 2 - 1).latent_dist.mode().permute(1, 0, 2, 3)[None]
        else:
            raw = adapter.vae.encode(clip.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(adapter.denormalize(latent), raw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapter.denormalize(adapter.normalize(raw)), raw)


def test_wan_normalisation_follows_the_wan_pipeline():
    adapter = WanVAEAdapter(tiny_wan())
    raw = torch.randn(2, 4, 3, 4, 4)
    mean = torch.tensor(WAN_MEAN).view(1, 4, 1, 1, 1)
    std = torch.tensor(WAN_STD).view(1, 4, 1, 1, 1)
    latent = adapter.normalize(raw)
    torch.testing.assert_close(latent, (raw - mean) / std)
    # WanPipeline un-normalises with latents / (1 / latents_std) + latents_mean before vae.decode
    torch.testing.assert_close(adapter.denormalize(latent), latent / (1.0 / std) + mean)
    with torch.no_grad():
        expected = adapter.vae.decode(latent / (1.0 / std) + mean).sample.permute(0, 2, 1, 3, 4)
        torch.testing.assert_close(adapter.decode(latent, clamp=False), (expected + 1) / 2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cogvideox", "hunyuan", "svd"])
def test_scaled_latents_follow_the_pipelines(name):
    adapter = adapt_video_vae(CASES[name][0]())
    raw = torch.randn(1, 4, 3, 4, 4)
    factor = adapter.vae.config.scaling_factor
    torch.testing.assert_close(adapter.normalize(raw), raw * factor)  # pipelines decode latents / scaling_factor
    torch.testing.assert_close(adapter.denormalize(raw * factor), raw)


def test_upsample_time_back_to_the_frame_count():
    adapter = WanVAEAdapter(tiny_wan())
    latent = torch.randn(1, 4, 4, 2, 2)
    up = adapter.upsample_time(latent)  # T_lat = 4 -> T = 13
    assert up.shape == (1, 4, 13, 2, 2)
    torch.testing.assert_close(up[:, :, 0], latent[:, :, 0])
    torch.testing.assert_close(up[:, :, -1], latent[:, :, -1])
    torch.testing.assert_close(up[:, :, 8], latent[:, :, 2])
    torch.testing.assert_close(up[:, :, 6], (latent[:, :, 1] + latent[:, :, 2]) / 2)
    assert adapter.upsample_time(latent, 7).shape == (1, 4, 7, 2, 2)


def test_bad_inputs_are_reported():
    adapter = WanVAEAdapter(tiny_wan())
    with pytest.raises(ValueError, match="not a multiple of the VAE's spatial factor 4"):
        adapter.encode(torch.rand(1, 5, 3, 18, 16))
    with pytest.raises(ValueError, match=r"frames must be \(B, T, 3, H, W\)"):
        adapter.encode(torch.rand(1, 3, 5, 16, 16))
    with pytest.raises(ValueError, match=r"T = 4k\+1 frames \(1, 5, 9, 13, ...\); got T=6"):
        adapter.encode(torch.rand(1, 6, 3, 16, 16))
    with pytest.raises(ValueError, match=r"latent must be \(B, 4, T_lat, h, w\)"):
        adapter.decode(torch.randn(1, 16, 2, 4, 4))
    with pytest.raises(TypeError, match="WanVAEAdapter wraps AutoencoderKLWan"):
        WanVAEAdapter(tiny_svd_vae())
    with pytest.raises(ValueError, match="odd number of latent frames"):
        CogVideoXVAEAdapter(tiny_cogvideox_vae()).decode(torch.randn(1, 4, 2, 4, 4))


def test_load_video_vae_from_vae_and_pipeline_folders(tmp_path):
    wan = tiny_wan()
    wan.save_pretrained(tmp_path / "wan_vae")
    adapter = load_video_vae(tmp_path / "wan_vae")
    assert isinstance(adapter, WanVAEAdapter)
    torch.testing.assert_close(adapter.vae.state_dict(), wan.state_dict())

    pipeline = tmp_path / "pipeline"
    tiny_svd_vae().save_pretrained(pipeline / "vae")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline"}))
    loaded = load_video_vae(pipeline, torch_dtype=torch.float64)
    assert isinstance(loaded, SVDVAEAdapter) and loaded.dtype == torch.float64

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="'AutoencoderKL', which is not a supported video VAE"):
        load_video_vae(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_video_vae(tmp_path)
