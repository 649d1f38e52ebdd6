"""Generation pipeline on tiny configurations of the real classes (UMT5, Wan transformer, Wan VAE, UniPC,
and the real stitched decoder: a tiny AnySplat behind a Wan-shaped stitching conv)."""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import pytest
import torch
from test_pipeline_tiny import (
    DECODER_SIZE,
    GAUSSIANS_PER_RUN,
    build_lora_adapter,
    build_tiny_bundle,
    tiny_settings,
)

from engine.geometry.cameras import interpolate_cameras, look_at
from engine.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix
from engine.io import read_cameras_json, read_gaussian_ply, read_point_ply
from engine.pipeline.run_folder import (
    OUTPUT_FILES,
    read_run_metadata,
    regenerate,
    write_outputs,
)
from engine.pipeline.settings import (
    BUNDLE_MANIFEST,
    ModelBundle,
    ModelBundleError,
    ModelNotFoundError,
    RuntimeOptions,
    SettingsError,
)
from engine.pipeline.vist3a import (
    GenerationCancelled,
    ModelLoadError,
    Vist3aPipeline,
    apply_lora_adapter,
)
from engine.scene import Cameras

CPU = RuntimeOptions(device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models are dominated by thread overhead on a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.getbasetemp() / "tiny-bundle")


@pytest.fixture(scope="module")
def lora_bundle_dir(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.getbasetemp() / "tiny-bundle-lora", with_lora=True)


@pytest.fixture(scope="module")
def pipeline(bundle_dir):
    return Vist3aPipeline.from_pretrained(bundle_dir, runtime=CPU)


@pytest.fixture(scope="module")
def result(pipeline):
    return pipeline.generate(tiny_settings())


# ----------------------------------------------------------------------------- settings and bundles


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prompt": "  "}, "prompt"),
        ({"num_frames": 6}, "num_frames"),
        ({"num_frames": 1}, "num_frames"),
        ({"height": 40}, "height"),
        ({"width": 0}, "width"),
        ({"num_steps": 0}, "num_steps"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"flow_shift": 0}, "flow_shift"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"output_kind": "mesh"}, "output_kind"),
        ({"orbit_template": "yes"}, "orbit_template"),
    ],
)
def test_settings_out_of_range_are_refused_with_the_field_named(changes, message):
    with pytest.raises(SettingsError, match=message):
        tiny_settings(**changes)


def test_settings_round_trip_and_unknown_keys():
    settings = tiny_settings(seed=3)
    assert type(settings).from_dict(settings.to_dict()) == settings
    with pytest.raises(SettingsError, match="unknown field.*stpes"):
        type(settings).from_dict({"prompt": "x", "stpes": 3})
    assert settings.full_prompt.endswith("a red house") and settings.full_prompt != "a red house"
    assert tiny_settings(orbit_template=False).full_prompt == "a red house"


def test_runtime_options_validation():
    with pytest.raises(SettingsError, match="device"):
        RuntimeOptions(device="gpu")
    with pytest.raises(SettingsError, match="dtype"):
        RuntimeOptions(dtype="float64")
    with pytest.raises(SettingsError, match="cpu_offload needs a CUDA"):
        RuntimeOptions(device="cpu", cpu_offload=True)


def test_bundle_errors_name_the_missing_part(tmp_path, bundle_dir):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        ModelBundle.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=BUNDLE_MANIFEST):
        ModelBundle.load(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / BUNDLE_MANIFEST).write_text('{"format": "other"}')
    with pytest.raises(ModelBundleError, match="format"):
        ModelBundle.load(tmp_path / "bad")
    manifest = json.loads((bundle_dir / BUNDLE_MANIFEST).read_text())
    broken = ModelBundle.from_manifest({**manifest, "lora": "no-such-adapter"}, bundle_dir)
    with pytest.raises(ModelNotFoundError, match="LoRA adapter folder"):
        broken.check_files()
    unknown_kind = ModelBundle.from_manifest({**manifest, "decoder": {**manifest["decoder"], "kind": "x"}}, bundle_dir)
    with pytest.raises(ModelLoadError, match="unknown decoder kind 'x'"):
        Vist3aPipeline.from_pretrained(unknown_kind, runtime=CPU)


def test_missing_component_file_is_model_not_found(tmp_path, bundle_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    for weights in (copy / "wan" / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelNotFoundError, match="vae"):
        Vist3aPipeline.from_pretrained(copy, runtime=CPU)


# ----------------------------------------------------------------------------- generation


def test_generate_shapes_and_records(result, pipeline):
    assert result.latent.shape == (1, 16, 2, 4, 4)
    assert result.frames.shape == (5, 3, 32, 32) and 0 <= result.frames.min() and result.frames.max() <= 1
    assert len(result.cameras) == 5 and result.depth.shape == (5, DECODER_SIZE, DECODER_SIZE)
    assert len(result.scene) == GAUSSIANS_PER_RUN
    assert result.settings.seed == 7 and result.model["decoder"]["kind"] == "stitched"
    assert set(result.timings) >= {"load", "sample", "decode_video", "decode_scene"}


def test_same_seed_same_latent_other_seed_other_latent(pipeline, result):
    again = pipeline.generate(tiny_settings())
    other = pipeline.generate(tiny_settings(seed=8))
    assert torch.equal(again.latent, result.latent)
    assert torch.equal(again.scene.means, result.scene.means)
    assert not torch.allclose(other.latent, result.latent)


def test_random_seed_is_drawn_and_recorded(pipeline):
    first = pipeline.generate(tiny_settings(seed=None, num_steps=1))
    second = pipeline.generate(tiny_settings(seed=None, num_steps=1))
    assert first.settings.seed is not None and first.settings.seed != second.settings.seed
    replay = pipeline.generate(tiny_settings(seed=first.settings.seed, num_steps=1))
    assert torch.equal(replay.latent, first.latent)


def test_progress_sequence_and_previews(pipeline):
    events = []
    pipeline.generate(
        tiny_settings(num_steps=4),
        progress=lambda stage, step, total, preview: events.append((stage, step, total, preview)),
        preview_every=2,
    )
    assert [(s, i, n) for s, i, n, _ in events] == [
        ("encode_prompt", 1, 1),
        ("denoise", 1, 4),
        ("denoise", 2, 4),
        ("denoise", 3, 4),
        ("denoise", 4, 4),
        ("decode_video", 1, 1),
        ("decode_scene", 1, 1),
    ]
    previews = [p for s, i, n, p in events if p is not None]
    assert [i for s, i, n, p in events if p is not None] == [2, 4]
    assert previews[0].shape == (16, 16, 3) and previews[0].dtype.name == "uint8"


def test_cancel_between_steps(pipeline):
    cancel = threading.Event()
    steps = []

    def progress(stage, step, total, preview):
        steps.append((stage, step))
        if stage == "denoise" and step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        pipeline.generate(tiny_settings(num_steps=5), progress=progress, cancel=cancel)
    assert steps[-1] == ("denoise", 2)


def test_text_embeddings_are_cached_by_text(pipeline, monkeypatch):
    calls = []
    original = pipeline.text_encoder.forward
    monkeypatch.setattr(pipeline.text_encoder, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    pipeline.generate(tiny_settings(prompt="a blue tree", num_steps=1))
    assert len(calls) == 1  # the negative prompt was cached by earlier tests; the new prompt was not
    pipeline.generate(tiny_settings(prompt="a blue tree", num_steps=1, seed=1))
    assert len(calls) == 1
    pipeline.generate(tiny_settings(prompt="a blue tree", num_steps=1, reuse_text_embeddings=False))
    assert len(calls) == 3


def test_guidance_scale_one_runs_one_pass_per_step(pipeline, monkeypatch):
    calls = []
    original = pipeline.transformer.forward
    monkeypatch.setattr(pipeline.transformer, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    pipeline.generate(tiny_settings(num_steps=2, guidance_scale=1.0))
    assert len(calls) == 2
    pipeline.generate(tiny_settings(num_steps=2))
    assert len(calls) == 2 + 4


def test_scheduler_is_flow_matching_with_the_settings_shift(pipeline):
    scheduler = pipeline.make_scheduler(tiny_settings(flow_shift=5.0, num_steps=10))
    assert scheduler.config.prediction_type == "flow_prediction" and scheduler.config.use_flow_sigmas
    assert scheduler.config.flow_shift == 5.0 and len(scheduler.timesteps) == 10


def test_points_output_from_gaussians(pipeline):
    result = pipeline.generate(tiny_settings(num_steps=1, output_kind="points"))
    assert type(result.scene).__name__ == "PointScene" and len(result.scene) == GAUSSIANS_PER_RUN
    assert result.scene.colors.min() >= 0 and result.scene.colors.max() <= 1


@pytest.fixture(scope="module")
def points_bundle_dir(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.getbasetemp() / "tiny-bundle-points", with_points_decoder=True)


def test_points_decoder_makes_the_points_and_the_main_decoder_the_gaussians(points_bundle_dir, result):
    pipe = Vist3aPipeline.from_pretrained(points_bundle_dir, runtime=CPU)
    assert pipe.model_identity["points_decoder"]["class"] == "StitchedSceneDecoder"
    assert pipe.points_decoder.decoder.model_type == "vggt" and pipe.decoder.decoder.model_type == "anysplat"
    gaussians = pipe.generate(tiny_settings())
    # the same bundle without its points decoder: the Wan parts and the main decoder are the same files
    assert torch.equal(gaussians.latent, result.latent)
    assert torch.allclose(gaussians.scene.means, result.scene.means)
    points = pipe.generate(tiny_settings(output_kind="points"))
    assert type(points.scene).__name__ == "PointScene" and len(points.scene) == GAUSSIANS_PER_RUN
    # the pointmap network's own points and cameras, not the Gaussians' centres
    assert not torch.allclose(points.scene.points, gaussians.scene.means, atol=1e-3)
    assert not torch.allclose(points.cameras.camera_to_world, gaussians.cameras.camera_to_world, atol=1e-4)
    assert torch.allclose(points.cameras.camera_to_world[0], torch.eye(4), atol=1e-5)  # world = first camera
    assert points.scene.colors.min() >= 0 and points.scene.colors.max() <= 1
    # voxel merging is a Gaussians option (this bundle has no voxel size: the main decoder refuses it);
    # the pointmap is never merged
    with pytest.raises(ValueError, match="voxel"):
        pipe.generate(tiny_settings(voxel_merge=True))
    merged = pipe.generate(tiny_settings(output_kind="points", voxel_merge=True))
    assert torch.equal(merged.scene.points, points.scene.points)


def test_points_decoder_round_trips_through_the_manifest_and_save(points_bundle_dir, tmp_path):
    bundle = ModelBundle.load(points_bundle_dir)
    assert bundle.has_points_decoder and bundle.points_decoder_path == points_bundle_dir / "points_decoder"
    assert ModelBundle.from_manifest(bundle.to_manifest(), points_bundle_dir) == bundle
    pipe = Vist3aPipeline.from_pretrained(bundle, runtime=CPU)
    saved = ModelBundle.load(pipe.save_pretrained(tmp_path / "saved"))
    assert saved.points_decoder_checkpoint == "points_decoder" and saved.points_decoder_path.is_dir()
    again = Vist3aPipeline.from_pretrained(saved, runtime=CPU)
    first = pipe.generate(tiny_settings(output_kind="points"))
    second = again.generate(tiny_settings(output_kind="points"))
    assert torch.allclose(first.scene.points, second.scene.points, atol=1e-5)


def test_points_decoder_errors_name_it(points_bundle_dir, tmp_path):
    manifest = json.loads((points_bundle_dir / BUNDLE_MANIFEST).read_text())
    bad = dict(manifest, points_decoder={"kind": "stitched"})
    with pytest.raises(ModelBundleError, match="points_decoder"):
        ModelBundle.from_manifest(bad, points_bundle_dir)
    missing = ModelBundle.from_manifest(
        dict(manifest, points_decoder={"kind": "stitched", "checkpoint": "nowhere"}), points_bundle_dir
    )
    with pytest.raises(ModelNotFoundError, match="points decoder checkpoint"):
        missing.check_files()


# ----------------------------------------------------------------------------- LoRA


def test_lora_adapter_from_peft_folder_changes_the_output(lora_bundle_dir, result):
    with_lora = Vist3aPipeline.from_pretrained(lora_bundle_dir, runtime=CPU)
    lora_result = with_lora.generate(tiny_settings())
    assert not torch.allclose(lora_result.latent, result.latent)
    assert with_lora.model_identity["lora"]["files"] >= 2
    assert "lora" not in "".join(name for name, _ in with_lora.transformer.named_parameters())  # merged


def test_lora_adapter_that_does_not_fit_is_refused(tmp_path, pipeline):
    from diffusers import WanTransformer3DModel

    other = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, text_dim=32, freq_dim=32, ffn_dim=32,
        num_layers=1, rope_max_seq_len=32,
    )  # fmt: skip
    adapter = build_lora_adapter(other, tmp_path / "adapter")
    with pytest.raises(ModelLoadError, match="does not fit"):
        apply_lora_adapter(pipeline.transformer.__class__.from_config(pipeline.transformer.config), adapter)


# ----------------------------------------------------------------------------- outputs


def test_write_outputs_writes_every_file(tmp_path, result):
    out = write_outputs(result, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    for name in ("frames.mp4", "depth.mp4", "flythrough.mp4"):
        assert (out / name).stat().st_size > 0
    assert len(read_gaussian_ply(out / "scene.ply").means) == len(result.scene)
    assert len(read_cameras_json(out / "cameras.json").camera_to_world) == 5
    metadata = read_run_metadata(out)
    assert metadata["settings"] == result.settings.to_dict() and metadata["seed"] == 7
    assert {"engine", "torch", "diffusers"} <= set(metadata["versions"])
    assert metadata["outputs"]["flythrough_frames"] == 5 + 4 * 3
    assert "write_outputs" in metadata["timings"] and metadata["model"]["wan"]["quick_sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(FileExistsError):
        write_outputs(result, out)


@pytest.mark.parametrize("decoder_depth", [True, False])
def test_write_outputs_without_the_flythrough_renders_only_what_it_writes(tmp_path, result, monkeypatch, decoder_depth):
    import imageio.v3 as iio

    from engine.pipeline import run_folder

    assert result.depth is not None  # the tiny stitched decoder predicts depth
    run = result if decoder_depth else dataclasses.replace(result, depth=None, timings=dict(result.timings))
    rendered = []  # poses_between of every render
    original = run_folder.render_flythrough
    monkeypatch.setattr(
        run_folder, "render_flythrough", lambda *a, **k: rendered.append(k["poses_between"]) or original(*a, **k)
    )
    events = []
    out = write_outputs(run, tmp_path / "run", flythrough=False, progress=lambda *event: events.append(event))
    assert sorted(p.name for p in out.iterdir()) == sorted(set(OUTPUT_FILES) - {"flythrough.mp4"})
    outputs = read_run_metadata(out)["outputs"]
    assert outputs["flythrough_frames"] == 0
    # The decoder's depth needs no render at all; without it only the 5 predicted cameras are rendered.
    assert rendered == ([] if decoder_depth else [0])
    assert outputs["depth_source"] == ("decoder" if decoder_depth else "rendered")
    assert len(iio.imread(out / "depth.mp4")) == 5
    steps = [(step, total) for stage, step, total, _ in events]
    assert [step for step, _ in steps] == list(range(1, len(OUTPUT_FILES))) and {t for _, t in steps} == {5}


def test_point_outputs(tmp_path, pipeline):
    result = pipeline.generate(tiny_settings(num_steps=1, output_kind="points"))
    out = write_outputs(result, tmp_path / "run")
    assert len(read_point_ply(out / "scene.ply").points) == GAUSSIANS_PER_RUN


def test_cancel_while_writing_leaves_no_folder(tmp_path, result):
    cancel = threading.Event()

    def progress(stage, step, total, preview):
        if step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        write_outputs(result, tmp_path / "run", progress=progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_regenerate_from_metadata_reproduces_the_scene(tmp_path, result, pipeline, bundle_dir):
    first = write_outputs(result, tmp_path / "first")
    second = regenerate(first / "metadata.json", tmp_path / "second", pipeline=pipeline)
    assert (first / "scene.ply").read_bytes() == (second / "scene.ply").read_bytes()
    assert (first / "cameras.json").read_bytes() == (second / "cameras.json").read_bytes()


# ----------------------------------------------------------------------------- camera interpolation


def test_interpolated_cameras_slerp_rotations_and_lerp_centres():
    angle = torch.tensor([0.0, math.pi / 2])
    eyes = torch.stack([3 * torch.sin(angle), torch.zeros(2), -3 * torch.cos(angle)], -1)
    c2w = look_at(eyes, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
    k = torch.stack([Cameras.intrinsics_from_fov(1.0, 32, 32), Cameras.intrinsics_from_fov(0.5, 32, 32)])
    path = interpolate_cameras(Cameras(c2w, k, 32, 32), poses_between=1)
    assert len(path) == 3
    assert torch.allclose(path.camera_to_world[[0, 2]], c2w, atol=1e-6)
    middle = path.camera_to_world[1]
    # halfway rotation: the forward axis bisects the two forward axes; the centre is on the chord
    halfway_forward = torch.nn.functional.normalize(c2w[0, :3, 2] + c2w[1, :3, 2], dim=0)
    assert torch.allclose(middle[:3, 2], halfway_forward, atol=1e-5)
    assert torch.allclose(middle[:3, :3] @ middle[:3, :3].T, torch.eye(3), atol=1e-5)
    assert torch.allclose(middle[:3, 3], (eyes[0] + eyes[1]) / 2, atol=1e-5)
    assert torch.allclose(path.intrinsics[1], k.mean(0), atol=1e-4)


def test_quaternion_round_trip():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(64, 4, dtype=torch.float64), dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    assert torch.allclose(matrix_to_quaternion(quaternion_to_matrix(q)), q, atol=1e-9)


def test_stitched_decoder_behind_the_pipeline_interface(pipeline, result):
    # The real stitched decoder: frames resized to its token grid x patch, one camera and depth map per frame.
    assert type(pipeline.decoder).__name__ == "StitchedSceneDecoder"
    assert len(result.cameras) == 5 and (result.cameras.width, result.cameras.height) == (DECODER_SIZE, DECODER_SIZE)
    assert len(result.scene) == GAUSSIANS_PER_RUN
    assert torch.allclose(result.cameras.camera_to_world[0], torch.eye(4), atol=1e-5)  # world = first camera
    assert torch.isfinite(result.scene.means).all() and torch.isfinite(result.cameras.intrinsics).all()


def test_generate_command_line(tmp_path, bundle_dir, capsys, caplog):
    from engine.cli import main

    argv = ["generate", "a red house", "--model", str(bundle_dir), "--out", str(tmp_path / "run")]
    argv += ["--frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--seed", "4", "--device", "cpu"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "run")
    assert read_run_metadata(tmp_path / "run")["settings"]["num_steps"] == 2
    assert (
        main(["generate", "--from-metadata", str(tmp_path / "run" / "metadata.json"), "--out", str(tmp_path / "again")])
        == 0
    )
    assert (tmp_path / "run" / "scene.ply").read_bytes() == (tmp_path / "again" / "scene.ply").read_bytes()
    assert main(argv[:-2] + ["--frames", "6"]) == 2  # invalid setting: clear message, exit status 2
    # named by the option the user gave, not by the setting's field name
    assert "--frames must be 4k+1" in caplog.text and "num_frames" not in caplog.text
    caplog.clear()
    assert main(argv[:-2] + ["--height", "40"]) == 2
    assert "--height must be a multiple of 16" in caplog.text
