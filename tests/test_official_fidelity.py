"""What the released VIST3A inference computes, reproduced: sampler schedule, prompt text and cleaning,
AnySplat's input normalisation, the frames handed to the stitched decoder; and UniPC over every setting
that validation accepts.

Official numbers come from gohyojun15/VIST3A @ 32253c3 (``inference_t23d.py``, diffusers 0.33.1 pinned in
its requirements.txt) and InternRobotics/AnySplat @ 57937e4 (``src/model/encoder/anysplat.py``).
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from test_pipeline_tiny import build_tiny_bundle, tiny_settings

from engine.models.anysplat import AnySplat
from engine.models.vggt import VGGT
from engine.pipeline.sampler import flow_scheduler, official_flow_schedule
from engine.pipeline.settings import (
    CONDITIONING_PRESETS,
    MAX_SEED,
    PRESETS_FILE,
    GenerationSettings,
    RuntimeOptions,
    SettingsError,
)
from engine.pipeline.vist3a import Vist3aPipeline, _clean_text
from engine.testing.tiny import tiny_anysplat_config, tiny_vggt_config

CPU = RuntimeOptions(device="cpu")
OFFICIAL_TEMPLATE = (
    "The camera rotates around the scene, maintaining constant distance: `{prompt}`. "
    "The orbiting trajectory captures 3D structure and consistency."
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- sampler schedule


def test_official_schedule_matches_diffusers_0_33_1():
    sigmas, timesteps = official_flow_schedule(50, 5.0)
    assert timesteps.dtype == np.int64 and len(timesteps) == 50 and len(sigmas) == 51 and sigmas[-1] == 0
    assert timesteps[-3:].tolist() == [241, 172, 92]  # diffusers 0.33.1 at 50 steps, shift 5
    assert timesteps[0] == 999
    scheduler = flow_scheduler({}, 50, 5.0, torch.device("cpu"), schedule="diffusers-0.33.1")
    assert scheduler.timesteps[-3:].tolist() == [241, 172, 92]
    assert torch.equal(scheduler.sigmas, torch.from_numpy(sigmas))


def test_official_schedule_equals_installed_diffusers_fed_the_old_grid():
    """The installed diffusers, handed 0.33.1's unshifted grid, shifts it to the same sigmas."""
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", num_train_timesteps=1000, use_flow_sigmas=True, flow_shift=5.0
    )
    grid = (1.0 - np.linspace(1, 1 / 1000, 51))[::-1][:-1].copy()
    try:
        scheduler.set_timesteps(sigmas=grid)
    except TypeError:
        pytest.skip("this diffusers' UniPC set_timesteps takes no sigmas")
    sigmas, timesteps = official_flow_schedule(50, 5.0)
    np.testing.assert_allclose(scheduler.sigmas.numpy(), sigmas, rtol=0, atol=1e-7)
    assert scheduler.timesteps.tolist() == timesteps.tolist()


def test_released_preset_uses_the_official_schedule_and_ours_the_installed_one(tmp_path):
    pipe = Vist3aPipeline.from_pretrained(build_tiny_bundle(tmp_path / "b"), runtime=CPU)
    released = pipe.make_scheduler(tiny_settings(num_steps=50, flow_shift=5.0, conditioning="released"))
    assert released.timesteps[-3:].tolist() == [241, 172, 92]
    ours = pipe.make_scheduler(tiny_settings(num_steps=50, flow_shift=5.0, conditioning="ours"))
    reference = flow_scheduler(pipe.scheduler_config, 50, 5.0, torch.device("cpu"))
    assert torch.equal(ours.timesteps, reference.timesteps)


def _accepted_combinations(count: int, seed: int) -> list[tuple[int, float]]:
    """Edge cases + log-uniform samples of the ranges GenerationSettings accepts (steps 1..1000, shift (0, 100])."""
    rng = random.Random(seed)
    cases = [(11, 100.0), (201, 5.0), (85, 12.0), (1, 100.0), (1000, 100.0), (1, 1e-3), (1000, 1e-3), (2, 100.0)]
    for _ in range(count):
        steps = int(round(math.exp(rng.uniform(0, math.log(1000)))))
        shift = math.exp(rng.uniform(math.log(1e-3), math.log(100)))
        cases.append((max(1, min(1000, steps)), shift))
    return cases


@pytest.mark.parametrize("schedule", ["installed", "diffusers-0.33.1"])
def test_unipc_runs_every_accepted_combination(schedule):
    """The whole loop of steps runs to the end for every (steps, shift) validation accepts."""
    sample0 = torch.randn(1, 2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    for steps, shift in _accepted_combinations(60, seed=11):
        GenerationSettings(prompt="x", num_steps=steps, flow_shift=shift)  # accepted
        scheduler = flow_scheduler({}, steps, shift, torch.device("cpu"), schedule=schedule)
        assert len(scheduler.timesteps) == steps
        sample = sample0.clone()
        for t in scheduler.timesteps:
            sample = scheduler.step(0.1 * sample, t, sample, return_dict=False)[0]
        assert scheduler.step_index == steps, (steps, shift)
        assert bool(torch.isfinite(sample).all()), (steps, shift)


def test_generate_runs_where_the_first_timesteps_coincide(tmp_path):
    pipe = Vist3aPipeline.from_pretrained(build_tiny_bundle(tmp_path / "b"), runtime=CPU)
    for steps, shift in ((11, 100.0), (201, 5.0)):
        scheduler = flow_scheduler({}, steps, shift, torch.device("cpu"))
        assert scheduler.timesteps[0] == scheduler.timesteps[1]  # the case diffusers' lookup gets wrong
        result = pipe.generate(tiny_settings(num_steps=steps, flow_shift=shift, guidance_scale=1.0))
        assert bool(torch.isfinite(result.latent).all())


def test_generate_over_sampled_accepted_settings(tmp_path):
    """Property-style: random settings from the accepted ranges all generate on the tiny model."""
    pipe = Vist3aPipeline.from_pretrained(build_tiny_bundle(tmp_path / "b"), runtime=CPU)
    rng = random.Random(5)
    for _ in range(6):
        settings = tiny_settings(
            num_frames=rng.choice([5, 9]),
            height=rng.choice([16, 32, 48]),
            width=rng.choice([16, 32, 48]),
            num_steps=rng.randint(1, 12),
            guidance_scale=rng.uniform(1.0, 30.0),
            flow_shift=math.exp(rng.uniform(math.log(1e-3), math.log(100))),
            output_kind=rng.choice(["gaussians", "points"]),
            conditioning=rng.choice(["auto", "released", "ours"]),
            seed=rng.randint(0, MAX_SEED),
        )
        result = pipe.generate(settings)
        assert len(result.cameras) == settings.num_frames and len(result.scene) > 0, settings


# ----------------------------------------------------------------------------- prompt text


def test_released_preset_is_the_official_text_with_provenance():
    settings = GenerationSettings(prompt="  a red chair in a garden ", conditioning="released")
    assert settings.full_prompt == OFFICIAL_TEMPLATE.format(prompt="a red chair in a garden")
    assert settings.negative_text.startswith("Background blur, Blurred background, Blurred scene, Artifacts,")
    assert settings.negative_text.endswith("fused fingers, too many fingers, long neck")
    data = json.loads(PRESETS_FILE.read_text(encoding="utf-8"))["presets"]["released"]
    assert "32253c3" in data["provenance"] and "inference_t23d.py" in data["provenance"]
    assert data == CONDITIONING_PRESETS["released"]
    resolved = GenerationSettings(prompt="x", negative_prompt="fog").resolved("released")
    assert resolved.conditioning == "released" and resolved.negative_prompt == "fog"
    with pytest.raises(SettingsError, match="conditioning must be one of auto, released, ours"):
        GenerationSettings(prompt="x", conditioning="paper")


def test_auto_conditioning_follows_the_model(tmp_path):
    pipe = Vist3aPipeline.from_pretrained(build_tiny_bundle(tmp_path / "b"), runtime=CPU)
    result = pipe.generate(tiny_settings(num_steps=1))
    assert result.settings.conditioning == "ours"
    assert result.settings.negative_prompt == CONDITIONING_PRESETS["ours"]["negative_prompt"]


@pytest.mark.parametrize(
    "text",
    [
        "a  red\n\tchair &amp;amp; a lamp",
        "schÃ¶n garden \u201ccurly\u201d quotes",
        "  caf\u00e9 \u2014 dash   ",
        "mojibake â€” dash &lt;b&gt;",
    ],
)
def test_prompt_cleaning_is_diffusers_with_ftfy(text):
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean
    from diffusers.utils import is_ftfy_available

    assert is_ftfy_available()
    assert _clean_text(text) == prompt_clean(text)


def test_prompt_cleaning_fixes_mojibake():
    assert _clean_text("schÃ¶n  &amp;amp; \u201cfine\u201d") == 'schön & "fine"'


# ----------------------------------------------------------------------------- AnySplat input normalisation


def test_anysplat_rounds_its_imagenet_constants_to_bf16_and_vggt_does_not():
    mean, std = AnySplat(tiny_anysplat_config()).aggregator.normalization_constants(torch.float32)
    # the official AnySplat's aggregator.to(torch.bfloat16) rounds the float32 buffers to these values
    assert mean.flatten().tolist() == [0.484375, 0.455078125, 0.40625]
    assert std.flatten().tolist() == [0.228515625, 0.2236328125, 0.224609375]
    mean, std = VGGT(tiny_vggt_config()).aggregator.normalization_constants(torch.float64)
    assert torch.equal(mean.flatten(), torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).double())
    assert torch.equal(std.flatten(), torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).double())


def test_anysplat_normalises_with_the_rounded_constants():
    aggregator = AnySplat(tiny_anysplat_config()).aggregator
    images = torch.rand(1, 2, 3, 14, 14, generator=torch.Generator().manual_seed(0))
    rounded_mean = torch.tensor([0.485, 0.456, 0.406]).bfloat16().float().view(1, 1, 3, 1, 1)
    rounded_std = torch.tensor([0.229, 0.224, 0.225]).bfloat16().float().view(1, 1, 3, 1, 1)
    assert torch.equal(aggregator.normalize(images), (images - rounded_mean) / rounded_std)


# ----------------------------------------------------------------------------- frames and precision


def test_released_kind_hands_frames_unclamped_and_ours_clamps():
    from engine.pipeline.decoders import StitchedSceneDecoder
    from engine.testing.tiny import build_stitched_decoder

    latent = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    frames = torch.rand(1, 5, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    frames[..., :4, :] = 1.0008  # slightly above 1, as a resampled VAE output can be
    decoder = build_stitched_decoder(seed=0, visible=True)
    released = StitchedSceneDecoder(decoder, clamp_frames=False)(latent, frames)
    clamped = StitchedSceneDecoder(decoder, clamp_frames=True)(latent, frames)
    reference = StitchedSceneDecoder(decoder, clamp_frames=False)(latent, frames.clamp(0, 1))
    assert not torch.equal(released.gaussians.sh, clamped.gaussians.sh)
    assert torch.equal(clamped.gaussians.sh, reference.gaussians.sh)


def test_precision_policy_keeps_heads_float32_and_tracks_the_float32_reference():
    from engine.testing.tiny import build_stitched_decoder

    latent = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    frames = torch.rand(1, 5, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    exact = build_stitched_decoder(seed=0).predict(latent, frames)
    for dtype in (torch.bfloat16, torch.float16):
        decoder = build_stitched_decoder(seed=0).set_precision(dtype)
        encoder = decoder.network.encoder
        assert {p.dtype for p in encoder.aggregator.parameters()} == {dtype}
        assert {p.dtype for p in encoder.gaussian_param_head.parameters()} == {torch.float32}
        assert decoder.stitching_layer.weight.dtype == torch.float32
        low = decoder.predict(latent, frames)
        assert low.gaussian_raw.dtype == torch.float32 and low.depth.dtype == torch.float32
        scale = exact.depth.abs().max()
        assert (low.depth - exact.depth).abs().max() <= 0.05 * scale, dtype
        assert not torch.equal(low.depth, exact.depth)  # it did compute in low precision
