"""`python -m engine stitch search` and its inputs, on a tiny Wan VAE and a tiny AnySplat."""

import json

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.models.anysplat import AnySplat
from engine.stitching.sources import ModelActivations, clip_sources, folder_clips, synthetic_clips
from engine.testing.tiny import (
    ADAPTER_WAN_LATENTS_MEAN,
    ADAPTER_WAN_LATENTS_STD,
    TINY_SPEC,
    tiny_anysplat_config,
    tiny_wan_vae,
)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_wan_vae(latents_mean=ADAPTER_WAN_LATENTS_MEAN, latents_std=ADAPTER_WAN_LATENTS_STD).save_pretrained(
        root / "vae"
    )
    torch.manual_seed(0)
    model = AnySplat(tiny_anysplat_config()).eval()
    model.save_pretrained(root / "anysplat")
    return root / "vae", root / "anysplat", model


def test_model_activations_layout(tiny_models):
    _, _, model = tiny_models
    stages = ["patch_embed.patch_embed", "patch_embed.blocks.1", "frame_blocks.0"]
    source = ModelActivations(model, stages, (28, 28))
    assert source.prefix_tokens == [0, 3, 3]  # cls + 2 registers; camera + 2 registers
    frames = torch.rand(2, 5, 3, 16, 16)
    tokens = source(frames)
    assert [t.shape for t in tokens] == [(2, 5, 4, 32), (2, 5, 7, 32), (2, 5, 7, 32)]
    resized = torch.nn.functional.interpolate(frames.flatten(0, 1), size=(28, 28), mode="bilinear", antialias=True)
    expected = model.trace(resized.unflatten(0, (2, 5)), ["patch_embed.blocks.1"])["patch_embed.blocks.1"]
    torch.testing.assert_close(tokens[1], expected.reshape(2, 5, 7, 32))
    with pytest.raises(ValueError, match="unknown stages \\['enc_blocks_2'\\]"):
        ModelActivations(model, ["enc_blocks_2"], (28, 28))


def test_folder_and_synthetic_clips(tmp_path):
    import imageio.v3 as iio

    for clip, count in (("clip_2", 5), ("clip_10", 5), ("short", 3)):
        (tmp_path / clip).mkdir()
        for i in range(count):
            iio.imwrite(tmp_path / clip / f"{i}.png", np.full((20, 24, 3), 10 * i, dtype=np.uint8))
    assert [p.name for p in clip_sources(tmp_path)] == ["clip_2", "clip_10", "short"]
    clips = list(folder_clips(tmp_path, num_frames=5, size=16))
    assert len(clips) == 2 and clips[0].shape == (1, 5, 3, 16, 16)
    assert clips[0][0, 3].mean().item() == pytest.approx(30 / 255, abs=1e-6)
    synthetic = list(synthetic_clips(3, 5, 16))
    assert len(synthetic) == 3 and synthetic[0].shape == (1, 5, 3, 16, 16)
    assert 0 <= synthetic[0].min() and synthetic[0].max() <= 1


def test_stitch_search_command(tiny_models, tmp_path, capsys):
    vae_dir, model_dir, _ = tiny_models
    out = tmp_path / "report"
    args = ["stitch", "search", "--vae", str(vae_dir), "--model", str(model_dir), "--synthetic", "3"]
    args += ["--frames", "5", "--size", "16", "--spec", TINY_SPEC, "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    report = json.loads((out / "layer_search.json").read_text())
    names = [entry["name"] for entry in report["layers"]]
    assert names == ["patch_embed.patch_embed", "patch_embed.blocks.0", "patch_embed.blocks.1", "patch_embed.blocks.2"]
    assert report["best_layer"] in names
    assert report["settings"]["num_clips"] == 3 and report["settings"]["model_image_size"] == [28, 28]
    assert report["settings"]["num_prefix_tokens"] == [0, 3, 3, 3]
    assert (out / "layer_search_mse.png").is_file() and (out / "stitching_layer.safetensors").is_file()
    assert "<- k*" in capsys.readouterr().out

    assert main(["stitch", "search", "--vae", str(vae_dir), "--model", str(model_dir), "--list-stages"]) == 0
    assert "global_blocks.3" in capsys.readouterr().out


def test_world_clips_are_the_generators_orbit_clips(tmp_path, tiny_models):
    """`--world N` feeds the search the procedural world's training orbit clips, reference view first,
    the same pixels as the generator's clip cache, and the report says so."""
    from engine.generator.clipcache import ClipCache
    from engine.stitching.clips import WorldClips
    from engine.stitching.sources import world_clips

    source = WorldClips(2, cache=tmp_path / "clips", frames=5, size=32)
    expected = ClipCache(None, "train", 2, num_frames=5, height=32, width=32).get(1)[0]
    clip = source.clip(1)
    assert clip.shape == (5, 3, 32, 32)
    np.testing.assert_allclose(clip.permute(0, 2, 3, 1).numpy() * 255.0, expected, atol=1e-3)
    assert source.clip(1, num_frames=3, size=16).shape == (3, 3, 16, 16)
    sample = source.sample(3, 32, torch.Generator().manual_seed(0))
    assert any(torch.equal(sample, source.clip(i, 3)) for i in range(2))
    with pytest.raises(ValueError, match="5 frames; 9 asked"):
        source.clip(0, num_frames=9)
    assert [c.shape for c in world_clips(2, 5, 32, tmp_path / "clips")] == [(1, 5, 3, 32, 32)] * 2

    vae_dir, model_dir, _ = tiny_models
    out = tmp_path / "report"
    args = ["stitch", "search", "--vae", str(vae_dir), "--model", str(model_dir), "--world", "2"]
    args += ["--clip-cache", str(tmp_path / "clips"), "--frames", "5", "--size", "32", "--spec", TINY_SPEC]
    assert main(args + ["--out", str(out), "--device", "cpu"]) == 0
    settings = json.loads((out / "layer_search.json").read_text())["settings"]
    assert settings["num_clips"] == 2 and settings["data"].startswith("world:2 ")
