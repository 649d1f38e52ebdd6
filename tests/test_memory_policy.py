"""Memory on real cards: the automatic policy, the chunked Gaussian post-processing, the out-of-memory hint."""

from __future__ import annotations

import io

import pytest
import torch

from engine.models.outputs import _cameras_from_pose, transform_gaussian_scene
from engine.pipeline.memory import GIB, MemoryPolicy, choose_memory_policy, out_of_memory_hint
from engine.pipeline.settings import RuntimeOptions, SettingsError
from engine.testing.tiny import build_visible_anysplat

# bytes of the 1.3B released model in bf16 (benchmarks/memory_full_size.py)
MODELS_13B = {
    "text_encoder": int(10.58 * GIB),
    "transformer": int(2.65 * GIB),
    "vae": int(0.47 * GIB),
    "decoder": int(2.70 * GIB),
}


def test_policy_offloads_on_12gb_and_keeps_everything_resident_on_24gb():
    small = choose_memory_policy(MODELS_13B, free_bytes=int(11.6 * GIB), total_bytes=12 * GIB)
    assert small.cpu_offload and not small.vae_tiling and small.automatic == ["cpu_offload", "vae_tiling"]
    assert "one model on the GPU at a time" in small.reason
    large = choose_memory_policy(MODELS_13B, free_bytes=int(23.2 * GIB), total_bytes=24 * GIB)
    assert not large.cpu_offload and not large.vae_tiling
    crowded = choose_memory_policy(MODELS_13B, free_bytes=int(6 * GIB))  # another program holds the rest
    assert crowded.cpu_offload and crowded.vae_tiling


def test_explicit_choices_are_kept_and_no_gpu_means_no_offload():
    kept = choose_memory_policy(MODELS_13B, free_bytes=int(11.6 * GIB), cpu_offload=False, vae_tiling=True)
    assert not kept.cpu_offload and kept.vae_tiling and kept.automatic == []
    cpu = choose_memory_policy(MODELS_13B, free_bytes=None)
    assert not cpu.cpu_offload and not cpu.vae_tiling and cpu.reason.startswith("not a GPU")
    assert set(cpu.to_dict()) == {
        "cpu_offload",
        "vae_tiling",
        "automatic",
        "free_bytes",
        "total_bytes",
        "model_bytes",
        "reason",
    }


def test_runtime_options_accept_automatic_and_refuse_other_values():
    assert RuntimeOptions().cpu_offload is None and RuntimeOptions().vae_tiling is None
    assert RuntimeOptions(device="meta", cpu_offload=True).cpu_offload
    with pytest.raises(SettingsError, match="cpu_offload must be true, false or null"):
        RuntimeOptions(cpu_offload="yes")
    with pytest.raises(SettingsError, match="cpu_offload needs a CUDA device"):
        RuntimeOptions(device="cpu", cpu_offload=True)


def test_out_of_memory_hint_names_the_option_that_would_help_here():
    resident = MemoryPolicy(cpu_offload=False, vae_tiling=False, free_bytes=int(11.6 * GIB))
    hint = out_of_memory_hint(resident)
    assert hint.startswith("Only 11.6 GiB") and "cpu_offload: true" in hint
    assert hint.index("cpu_offload") < hint.index("vae_tiling")
    offloaded = MemoryPolicy(cpu_offload=True, vae_tiling=False, free_bytes=int(6 * GIB))
    hint = out_of_memory_hint(offloaded)
    assert "cpu_offload" not in hint and "vae_tiling: true" in hint
    everything = MemoryPolicy(cpu_offload=True, vae_tiling=True, free_bytes=int(3 * GIB))
    hint = out_of_memory_hint(everything)
    assert "cpu_offload" not in hint and "vae_tiling" not in hint and "resolution" in hint


def test_worker_error_event_carries_the_machine_specific_hint():
    from engine.worker.server import Worker

    worker = Worker(io.StringIO())

    class Loaded:
        memory_policy = MemoryPolicy(cpu_offload=True, vae_tiling=False, free_bytes=int(6 * GIB))

    worker._pipeline = Loaded()
    fields = worker._error_fields("r1", RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert fields["error_type"] == "out_of_memory" and "vae_tiling: true" in fields["hint"]
    assert "cpu_offload" not in fields["hint"]


@pytest.fixture(scope="module")
def prediction():
    network = build_visible_anysplat(seed=3, embed_dim=32)
    images = torch.rand(3, 3, 28, 42, generator=torch.Generator().manual_seed(4))
    return network.predict(images)


@pytest.mark.parametrize("voxel_size", [None, 0.05])
@pytest.mark.parametrize("relative", [True, False])
def test_chunked_post_processing_equals_the_official_path(prediction, voxel_size, relative):
    """The chunked scene (only the written fields) = official Gaussians -> scene -> change of frame."""
    reference = prediction.gaussians(voxel_size).to_scene()
    if relative:
        _, transform = _cameras_from_pose(prediction.pose_enc, prediction.image_size, prediction.fov_eps, 0, True)
        reference = transform_gaussian_scene(reference, transform)
    chunked = prediction.gaussian_scene(voxel_size=voxel_size, relative_to_first=relative, chunk_size=100)
    whole = prediction.gaussian_scene(voxel_size=voxel_size, relative_to_first=relative, chunk_size=1 << 20)
    assert len(chunked) == len(reference) and (voxel_size is None) == (len(reference) == 3 * 28 * 42)
    for name in ("means", "rotations", "log_scales", "opacity_logits", "sh"):
        got, want = getattr(chunked, name), getattr(reference, name)
        scale = want.abs().max().clamp_min(1e-6)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(scale)), name
        assert torch.equal(got, getattr(whole, name)) or voxel_size is not None, name
