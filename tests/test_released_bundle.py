"""The released VIST3A model the way a user gets it: bundle folders laid out as hub downloads, ids resolved
offline from a Hugging Face cache, loaded through the library, the CLI and the worker (no model objects
injected anywhere).

The stand-ins are tiny (``engine.testing.tiny.build_tiny_released_layout``): ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``
and ``lhjiang/anysplat`` as hub-cache snapshots, and the ``HJGO/VIST3A`` download (``anysplat_stitched.pth``
in the released key layout, ``vist3a_1.3b_lora_ema/``) with the README's ``vist3a.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.io import read_gaussian_ply
from engine.pipeline.settings import GenerationSettings, ModelBundle, ModelNotFoundError, RuntimeOptions
from engine.pipeline.vist3a import Vist3aPipeline
from engine.testing.tiny import (
    RELEASED_ANYSPLAT_ID,
    RELEASED_WAN_ID,
    build_stitched_decoder,
    build_tiny_released_layout,
)

REPO = Path(__file__).resolve().parents[1]
PIXELS = 5 * 28 * 28  # 5 frames, 28 x 28 decoder input: one Gaussian per pixel without merging
# gohyojun15/VIST3A @ 32253c3, inference_t23d.py: the official prompt wrapping and negative prompt.
OFFICIAL_TEMPLATE = (
    "The camera rotates around the scene, maintaining constant distance: `{prompt}`. "
    "The orbiting trajectory captures 3D structure and consistency."
)
OFFICIAL_NEGATIVE = (
    "Background blur, Blurred background, Blurred scene, Artifacts, not aesthetic, not realistic, rendered noise, "
    "low quality movement, low quality video, low quality image, deformed, disfigured, distorted, extra limbs, "
    "cloned face, skinny, glitchy, double torso, extra arms, extra hands, mangled fingers, missing lips, ugly face, "
    "distorted legs, fused fingers, too many fingers, long neck"
)
TINY = dict(prompt="a red house", num_frames=5, height=32, width=32, num_steps=2, seed=5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """(hub cache, released bundle folder)."""
    root = tmp_path_factory.mktemp("released")
    bundle = build_tiny_released_layout(root / "hub", root / "HJGO-VIST3A")
    return root / "hub", bundle


@pytest.fixture
def offline_cache(layout, monkeypatch):
    """The stand-in cache as this process's Hugging Face cache, offline."""
    import huggingface_hub.constants as constants

    cache, _ = layout
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _offline_env(cache: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env.pop("PYTHONSTARTUP", None)
    env.pop("HF_HOME", None)
    return env


def test_layout_is_what_a_download_gives(layout):
    cache, bundle = layout
    manifest = json.loads((bundle / "vist3a.json").read_text())
    assert manifest["wan"] == RELEASED_WAN_ID and manifest["extra"] == {"anysplat": RELEASED_ANYSPLAT_ID}
    assert manifest["decoder"] == {"kind": "anysplat-stitched", "checkpoint": "anysplat_stitched.pth"}
    assert sorted(p.name for p in bundle.iterdir()) == ["anysplat_stitched.pth", "vist3a.json", "vist3a_1.3b_lora_ema"]
    wan = cache / "models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers"
    revision = (wan / "refs" / "main").read_text()
    assert (wan / "snapshots" / revision / "model_index.json").is_file()
    assert not (wan / "snapshots" / revision / "tokenizer" / "config.json").exists()  # as on the hub


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_released_bundle_generates_offline_at_every_dtype(offline_cache, layout, dtype):
    """Every dtype the settings accept runs end to end on the CPU, with the official precision policy."""
    _, bundle = layout
    name = str(dtype).removeprefix("torch.")
    pipeline = Vist3aPipeline.from_pretrained(bundle, runtime=RuntimeOptions(device="cpu", dtype=name))
    network = pipeline.decoder.decoder.network
    assert {p.dtype for p in network.aggregator.parameters()} == {dtype}
    heads = [network.encoder.camera_head, network.encoder.depth_head, network.encoder.gaussian_param_head]
    assert {p.dtype for head in heads for p in head.parameters()} == {torch.float32}
    assert pipeline.transformer.dtype == dtype

    result = pipeline.generate(GenerationSettings(**TINY))
    assert result.settings.conditioning == "released"
    assert result.full_prompt == OFFICIAL_TEMPLATE.format(prompt="a red house")
    assert result.settings.negative_prompt == OFFICIAL_NEGATIVE
    scene = result.scene
    assert 0 < len(scene) < PIXELS  # voxel merged by default (released configuration, 0.002)
    assert scene.means.dtype == torch.float32 and bool(torch.isfinite(scene.means).all())
    assert len(result.cameras) == 5 and bool(torch.isfinite(result.cameras.camera_to_world).all())

    unmerged = pipeline.generate(GenerationSettings(**TINY, voxel_merge=False))
    assert len(unmerged.scene) == PIXELS


def test_missing_cache_entry_names_the_hub_id(layout, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    _, bundle = layout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="Wan-AI/Wan2.1-T2V-1.3B-Diffusers is not in the Hugging Face cache"):
        Vist3aPipeline.from_pretrained(bundle, runtime=RuntimeOptions(device="cpu"))


def test_stitched_kind_with_hub_wan_and_lora(offline_cache, layout, tmp_path):
    """Our own decoder kind beside a Wan pipeline given by hub id and a LoRA folder."""

    _, released = layout
    build_stitched_decoder(seed=2).save_pretrained(tmp_path / "decoder")
    (tmp_path / "lora").symlink_to(released / "vist3a_1.3b_lora_ema", target_is_directory=True)
    ModelBundle(
        root=tmp_path,
        name="ours",
        wan=RELEASED_WAN_ID,
        decoder_kind="stitched",
        decoder_checkpoint="decoder",
        lora="lora",
    ).save()
    for dtype in ("float32", "bfloat16"):
        pipeline = Vist3aPipeline.from_pretrained(tmp_path, runtime=RuntimeOptions(device="cpu", dtype=dtype))
        result = pipeline.generate(GenerationSettings(**TINY))
        assert result.settings.conditioning == "ours" and len(result.scene) == PIXELS  # no merge by default
        assert bool(torch.isfinite(result.scene.means).all())


def test_cli_generates_from_the_released_bundle_offline(layout, tmp_path):
    cache, bundle = layout
    out = tmp_path / "run"
    command = [sys.executable, "-m", "engine", "generate", "a red house", "--model", str(bundle), "--out", str(out)]
    command += ["--frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--seed", "4", "--device", "cpu"]
    done = subprocess.run(command, cwd=REPO, env=_offline_env(cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["settings"]["conditioning"] == "released"
    assert metadata["settings"]["negative_prompt"] == OFFICIAL_NEGATIVE
    assert metadata["full_prompt"] == OFFICIAL_TEMPLATE.format(prompt="a red house")
    policy = metadata["memory_policy"]  # recorded; on the CPU there is nothing to offload
    assert policy["cpu_offload"] is False and policy["reason"].startswith("not a GPU")
    assert set(policy["model_bytes"]) == {"text_encoder", "transformer", "vae", "decoder"}
    scene = read_gaussian_ply(out / "scene.ply")
    assert 0 < len(scene) < PIXELS


def test_worker_generates_from_the_released_bundle_offline(layout, tmp_path):
    from engine.worker.client import WorkerProcess

    cache, bundle = layout
    worker = WorkerProcess(
        command=[sys.executable, "-m", "engine.worker"],
        extra_args=["--log-file", str(tmp_path / "worker.log")],
        cwd=str(REPO),
        env=_offline_env(cache),
        stderr=open(tmp_path / "stderr.txt", "wb"),  # noqa: SIM115 - closed with the process
    )
    worker.start(timeout=120)
    try:
        settings = {**TINY, "voxel_merge": False}
        final = worker.request(
            "generate", timeout=600, settings=settings, model=str(bundle), output_dir=str(tmp_path / "a")
        )
        assert final["type"] == "result", final
    finally:
        worker.close()
    metadata = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert metadata["settings"]["conditioning"] == "released" and metadata["settings"]["voxel_merge"] is False
    assert len(read_gaussian_ply(tmp_path / "a" / "scene.ply")) == PIXELS
