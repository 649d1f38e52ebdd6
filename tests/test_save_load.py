"""One save/load contract: every loadable thing has ``save_pretrained(dir)`` and ``cls.from_pretrained(dir)``.

The shared round trip: ``loaded = cls.from_pretrained(obj.save_pretrained(dir) or dir)`` holds the same tensors
as ``obj`` (up to the precision the format stores), and saving ``loaded`` again reproduces them exactly.
"""

from __future__ import annotations

import pytest
import torch

from engine.alignment.scorers import CLIPScorer
from engine.models.anysplat import AnySplat
from engine.models.vggt import VGGT
from engine.pipeline.settings import RuntimeOptions
from engine.pipeline.vist3a import Vist3aPipeline
from engine.stitching.decoder import StitchedDecoder
from engine.stitching.vae import VideoVAEAdapter, WanVAEAdapter
from engine.testing.tiny import (
    build_stitched_decoder,
    build_tiny_bundle,
    build_tiny_clip_scorer,
    tiny_anysplat_config,
    tiny_vggt_config,
    tiny_wan_adapter,
)


def _tensors(obj) -> dict[str, torch.Tensor]:
    """Every tensor of a loadable thing, by name (a pipeline: each of its models, prefixed)."""
    if isinstance(obj, Vist3aPipeline):
        parts = {"text_encoder": obj.text_encoder, "transformer": obj.transformer, "vae": obj.vae}
        parts["decoder"] = obj.decoder.decoder
        return {f"{part}.{k}": v for part, module in parts.items() for k, v in module.state_dict().items()}
    if isinstance(obj, VideoVAEAdapter):
        return dict(obj.vae.state_dict())
    return {k: v for k, v in obj.state_dict().items() if not k.endswith("position_ids")}


def _pipeline(tmp_path):
    return Vist3aPipeline.from_pretrained(build_tiny_bundle(tmp_path / "bundle"), runtime=RuntimeOptions(device="cpu"))


# name -> (builder(tmp_path), class to load with, tolerance of the stored precision)
LOADABLES = {
    "VGGT": (lambda tmp: VGGT(tiny_vggt_config()).eval(), VGGT, 0.0),
    "AnySplat": (lambda tmp: AnySplat(tiny_anysplat_config()).eval(), AnySplat, 0.0),
    "StitchedDecoder": (lambda tmp: build_stitched_decoder(seed=3), StitchedDecoder, 0.0),
    "Vist3aPipeline": (_pipeline, Vist3aPipeline, 0.0),
    "CLIPScorer": (lambda tmp: build_tiny_clip_scorer(folder=tmp / "tok"), CLIPScorer, 1e-3),  # fp16 weights
    "VideoVAEAdapter": (lambda tmp: tiny_wan_adapter(seed=2), VideoVAEAdapter, 0.0),  # picks WanVAEAdapter
}


@pytest.mark.parametrize("name", sorted(LOADABLES))
def test_save_pretrained_then_from_pretrained_round_trips(name, tmp_path):
    build, cls, tolerance = LOADABLES[name]
    original = build(tmp_path)
    original.save_pretrained(tmp_path / "first")
    if cls is Vist3aPipeline:
        loaded = cls.from_pretrained(tmp_path / "first", runtime=RuntimeOptions(device="cpu"))
    else:
        loaded = cls.from_pretrained(tmp_path / "first")
    assert type(loaded) is type(original)
    before, after = _tensors(original), _tensors(loaded)
    assert set(after) == set(before) and after
    for key, value in before.items():
        assert after[key].shape == value.shape, key
        assert torch.allclose(after[key].float(), value.float(), atol=tolerance, rtol=tolerance), key

    loaded.save_pretrained(tmp_path / "second")
    if cls is Vist3aPipeline:
        again = cls.from_pretrained(tmp_path / "second", runtime=RuntimeOptions(device="cpu"))
    else:
        again = cls.from_pretrained(tmp_path / "second")
    for key, value in _tensors(again).items():
        assert torch.equal(value, after[key]), key


def test_a_saved_pipeline_generates_what_the_original_generates(tmp_path):
    from engine.pipeline.settings import GenerationSettings

    original = _pipeline(tmp_path)
    original.save_pretrained(tmp_path / "saved")
    loaded = Vist3aPipeline.from_pretrained(tmp_path / "saved", runtime=RuntimeOptions(device="cpu"))
    settings = GenerationSettings(prompt="a red house", num_frames=5, height=32, width=32, num_steps=2, seed=3)
    first, second = original.generate(settings), loaded.generate(settings)
    assert torch.equal(first.latent, second.latent)
    assert torch.equal(first.scene.means, second.scene.means)


def test_a_pipeline_whose_decoder_the_bundle_format_cannot_keep_is_refused(tmp_path):
    pipeline = _pipeline(tmp_path)
    pipeline.decoder = lambda latent, frames: None
    with pytest.raises(ValueError, match="stitched decoder"):
        pipeline.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_a_vae_adapter_loads_only_its_own_family(tmp_path):
    folder = tiny_wan_adapter(seed=1).save_pretrained(tmp_path / "vae")
    assert type(WanVAEAdapter.from_pretrained(folder)) is WanVAEAdapter
    from engine.stitching.vae import CogVideoXVAEAdapter

    with pytest.raises(TypeError, match="AutoencoderKLWan; CogVideoXVAEAdapter reads AutoencoderKLCogVideoX"):
        CogVideoXVAEAdapter.from_pretrained(folder)
