"""The before/after figures of reward finetuning (engine.alignment.evaluate, benchmarks/default_alignment.py)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.alignment.evaluate import compare, scene_figures, summarize
from engine.data import generate_scene
from engine.pipeline.settings import ModelBundle, RuntimeOptions
from engine.pipeline.vist3a import Vist3aPipeline
from engine.render import rasterize
from engine.testing.tiny import build_tiny_bundle, build_tiny_clip_scorer

SMALL = {"num_frames": 5, "height": 32, "width": 32, "num_steps": 2, "guidance_scale": 2.0}
CPU = RuntimeOptions(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    plain = build_tiny_bundle(root / "plain", visible=True, defaults=SMALL)
    lora = build_tiny_bundle(root / "lora", visible=True, defaults=SMALL, with_lora=True)
    return plain, lora


def test_scene_figures_measure_the_renders_against_the_frames_the_decoder_read(bundles):
    plain, _ = bundles
    pipe = Vist3aPipeline.from_pretrained(str(plain), runtime=CPU)
    scorer = build_tiny_clip_scorer().eval()
    scene = generate_scene(7)
    settings = (
        ModelBundle.load(plain)
        .generation_settings({"prompt": scene.caption, "seed": 3})
        .resolved(pipe.default_conditioning)
    )
    figures = scene_figures(pipe, scene, settings, scorer)

    # the same decode and render, done here by hand
    latent = pipe.denormalize_latent(pipe.sample_latent(settings, 3))
    frames = pipe.decode_frames(latent).clamp(0, 1)
    decoded = pipe.decoder.decode(latent, frames, voxel_merge=False, relative_to_first=False, clamp_frames=True)
    renders = rasterize(decoded.gaussians, decoded.cameras, background=(0.0, 0.0, 0.0)).rgb.permute(0, 3, 1, 2)
    renders = renders.clamp(0, 1)
    mse = float((renders - decoded.frames).pow(2).mean())
    assert figures.consistency_psnr == pytest.approx(-10 * math.log10(mse), abs=1e-3)
    assert figures.consistency_l1 == pytest.approx(float((renders - decoded.frames).abs().mean()), abs=1e-5)
    prompts = [scene.caption] * renders.shape[0]
    with torch.no_grad():
        assert figures.clip_rendered == pytest.approx(float(scorer(renders, prompts).mean()), abs=1e-5)
        assert figures.clip_decoded == pytest.approx(float(scorer(decoded.frames, prompts).mean()), abs=1e-5)
    assert len(figures.colors_visible) == len(scene.objects)
    assert len(figures.relations_correct) == len(scene.relations)
    pipe.release()


def test_compare_is_repeatable_and_sees_the_lora(bundles):
    plain, lora = bundles
    scenes = [generate_scene(seed) for seed in (1, 2)]
    scorer = build_tiny_clip_scorer().eval()
    results = compare([str(plain), str(lora)], scenes, scorer, runtime=CPU)
    first, with_lora = results[str(plain)], results[str(lora)]
    assert first["captions"] == 2 and with_lora["captions"] == 2
    # the same model over the same captions and seeds gives the same figures: rows differ only by the model
    again = compare([str(plain)], scenes, scorer, runtime=CPU)[str(plain)]
    assert again == pytest.approx(first)
    assert with_lora["consistency_psnr"] != pytest.approx(first["consistency_psnr"], abs=1e-6)
    assert set(first) == {
        "captions", "consistency_psnr", "consistency_l1", "clip_decoded", "clip_rendered",
        "color_accuracy", "relation_accuracy", "relations",
    }  # fmt: skip


def test_summarize_pools_objects_and_relations():
    from engine.alignment.evaluate import SceneFigures

    a = SceneFigures(20.0, 0.1, 0.5, 0.4, [True, False], [True])
    b = SceneFigures(30.0, 0.2, 0.7, 0.6, [True, True, True], [False, False])
    summary = summarize([a, b])
    assert summary["consistency_psnr"] == pytest.approx(25.0)
    assert summary["color_accuracy"] == pytest.approx(4 / 5)
    assert summary["relation_accuracy"] == pytest.approx(1 / 3) and summary["relations"] == 3


def test_the_benchmark_compares_the_default_model_with_itself_without_its_lora(tmp_path):
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("default_alignment", root / "benchmarks" / "default_alignment.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)

    shipped = ModelBundle.load(root / "models" / "default")
    base = ModelBundle.load(benchmark.without_lora(root / "models" / "default", tmp_path))
    base.check_files()  # every part the manifest names, its points decoder included, is found
    assert base.lora is None and shipped.lora is not None
    assert base.decoder_path.resolve() == shipped.decoder_path.resolve()
    assert base.points_decoder_path.resolve() == shipped.points_decoder_path.resolve()
