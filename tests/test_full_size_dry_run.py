"""Full-size dry runs on the meta device: the published configurations of UMT5-XXL, Wan 2.1 T2V 1.3B/14B,
the Wan VAE and the full AnySplat through the real ``Vist3aPipeline.from_pretrained`` -> ``generate``,
only the reading of weights replaced (``engine.testing.dry_run``). Seconds per run, no memory, no FLOPs; any
shape or dtype fault at real size fails. Memory figures per stage: ``benchmarks/memory_full_size.py``.
"""

from __future__ import annotations

import pytest
import torch

from engine.models.config import AnySplatConfig
from engine.pipeline.decoders import StitchedSceneDecoder
from engine.pipeline.memory import ACTIVATION_RESERVE, SAFETY_MARGIN
from engine.pipeline.settings import GenerationSettings, RuntimeOptions
from engine.stitching.decoder import RELEASED_CUT_STAGE, RELEASED_SPEC, WAN_VAE, StitchedDecoder
from engine.testing.dry_run import CARD_12GB, CARD_24GB, DtypeCheck, dry_run, write_dry_run_bundle

FRAMES, SIZE, DECODER_SIZE = 13, 512, 448
GAUSSIANS = FRAMES * DECODER_SIZE * DECODER_SIZE  # the upper bound: merging is skipped on meta
# Parameter counts of the published configurations (engine.testing.dry_run cites them).
PARAMS = {"text_encoder": 5_680_910_336, "1.3B": 1_418_996_800, "vae": 126_892_531}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _check_full_size(pipeline, result, dtype: torch.dtype) -> None:
    assert result.latent.shape == (1, 16, 4, 64, 64) and result.latent.is_meta
    assert result.frames.shape == (FRAMES, 3, SIZE, SIZE)
    scene = result.scene
    assert scene.means.shape == (GAUSSIANS, 3) and scene.sh.shape == (GAUSSIANS, 16, 3)
    assert scene.means.dtype == torch.float32
    assert len(result.cameras) == FRAMES and (result.cameras.width, result.cameras.height) == (448, 448)
    assert result.depth.shape == (FRAMES, DECODER_SIZE, DECODER_SIZE)
    assert pipeline.transformer.dtype == dtype and result.dtype == str(dtype)
    network = pipeline.decoder.decoder.network
    aggregator_dtype = torch.float32 if dtype == torch.float32 else dtype
    assert {p.dtype for p in network.aggregator.parameters()} == {aggregator_dtype}
    assert {p.dtype for p in network.encoder.gaussian_param_head.parameters()} == {torch.float32}
    assert _count(pipeline.text_encoder) == PARAMS["text_encoder"] and _count(pipeline.vae) == PARAMS["vae"]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["auto", "float16", "float32"])
def test_released_kind_at_full_size_with_the_automatic_policy_on_a_12gb_card(tmp_path, dtype):
    bundle = write_dry_run_bundle(tmp_path / "bundle", kind="anysplat-stitched", transformer="1.3B")
    pipeline, result = dry_run(bundle, runtime=RuntimeOptions(device="meta", dtype=dtype), device_memory=CARD_12GB)
    expected = torch.bfloat16 if dtype == "auto" else getattr(torch, dtype)  # auto = the CUDA default
    _check_full_size(pipeline, result, expected)
    assert _count(pipeline.transformer) == PARAMS["1.3B"]
    assert result.settings.conditioning == "released"
    memory = result.memory
    assert memory["cpu_offload"] is True and memory["automatic"] == ["cpu_offload", "vae_tiling"]
    assert memory["free_bytes"] == CARD_12GB[0] and memory["model_bytes"]["text_encoder"] > 10 * 1024**3


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["auto", "float16", "float32"])
def test_stitched_kind_at_full_size_on_a_24gb_card(tmp_path, dtype):
    bundle = write_dry_run_bundle(tmp_path / "bundle", kind="stitched", transformer="1.3B")
    pipeline, result = dry_run(bundle, runtime=RuntimeOptions(device="meta", dtype=dtype), device_memory=CARD_24GB)
    expected = torch.bfloat16 if dtype == "auto" else getattr(torch, dtype)
    _check_full_size(pipeline, result, expected)
    assert result.settings.conditioning == "ours"
    # bf16 models (16.4 GiB) fit a 24 GB card together with the largest activations; float32 ones do not;
    # float16 keeps UMT5's feed-forward outputs in float32 (as transformers loads it) and is decided by size
    memory = result.memory
    need = sum(memory["model_bytes"].values()) + ACTIVATION_RESERVE
    assert memory["cpu_offload"] is (need > CARD_24GB[0] - SAFETY_MARGIN)
    if dtype != "float16":
        assert memory["cpu_offload"] is (dtype == "float32")
    if not memory["cpu_offload"]:  # resident models leave the GPU before the fly-through, return on next use
        pipeline.free_gpu_memory()
        assert pipeline._parked
        pipeline.encode_text("a second prompt", use_cache=False)
        assert not pipeline._parked


@pytest.mark.slow
def test_14b_with_explicit_offload_and_tiling(tmp_path):
    bundle = write_dry_run_bundle(tmp_path / "bundle", kind="anysplat-stitched", transformer="14B")
    runtime = RuntimeOptions(device="meta", cpu_offload=True, vae_tiling=True)
    settings = GenerationSettings(prompt="a lighthouse on a cliff", num_steps=1, seed=1, voxel_merge=False)
    pipeline, result = dry_run(bundle, settings=settings, runtime=runtime)
    _check_full_size(pipeline, result, torch.bfloat16)
    assert _count(pipeline.transformer) > 14e9
    assert result.memory["automatic"] == [] and result.memory["vae_tiling"] is True
    assert pipeline.vae.use_tiling


def _full_size_decoder_inputs():
    latent = torch.empty(1, 16, 4, 64, 64, device="meta")
    frames = torch.empty(1, FRAMES, 3, SIZE, SIZE, device="meta")
    return latent, frames


@pytest.mark.slow
def test_the_dry_run_catches_heads_in_bf16_with_float32_inputs():
    """The fault this issue started from: the whole decoder cast to bf16 (heads too) on a CUDA dtype."""
    decoder = StitchedDecoder.from_config(AnySplatConfig(), RELEASED_CUT_STAGE, RELEASED_SPEC, WAN_VAE, "meta")
    latent, frames = _full_size_decoder_inputs()
    with DtypeCheck(), pytest.raises(TypeError, match="mixed dtypes"):
        StitchedSceneDecoder(decoder.to(torch.bfloat16))(latent, frames)
    fixed = StitchedDecoder.from_config(AnySplatConfig(), RELEASED_CUT_STAGE, RELEASED_SPEC, WAN_VAE, "meta")
    with DtypeCheck() as check:
        decoded = StitchedSceneDecoder(fixed.set_precision(torch.bfloat16))(latent, frames)
    assert check.calls > 100 and decoded.gaussians.means.shape == (GAUSSIANS, 3)
