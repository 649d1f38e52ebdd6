"""Self-distillation finetuning on tiny models: LoRA targets, schedule, resume, CLI, clips."""

from __future__ import annotations

import argparse
import copy
import json
import math

import pytest
import torch
from torch import nn

from engine.stitching.clips import FolderClips, MixedClips, SyntheticClips
from engine.stitching.decoder import StitchedDecoder, VAEReference
from engine.stitching.train import color_jitter, render_psnr, view_counts, warmup_cosine
from engine.stitching.train_cli import add_train_parser
from engine.testing.tiny import tiny_trainer

torch.set_num_threads(1)


def make_trainer(out_dir=None, **overrides):
    return tiny_trainer(out_dir, **overrides)


def test_lora_targets_every_linear_and_conv2d_of_the_kept_part_and_only_those():
    from peft.tuners.lora import LoraLayer

    trainer = make_trainer()
    student, teacher = trainer.student, trainer.teacher
    wrapped = {name for name, m in student.network.named_modules() if isinstance(m, LoraLayer)}
    expected = {
        name
        for name, m in teacher.named_modules()
        if type(m) in (nn.Linear, nn.Conv2d)
        and not name.startswith(
            ("encoder.aggregator.patch_embed.patch_embed", "encoder.aggregator.patch_embed.blocks.0.")
        )
    }
    assert wrapped == expected
    transposed = [n for n, m in teacher.named_modules() if isinstance(m, nn.ConvTranspose2d)]
    assert transposed and not wrapped & set(transposed)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    tokens = {f"network.encoder.aggregator.patch_embed.{t}" for t in ("cls_token", "register_tokens", "mask_token")}
    assert {"stitching_layer.weight", "stitching_layer.bias"} | tokens <= trainable
    others = trainable - tokens - {"stitching_layer.weight", "stitching_layer.bias"}
    assert others and all(".lora_A." in n or ".lora_B." in n for n in others)
    assert len(others) == 2 * len(expected)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_schedule_views_and_jitter():
    assert warmup_cosine(0, 500, 10000) == pytest.approx(1 / 500)
    assert warmup_cosine(499, 500, 10000) == pytest.approx(1.0)
    assert warmup_cosine(5250, 500, 10000) == pytest.approx(0.5)
    assert warmup_cosine(10000, 500, 10000) == pytest.approx(0.0)
    wan = VAEReference("AutoencoderKLWan", 16, 8, 4)
    assert view_counts((9, 21), wan) == [9, 13, 17, 21]
    with pytest.raises(ValueError, match="no view count"):
        view_counts((10, 12), wan)
    frames = torch.rand(2, 3, 3, 8, 8)
    jittered = color_jitter(frames, 0.3, torch.Generator().manual_seed(0))
    assert jittered.shape == frames.shape and 0 <= jittered.min() and jittered.max() <= 1
    assert not torch.allclose(jittered, frames)
    assert torch.equal(color_jitter(frames, 0.3, torch.Generator().manual_seed(0)), jittered)


def test_clip_sources(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    scene = tmp_path / "scene_a" / "images"
    scene.mkdir(parents=True)
    for i in range(8):
        iio.imwrite(scene / f"frame_{i}.png", np.full((20, 30, 3), i * 10, dtype=np.uint8))
    source = FolderClips(tmp_path)
    clip = source.sample(5, 16, torch.Generator().manual_seed(1))
    assert clip.shape == (5, 3, 16, 16)
    levels = (clip[:, 0, 0, 0] * 255).round() / 10
    assert torch.equal(levels.diff(), torch.ones(4))  # consecutive frames, in order
    with pytest.raises(ValueError, match="needs"):
        source.sample(9, 16, torch.Generator())
    mixed = MixedClips([source, SyntheticClips()], [1.0, 0.0])
    assert mixed.sample(3, 16, torch.Generator()).shape == (3, 3, 16, 16)


def test_clip_folders_read_photos_as_reconstruct_does(tmp_path):
    """Transparent pixels come out white and a Mac's hidden ``._`` files are neither frames nor scenes."""
    import imageio.v3 as iio
    import numpy as np

    scene = tmp_path / "scene"
    scene.mkdir()
    for i in range(5):
        rgba = np.zeros((16, 16, 4), dtype=np.uint8)
        rgba[..., 0] = 200
        rgba[:, 8:, 3] = 255  # left half fully transparent, right half opaque red
        iio.imwrite(scene / f"{i}.png", rgba)
        (scene / f"._{i}.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    hidden_only = tmp_path / "._copied"
    hidden_only.mkdir()
    (hidden_only / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    source = FolderClips(tmp_path)
    assert source.scenes == [scene]
    clip = source.sample(5, 16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(clip[:, :, :, :6], torch.ones(5, 3, 16, 6))  # transparent -> white
    torch.testing.assert_close(clip[:, 1, :, 10:], torch.zeros(5, 16, 6))  # opaque red keeps no green


def test_cli_help_and_parse(capsys):
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="cmd"))
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "--base-model" in capsys.readouterr().out
    args = parser.parse_args(["train", "--base-model", "m", "--vae", "v", "--out", "o", "--views", "9", "13"])
    assert args.views == [9, 13] and args.lr == 2e-4 and args.warmup == 500 and callable(args.func)


@pytest.mark.slow
def test_resume_continues_at_the_same_step_with_the_same_state(tmp_path):
    trainer = make_trainer(tmp_path / "run")
    trainer.train(1, progress=False)
    checkpoint = trainer.save_checkpoint()
    after = trainer.train_step()

    resumed = make_trainer(tmp_path / "run2")
    resumed.load_checkpoint(checkpoint)
    assert resumed.step == 1
    assert resumed.scheduler.last_epoch == 1
    state_a = resumed.optimizer.state_dict()["state"]
    assert state_a and all(int(s["step"]) == 1 for s in state_a.values())
    again = resumed.train_step()  # same RNG -> same clip, same update
    assert again["step"] == after["step"] == 2
    assert again["loss"] == pytest.approx(after["loss"], rel=1e-5)
    for name, param in trainer.trainable.items():
        torch.testing.assert_close(resumed.trainable[name], param, atol=1e-6, rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        resumed.load_checkpoint(tmp_path)


@pytest.mark.slow
def test_finetuning_lowers_l1_raises_render_psnr_and_export_matches(tmp_path):
    """A few steps on one synthetic clip lower the L1 to the (visible) tiny teacher and raise the PSNR of
    the student's Gaussians against the teacher's, both rendered at the teacher's cameras; the merged
    export reproduces the LoRA student."""

    trainer = make_trainer(tmp_path / "run")
    batch = trainer.targets(trainer.sample_batch())
    teacher_prediction = batch[2]
    # the teacher is visible: opaque Gaussians cover the frame, and the render is not a flat colour
    from engine.render import rasterize

    teacher_render = rasterize(
        teacher_prediction.gaussian_scene(relative_to_first=False, sh_degree=0),
        teacher_prediction.cameras(relative_to_first=False),
    )
    assert teacher_render.alpha.mean() > 0.9 and teacher_render.rgb.std() > 0.05

    before, _ = trainer.evaluate(batch)
    psnr_before = render_psnr(trainer.student.predict(*batch[:2]), teacher_prediction)
    for _ in range(8):
        trainer.train_step(batch)
    after, _ = trainer.evaluate(batch)
    student_prediction = trainer.student.predict(*batch[:2])
    psnr_after = render_psnr(student_prediction, teacher_prediction)
    print(f"L1 to teacher {before:.4f} -> {after:.4f}; render PSNR vs teacher {psnr_before:.2f} -> {psnr_after:.2f} dB")
    assert after < 0.8 * before
    assert psnr_after > psnr_before + 1.0
    assert render_psnr(teacher_prediction, teacher_prediction) >= 99  # identical renders hit the MSE floor

    exported = StitchedDecoder.from_pretrained(trainer.export(tmp_path / "export", dtype=None))
    assert exported.lora_info["rank"] == 4 and exported.lora_info["merged"]
    assert not any("lora" in k for k in exported.state_dict())
    merged_prediction = exported.predict(*batch[:2])
    torch.testing.assert_close(merged_prediction.depth, student_prediction.depth, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(merged_prediction.gaussian_raw, student_prediction.gaussian_raw, atol=1e-4, rtol=1e-4)

    # the default export stores fp16 weights (half the bytes) that load into the fp32 decoder
    from safetensors import safe_open

    half_dir = trainer.export(tmp_path / "export_fp16")
    with safe_open(str(half_dir / "model.safetensors"), "pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}
    assert (half_dir / "model.safetensors").stat().st_size < 0.6 * (
        tmp_path / "export" / "model.safetensors"
    ).stat().st_size
    assert json.loads((half_dir / "stitched_config.json").read_text())["dtype"] == "float16"
    half = StitchedDecoder.from_pretrained(half_dir)
    assert next(half.parameters()).dtype == torch.float32
    half_prediction = half.predict(*batch[:2])
    torch.testing.assert_close(half_prediction.depth, student_prediction.depth, atol=2e-2, rtol=2e-2)
    assert not torch.equal(half_prediction.depth, merged_prediction.depth)  # the rounding is real


@pytest.mark.slow
def _check_export_beats_the_search_init(run, search, model_dir, vae_dir, best_stage):
    """The merged export of a CLI run loads, predicts finite values and is closer to the teacher than the
    layer-search initialisation on unseen clips."""
    from engine.models.loading import load_model
    from engine.stitching.decoder import StitchedDecoder
    from engine.stitching.losses import PRESETS, distillation_loss
    from engine.stitching.train_cli import _stitching_init
    from engine.stitching.vae import load_video_vae

    exported = StitchedDecoder.from_pretrained(run / "export")
    assert exported.cut_stage == best_stage and exported.lora_info["steps"] == 5
    teacher, _ = load_model(model_dir)
    vae = load_video_vae(vae_dir)
    clips = []
    for seed in range(90, 94):  # unseen clips
        frames = SyntheticClips().sample(5, 32, torch.Generator().manual_seed(seed))[None]
        model_frames = torch.nn.functional.interpolate(frames[0], size=(56, 56), mode="bilinear", antialias=True)
        with torch.no_grad():
            target = teacher(model_frames[None])
        clips.append((vae.encode(frames, normalized=False), model_frames[None], target))
    layer, spec, stage = _stitching_init(search)
    initial = StitchedDecoder.from_network(teacher, stage, spec, exported.vae, layer).eval()  # cuts the teacher
    weights = PRESETS["anysplat"]
    l1_init = l1_export = 0.0
    for latent, model_frames, target in clips:
        prediction = exported.predict(latent, model_frames)
        for name in ("depth", "gaussian_raw", "pose_enc", "points"):
            assert torch.isfinite(getattr(prediction, name)).all(), name
        l1_init += float(distillation_loss(initial.predict(latent, model_frames), target, weights)[0]) / len(clips)
        l1_export += float(distillation_loss(prediction, target, weights)[0]) / len(clips)
    print(f"CLI run: L1 to teacher on 4 unseen clips, search init {l1_init:.4f} -> export {l1_export:.4f}")
    assert l1_export < l1_init


def test_cli_search_then_train_then_resume_end_to_end(tmp_path):
    """``stitch search`` -> ``stitch train --stitching-init`` -> ``stitch train --resume`` through the real
    CLI entry on saved tiny models: loss log, resumable checkpoints, a merged export that loads and
    predicts, and an export closer to the teacher than the layer-search initialisation."""
    import json

    from safetensors import safe_open

    from engine.cli import main
    from engine.models.checkpoint import save_checkpoint
    from engine.testing.tiny import FINETUNE_SPEC as TINY_SPEC
    from engine.testing.tiny import build_visible_anysplat, tiny_wan_vae

    model_dir, vae_dir = save_checkpoint(build_visible_anysplat(), tmp_path / "model"), tmp_path / "vae"
    tiny_wan_vae().save_pretrained(str(vae_dir))
    search, run = tmp_path / "search", tmp_path / "run"
    assert (
        main(
            ["stitch", "search", "--vae", str(vae_dir), "--model", str(model_dir), "--synthetic", "2"]
            + ["--spec", TINY_SPEC, "--frames", "5", "--size", "32", "--out", str(search), "--device", "cpu"]
        )
        == 0
    )
    with safe_open(str(search / "stitching_layer.safetensors"), framework="pt") as handle:
        best_stage = handle.metadata()["layer"]
    assert best_stage == json.loads((search / "layer_search.json").read_text())["best_layer"]

    train = ["stitch", "train", "--base-model", str(model_dir), "--vae", str(vae_dir), "--out", str(run)]
    train += ["--stitching-init", str(search), "--synthetic", "1", "--views", "5", "5", "--vae-size", "32"]
    train += ["--model-size", "56", "--lora-rank", "4", "--lora-alpha", "2", "--lr", "2e-3", "--warmup", "0"]
    train += ["--save-every", "2", "--seed", "3", "--device", "cpu"]
    assert main(train + ["--steps", "3"]) == 0

    records = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and math.isfinite(r["grad_norm"]) for r in records)
    config = json.loads((run / "train_config.json").read_text())["config"]
    assert config["cut_stage"] == best_stage and config["spec"] == TINY_SPEC  # taken from the search
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step_00000002", "step_00000003"]
    assert {p.name for p in (run / "checkpoints" / "step_00000003").iterdir()} == {
        "trainable.safetensors",
        "state.pt",
    }
    with pytest.raises(SystemExit, match="--resume"):  # a fresh run must not overwrite this one
        main(train + ["--steps", "3"])

    assert main(train + ["--steps", "5", "--resume"]) == 0
    records = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]  # continued at step 4, no step redone
    assert all(math.isfinite(r["loss"]) for r in records)
    assert records[3]["lr"] > 0  # the extended run's schedule, not the finished 3-step one (lr 0)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000004", "step_00000005"]
    # a run that stopped after logging step 5 but before saving it: resuming from step 4 redoes step 5 once
    for file in (run / "checkpoints" / "step_00000005").iterdir():
        file.unlink()
    (run / "checkpoints" / "step_00000005").rmdir()
    assert main(train + ["--steps", "5", "--resume"]) == 0
    redone = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in redone] == [1, 2, 3, 4, 5]
    assert redone[4]["loss"] == pytest.approx(records[4]["loss"], rel=1e-4)  # same RNG state -> same step

    _check_export_beats_the_search_init(run, search, model_dir, vae_dir, best_stage)


def test_stitch_evaluate_reports_both_networks_on_held_out_scenes(tmp_path, capsys):
    """`stitch evaluate`: the teacher's figures are exactly its own held-out evaluation, the stitched
    decoder's come from the VAE latent of the same views, and the CLI prints and writes them."""
    import json

    from engine.cli import main
    from engine.stitching.evaluate import evaluate_stitched
    from engine.teachers.data import build_cache, load_cache
    from engine.teachers.train import evaluate_model

    trainer = make_trainer()
    decoder_dir = trainer.export(tmp_path / "decoder")
    build_cache(tmp_path / "data", "heldout", 2, num_views=5, size=56, progress=False)
    samples = load_cache(tmp_path / "data", "heldout", 2)
    decoder = StitchedDecoder.from_pretrained(decoder_dir)
    result = evaluate_stitched(decoder, trainer.teacher, trainer.vae, samples, vae_size=32)
    teacher_only = evaluate_model(trainer.teacher, samples)
    for key in ("novel_psnr", "depth_absrel", "rot_err_deg"):
        assert result[f"teacher_{key}"] == pytest.approx(teacher_only[key], rel=1e-5), key
        assert math.isfinite(result[f"stitched_{key}"]), key
    assert result["scenes"] == 2 and math.isfinite(result["stitched_vs_teacher_psnr"])
    assert result["stitched_vs_teacher_psnr"] < 99  # a random stitch does not reproduce the teacher

    trainer.teacher.save_pretrained(tmp_path / "teacher")
    trainer.vae.save_pretrained(tmp_path / "vae")
    args = ["stitch", "evaluate", "--decoder", str(decoder_dir), "--teacher", str(tmp_path / "teacher")]
    args += ["--vae", str(tmp_path / "vae"), "--data", str(tmp_path / "data"), "--scenes", "2", "--vae-size", "32"]
    args += ["--json", str(tmp_path / "figures.json"), "--sheet", str(tmp_path / "sheet.png")]
    assert main(args) == 0
    assert "stitched renders vs teacher renders" in capsys.readouterr().out
    written = json.loads((tmp_path / "figures.json").read_text())
    assert written["stitched_novel_psnr"] == pytest.approx(result["stitched_novel_psnr"], rel=1e-4)
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "sheet.png").shape[0] == 2 * 3 * 56  # per scene: true views, teacher, stitched


def test_stitch_evaluate_of_a_pointmap_decoder_reports_points(tmp_path, capsys):
    """A stitched VGGT: the teacher's figures are its own evaluation, the pointmaps are compared with the
    true points and with the teacher's, and no render figure is claimed."""
    from engine.cli import main
    from engine.models.vggt import VGGT
    from engine.stitching.evaluate import evaluate_stitched
    from engine.teachers.data import build_cache, load_cache
    from engine.teachers.train import evaluate_model
    from engine.testing.tiny import TINY_CUT_STAGE, TINY_SPEC, _make_cameras_valid, tiny_vggt_config, tiny_wan_adapter

    torch.manual_seed(0)
    teacher = VGGT(tiny_vggt_config()).eval()
    _make_cameras_valid(teacher.camera_head, 0)  # a random camera head predicts degenerate fields of view
    vae = tiny_wan_adapter(0)
    network = copy.deepcopy(teacher)  # stitching cuts the network it is given
    decoder = StitchedDecoder.from_network(network, TINY_CUT_STAGE, TINY_SPEC, VAEReference.from_adapter(vae))
    build_cache(tmp_path / "data", "heldout", 2, num_views=5, size=56, progress=False)
    samples = load_cache(tmp_path / "data", "heldout", 2)
    result = evaluate_stitched(decoder, teacher, vae, samples, vae_size=32)
    teacher_only = evaluate_model(teacher, samples, render=False)
    for key in ("depth_absrel", "rot_err_deg", "points_err"):
        assert result[f"teacher_{key}"] == pytest.approx(teacher_only[key], rel=1e-5), key
        assert math.isfinite(result[f"stitched_{key}"]), key
    assert "stitched_vs_teacher_psnr" not in result and "teacher_novel_psnr" not in result
    assert 0 < result["stitched_vs_teacher_points"] < float("inf")  # a random stitching layer differs

    decoder.save_pretrained(tmp_path / "decoder")
    teacher.save_pretrained(tmp_path / "teacher")
    vae.save_pretrained(tmp_path / "vae")
    args = ["stitch", "evaluate", "--decoder", str(tmp_path / "decoder"), "--teacher", str(tmp_path / "teacher")]
    args += ["--vae", str(tmp_path / "vae"), "--data", str(tmp_path / "data"), "--scenes", "2", "--vae-size", "32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "points_err" in out and "stitched points vs teacher points" in out and "renders" not in out
