"""Training commands of the default model's generator (tiny sizes: a few steps on 32x32 clips)."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.cli import main as engine_main
from engine.generator.runs import EVAL_LOG, PLOT_FILE, TRAIN_LOG
from engine.generator.vae import VAEConfig, VAETrainer

TINY_VAE = [
    "--base-dim", "4", "--dim-mult", "1", "1", "1", "1", "--size", "32", "--num-frames", "5",
    "--crop-size", "16", "--crop-frames", "5", "--train-clips", "2", "--eval-clips", "1",
    "--stats-clips", "2", "--log-every", "1", "--no-progress", "--threads", "1",
    "--image-steps", "1", "--image-batch-size", "2", "--image-crop-size", "16", "--caption-check-clips", "2",
]  # fmt: skip
TINY_VIDEO = [
    "--num-layers", "1", "--num-attention-heads", "2", "--attention-head-dim", "8", "--ffn-dim", "16",
    "--freq-dim", "16", "--text-dim", "16", "--text-layers", "1", "--size", "32", "--num-frames", "5",
    "--train-clips", "3", "--eval-clips", "2", "--batch-size", "2", "--log-every", "1", "--no-progress",
    "--threads", "1",
]  # fmt: skip


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_vae_run(tmp_path_factory):
    """A 4-step tiny VAE run (evaluated at 0, 2, 4; checkpoints at 2 and 4) and its exported folder."""
    out = tmp_path_factory.mktemp("vae_run")
    args = ["train", "vae", "--out", str(out), "--steps", "4", "--eval-every", "2", "--save-every", "2"]
    assert engine_main(args + ["--keep-checkpoints", "5"] + TINY_VAE) == 0
    return out


def test_vae_run_writes_logs_plot_checkpoints_and_a_wan_vae_folder(tiny_vae_run):
    out = tiny_vae_run
    train = read_jsonl(out / TRAIN_LOG)
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and "l1" in r and "kl" in r for r in train)
    evals = read_jsonl(out / EVAL_LOG)
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert all(5.0 < r["psnr"] < 60.0 and 5.0 < r["psnr_first_frame"] < 60.0 for r in evals)
    assert all(0.0 <= r["color_accuracy"] <= 1.0 and 0.0 <= r["relation_accuracy"] <= 1.0 for r in evals)
    assert (out / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]

    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(str(out / "vae"))
    weights = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}
    assert len(vae.config.latents_mean) == 16 and len(vae.config.latents_std) == 16
    assert all(s > 0 for s in vae.config.latents_std)
    # The statistics are those of the training latents: normalised latents have mean ~0, std ~1.
    trainer = VAETrainer(VAEConfig(**json.loads((out / "config.json").read_text())), None, clip_cache=out / "clips")
    video = trainer.train_clips.frames(0).permute(1, 0, 2, 3)[None]
    with torch.no_grad():
        latent = vae.float().encode(video).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    normalised = (latent - mean) / std
    assert latent.shape == (1, 16, 2, 4, 4)
    assert normalised.mean().abs() < 0.5 and 0.5 < normalised.std() < 1.5


def test_vae_resume_continues_exactly(tiny_vae_run, tmp_path):
    """Resuming from the step-2 checkpoint redoes steps 3-4 with the same batches: the same weights."""
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(tiny_vae_run / "config.json", resumed / "config.json")
    shutil.copytree(tiny_vae_run / "checkpoints" / "step_00000002", resumed / "checkpoints" / "step_00000002")
    shutil.copytree(tiny_vae_run / "clips", resumed / "clips")
    lines = (tiny_vae_run / TRAIN_LOG).read_text().splitlines()
    (resumed / TRAIN_LOG).write_text("\n".join(lines) + "\n")  # records 3, 4 are dropped on resume
    args = ["train", "vae", "--out", str(resumed), "--steps", "4", "--eval-every", "2", "--save-every", "2"]
    assert engine_main(args + ["--keep-checkpoints", "5"] + TINY_VAE) == 2  # a run is there: needs --resume
    assert engine_main(args + ["--keep-checkpoints", "5", "--resume"] + TINY_VAE) == 0
    original = load_file(str(tiny_vae_run / "checkpoints" / "step_00000004" / "model.safetensors"))
    again = load_file(str(resumed / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)
    assert [r["step"] for r in read_jsonl(resumed / TRAIN_LOG)] == [1, 2, 3, 4]
    assert [r["loss"] for r in read_jsonl(resumed / TRAIN_LOG)] == [
        r["loss"] for r in read_jsonl(tiny_vae_run / TRAIN_LOG)
    ]
    # Other settings than the step counts cannot be changed on resume.
    changed = TINY_VAE.copy()
    changed[changed.index("--crop-size") + 1] = "8"
    assert engine_main(args + ["--resume"] + changed) == 2


def test_vae_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="crop_frames"):
        VAEConfig(crop_frames=4)
    with pytest.raises(ValueError, match="crop_size"):
        VAEConfig(crop_size=20)
    with pytest.raises(ValueError, match="image_crop_size"):
        VAEConfig(image_crop_size=20)
    with pytest.raises(ValueError, match="image_steps"):
        VAEConfig(image_steps=-1)


def test_vae_trains_on_single_frames_during_the_image_stage(tiny_vae_run):
    config = VAEConfig(**json.loads((tiny_vae_run / "config.json").read_text()))
    assert config.image_steps == 1
    trainer = VAETrainer(config, None, clip_cache=tiny_vae_run / "clips")
    assert trainer.crop_shape(0) == (2, 1, 16)
    assert trainer.crop_shape(1) == (config.batch_size, config.crop_frames, config.crop_size)
    first = trainer.sample_crops()
    assert first.shape == (2, 3, 1, 16, 16)
    trainer.step = 1
    assert trainer.sample_crops().shape == (
        config.batch_size,
        3,
        config.crop_frames,
        config.crop_size,
        config.crop_size,
    )
    # a crop is a piece of a training frame (or its mirror image)
    frames = [trainer.train_clips.frames(i) for i in range(len(trainer.train_clips))]
    crop = first[0, :, 0]
    found = False
    for clip in frames:
        for frame in clip:
            for image in (frame, frame.flip(-1)):
                windows = image.unfold(1, 16, 1).unfold(2, 16, 1)  # (3, h, w, 16, 16)
                found |= bool((windows == crop[:, None, None]).all(0).all(-1).all(-1).any())
    assert found


@pytest.fixture(scope="module")
def tiny_video_run(tiny_vae_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("video_run")
    args = ["train", "video", "--out", str(out), "--vae", str(tiny_vae_run / "vae"), "--steps", "3"]
    args += ["--eval-every", "3", "--save-every", "3", "--clip-cache", str(tiny_vae_run / "clips")]
    assert engine_main(args + TINY_VIDEO) == 0
    return out


def test_video_run_writes_logs_and_a_loadable_wan_pipeline(tiny_video_run):
    out = tiny_video_run
    train = read_jsonl(out / TRAIN_LOG)
    assert [r["step"] for r in train] == [1, 2, 3]
    assert [r["clips"] for r in train] == [2, 3, 3]  # the data grows as clips are encoded
    evals = read_jsonl(out / EVAL_LOG)
    assert [r["step"] for r in evals] == [0, 3]
    assert all(r["heldout_loss"] > 0 and r["train_loss"] > 0 for r in evals)
    assert (out / PLOT_FILE).is_file() and (out / "checkpoints" / "step_00000003").is_dir()
    assert len(list((out / "latents").glob("train_*.npy"))) == 3

    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(str(out / "pipeline"), torch_dtype=torch.float32)
    assert pipe.transformer.config.num_layers == 1 and pipe.text_encoder.config.d_model == 16
    assert len(pipe.vae.config.latents_mean) == 16
    for part in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert {t.dtype for t in load_file(str(out / "pipeline" / part)).values()} == {torch.float16}
    assert pipe.tokenizer("a red snowman").input_ids[:3] == pipe.tokenizer("A Red Snowman").input_ids[:3]


def test_video_run_needs_a_trained_vae(tmp_path):
    args = ["train", "video", "--out", str(tmp_path / "run"), "--vae", str(tmp_path / "missing")]
    assert engine_main(args + TINY_VIDEO) == 2


def test_generation_with_the_trained_pipeline_reports_unknown_words(tiny_video_run, tmp_path):
    from engine.pipeline.run_folder import write_outputs
    from engine.pipeline.settings import GenerationSettings, ModelBundle
    from engine.pipeline.vist3a import Vist3aPipeline
    from engine.testing.tiny import TINY_DECODER_KIND, build_stitched_decoder

    root = tmp_path / "bundle"
    shutil.copytree(tiny_video_run / "pipeline", root / "wan")
    build_stitched_decoder(0).save_pretrained(root / "decoder")
    ModelBundle(root=root, name="t", wan="wan", decoder_kind=TINY_DECODER_KIND, decoder_checkpoint="decoder").save()
    pipeline = Vist3aPipeline.from_pretrained(str(root))
    settings = GenerationSettings(
        prompt="a red chair in a sunny garden", num_frames=5, height=32, width=32, num_steps=2, seed=1
    )
    result = pipeline.generate(settings)
    assert result.unknown_words == ["chair", "sunny", "garden"]
    assert result.frames.shape == (5, 3, 32, 32)
    out = write_outputs(result, tmp_path / "out")
    assert json.loads((out / "metadata.json").read_text())["unknown_words"] == ["chair", "sunny", "garden"]
    known = pipeline.generate(settings.replace(prompt="a cyan snowman behind a black table on a beige floor"))
    assert known.unknown_words == []


def test_vae_export_only_writes_the_newest_checkpoint_and_leaves_the_run(tiny_vae_run, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in tiny_vae_run.rglob("*") if p.is_file()}
    target = tmp_path / "exported"
    assert engine_main(["train", "vae", "--out", str(tiny_vae_run), "--export-only", "--export", str(target)]) == 0
    after = {p: p.stat().st_mtime_ns for p in tiny_vae_run.rglob("*") if p.is_file()}
    assert before == after
    exported = load_file(str(target / "diffusion_pytorch_model.safetensors"))
    checkpoint = load_file(str(tiny_vae_run / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert all(torch.equal(exported[k], checkpoint[k].half()) for k in checkpoint)
    assert engine_main(["train", "vae", "--out", str(tmp_path / "none"), "--export-only", "--export", str(target)]) == 2
    assert engine_main(["train", "vae", "--out", str(tiny_vae_run), "--export-only"]) == 2


class _FakeVAE:
    """``encode(x).latent_dist.mode()`` / ``decode(z).sample`` of a perfect (identity) or a grey autoencoder."""

    def __init__(self, grey: bool):
        self.grey = grey

    def encode(self, video):
        from types import SimpleNamespace

        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: video))

    def decode(self, latent):
        from types import SimpleNamespace

        return SimpleNamespace(sample=torch.zeros_like(latent) if self.grey else latent)


def test_caption_check_of_reconstructions_is_the_truth_for_a_perfect_vae_and_zero_for_a_grey_one():
    from engine.generator.clipcache import ClipCache
    from engine.generator.vae import caption_check_of_reconstructions

    clips = ClipCache(None, "heldout", 4, num_frames=1, height=128, width=128)
    perfect = caption_check_of_reconstructions(_FakeVAE(grey=False), clips)
    assert perfect["color_accuracy"] >= 0.9 and perfect["relation_accuracy"] >= 0.6
    grey = caption_check_of_reconstructions(_FakeVAE(grey=True), clips)
    assert grey == {"color_accuracy": 0.0, "relation_accuracy": 0.0}


def test_video_init_starts_from_a_trained_pipeline_and_refuses_another_architecture(
    tiny_video_run, tiny_vae_run, tmp_path
):
    from engine.generator.video import VideoConfig, VideoTrainer

    source = tiny_video_run / "pipeline"
    config = VideoConfig(**json.loads((tiny_video_run / "config.json").read_text()))
    started = VideoTrainer(config, None, vae=tiny_vae_run / "vae", init=source, clip_cache=tiny_vae_run / "clips")
    trained = load_file(str(source / "transformer" / "diffusion_pytorch_model.safetensors"))
    own = started.model.transformer.state_dict()
    assert own.keys() == trained.keys()
    assert all(torch.equal(own[k], trained[k].float()) for k in trained)
    text = load_file(str(source / "text_encoder" / "model.safetensors"))
    own_text = started.model.text_encoder.state_dict()
    assert all(torch.equal(own_text[k], text[k].float()) for k in text if k in own_text)
    fresh = VideoTrainer(config, None, vae=tiny_vae_run / "vae", clip_cache=tiny_vae_run / "clips")
    assert not all(torch.equal(fresh.model.transformer.state_dict()[k], own[k]) for k in own)

    wider = ["--out", str(tmp_path / "r"), "--vae", str(tiny_vae_run / "vae"), "--init", str(source), "--steps", "1"]
    changed = TINY_VIDEO.copy()
    changed[changed.index("--ffn-dim") + 1] = "32"
    assert engine_main(["train", "video"] + wider + changed) == 2  # a clear error, not a traceback
    with pytest.raises(ValueError, match="does not fit"):
        VideoTrainer(VideoConfig(**{**config.__dict__, "ffn_dim": 32}), None, vae=tiny_vae_run / "vae", init=source)
    with pytest.raises(FileNotFoundError, match="not a WanPipeline folder"):
        VideoTrainer(config, None, vae=tiny_vae_run / "vae", init=tmp_path)


def test_a_run_started_before_a_setting_existed_resumes_with_its_default(tiny_vae_run, tmp_path):
    """A setting missing from an older run's config.json counts as its default value, not as a change."""
    run = tmp_path / "older"
    shutil.copytree(tiny_vae_run, run)
    saved = json.loads((run / "config.json").read_text())
    del saved["kl_weight"]  # the run used the default
    del saved["stats_clips"]  # the run used 2, not the default 48
    (run / "config.json").write_text(json.dumps(saved))
    args = ["train", "vae", "--out", str(run), "--steps", "4", "--eval-every", "2", "--save-every", "2", "--resume"]
    tiny = TINY_VAE.copy()
    assert engine_main(args + ["--keep-checkpoints", "5"] + tiny) == 2  # stats_clips: 48 (default) -> 2
    saved["stats_clips"] = 2
    (run / "config.json").write_text(json.dumps(saved))
    assert engine_main(args + ["--keep-checkpoints", "5"] + tiny) == 0
    assert json.loads((run / "config.json").read_text())["kl_weight"] == 1e-6  # written back in full


def test_object_mask_finds_the_objects_of_a_true_frame_and_the_weight_is_checked():
    from engine.data import SyntheticClipDataset, generate_scene
    from engine.generator.vae import object_mask

    dataset = SyntheticClipDataset(2, seed=0, num_frames=1, height=64, width=64, split="heldout")
    frames = torch.stack([dataset[i].frames[0] for i in range(2)])  # (2, H, W, 3) in [0, 1]
    video = frames.permute(0, 3, 1, 2)[:, :, None] * 2.0 - 1.0  # (2, 3, 1, H, W)
    mask = object_mask(video)
    assert mask.shape == (2, 1, 1, 64, 64) and mask.dtype == torch.bool
    for i in range(2):
        fraction = float(mask[i].float().mean())
        assert 0.01 < fraction < 0.5, fraction  # the objects: some pixels, never most of the frame
        assert len(generate_scene(dataset.item_seed(i)).objects) >= 1
    # a frame of sky alone has no object pixels
    from engine.data import SKY_COLORS

    sky = torch.tensor(list(SKY_COLORS.values())[0], dtype=torch.float32).view(1, 3, 1, 1, 1)
    assert not object_mask(sky.expand(1, 3, 1, 8, 8) * 2.0 - 1.0).any()
    with pytest.raises(ValueError, match="object_weight"):
        VAEConfig(object_weight=0.0)


def test_the_object_weight_changes_the_vae_loss(tiny_vae_run):
    config = VAEConfig(**{**json.loads((tiny_vae_run / "config.json").read_text()), "image_steps": 0})
    plain = VAETrainer(config, None, clip_cache=tiny_vae_run / "clips")
    weighted = VAETrainer(
        VAEConfig(**{**config.__dict__, "object_weight": 10.0}), None, clip_cache=tiny_vae_run / "clips"
    )
    torch.manual_seed(0)
    a = float(plain.loss()[0].detach())
    torch.manual_seed(0)
    b = float(weighted.loss()[0].detach())
    assert a > 0 and b > 0 and abs(a - b) > 1e-6 * a


def test_vae_init_starts_from_a_trained_vae_and_refuses_another_architecture(tiny_vae_run, tmp_path):
    """`train vae --init`: a finetune (e.g. with --object-weight) starts from the trained weights."""
    source = tiny_vae_run / "vae"
    config = VAEConfig(**json.loads((tiny_vae_run / "config.json").read_text()))
    started = VAETrainer(config, None, init=source, clip_cache=tiny_vae_run / "clips")
    trained = load_file(str(source / "diffusion_pytorch_model.safetensors"))
    own = started.model.state_dict()
    assert own.keys() == trained.keys()
    assert all(torch.equal(own[k], trained[k].float()) for k in trained)
    fresh = VAETrainer(config, None, clip_cache=tiny_vae_run / "clips")
    assert not all(torch.equal(fresh.model.state_dict()[k], own[k]) for k in own)

    out = tmp_path / "finetune"
    args = ["train", "vae", "--out", str(out), "--init", str(source), "--steps", "1", "--eval-every", "1"]
    assert engine_main(args + ["--object-weight", "5"] + TINY_VAE) == 0
    first = read_jsonl(out / EVAL_LOG)[0]  # step 0: the initial weights, i.e. the trained VAE's
    assert first["step"] == 0
    assert first["psnr"] == pytest.approx(read_jsonl(tiny_vae_run / EVAL_LOG)[-1]["psnr"], abs=1e-3)
    assert (out / "vae" / "config.json").is_file()

    wider = TINY_VAE.copy()
    wider[wider.index("--base-dim") + 1] = "8"
    again = ["train", "vae", "--out", str(tmp_path / "r"), "--init", str(source), "--steps", "1"]
    assert engine_main(again + wider) == 2  # a clear error, not a traceback
    with pytest.raises(ValueError, match="the VAE in .* does not fit"):
        VAETrainer(VAEConfig(**{**config.__dict__, "base_dim": 8}), None, init=source)
    with pytest.raises(FileNotFoundError, match="not a VAE folder"):
        VAETrainer(config, None, init=tmp_path)


def test_a_resumed_run_without_a_checkpoint_keeps_one_step_zero_evaluation(tiny_vae_run, tmp_path):
    """Stopped before its first checkpoint, a run restarts at step 0 and evaluates it again: one record, not two."""
    run = tmp_path / "early"
    shutil.copytree(tiny_vae_run, run)
    shutil.rmtree(run / "checkpoints")
    config = VAEConfig(**json.loads((run / "config.json").read_text()))
    trainer = VAETrainer(config, run, resume=True, clip_cache=tiny_vae_run / "clips")
    assert trainer.step == 0
    assert read_jsonl(run / EVAL_LOG) == [] and read_jsonl(run / TRAIN_LOG) == []
    resumed = VAETrainer(config, tiny_vae_run, resume=True, clip_cache=tiny_vae_run / "clips")
    assert resumed.step == 4 and [r["step"] for r in read_jsonl(tiny_vae_run / EVAL_LOG)] == [0, 2, 4]


def test_object_pixels_are_the_objects_of_a_clip_and_never_its_floor_or_sky():
    from engine.data import SyntheticClipDataset, generate_scene, object_pixels
    from engine.generator.quality import label_pixels

    dataset = SyntheticClipDataset(3, seed=0, num_frames=5, height=64, width=64, split="train")
    for i in range(3):
        clip = dataset[i]
        scene = generate_scene(dataset.item_seed(i))
        mask = object_pixels(clip)
        assert mask.shape == (5, 64, 64) and mask.dtype == torch.bool
        assert 0.01 < float(mask.float().mean()) < 0.6
        assert not (mask & (clip.alpha < 0.5)).any()  # the sky is never an object
        # a point inside each object (at height `size` on its axis) projects onto an object pixel
        for obj in scene.objects:
            if obj.shape in ("torus", "table"):  # hollow at that point
                continue
            point = torch.tensor([[obj.position[0], obj.position[1], obj.size]], dtype=torch.float32)
            pixels, depth = clip.cameras.project(point)
            for view in range(5):
                u, v = pixels[view, 0].floor().long().tolist()
                if 0 <= u < 64 and 0 <= v < 64 and depth[view, 0] > 0:
                    assert mask[view, v, u], (i, obj, view)
        # the pixels of the mask are mostly explained by the scene's own object colours
        names, labels = label_pixels(clip.frames[0].numpy())
        own = {names.index(f"object:{o.color_name}") for o in scene.objects}
        explained = torch.from_numpy(np.isin(labels, sorted(own)))
        assert float(explained[mask[0]].float().mean()) > 0.7


def test_latent_object_mask_follows_the_causal_vae_grouping():
    from engine.generator.video import latent_object_mask

    mask = torch.zeros(1, 1, 9, 32, 16, dtype=torch.bool)
    mask[0, 0, 0, 3, 3] = True  # frame 0: latent frame 0 alone
    mask[0, 0, 6, 17, 9] = True  # frames 5..8: latent frame 2
    latent = latent_object_mask(mask)
    assert latent.shape == (1, 1, 3, 4, 2)
    assert latent.nonzero().tolist() == [[0, 0, 0, 0, 0], [0, 0, 2, 2, 1]]
    with pytest.raises(ValueError, match="does not map onto latent pixels"):
        latent_object_mask(torch.zeros(1, 1, 8, 32, 32, dtype=torch.bool))


def test_the_object_weight_weights_the_flow_matching_loss_on_the_objects(tiny_video_run, tiny_vae_run, tmp_path):
    from engine.generator.video import VideoConfig, VideoTrainer

    config = VideoConfig(**json.loads((tiny_video_run / "config.json").read_text()))
    trainer = VideoTrainer(config, None, vae=tiny_vae_run / "vae", clip_cache=tiny_vae_run / "clips")
    x0 = torch.stack([trainer.latent("train", i) for i in range(2)])
    texts = [trainer.caption("train", i) for i in range(2)]
    sigma, noise = torch.tensor([0.3, 0.7]), torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = trainer.flow_loss(x0, texts, sigma, noise)
        assert torch.allclose(trainer.flow_loss(x0, texts, sigma, noise, torch.ones_like(x0[:, :1])), plain)
        only = torch.zeros_like(x0[:, :1])
        only[:, :, 0, 0, 0] = 1.0  # all the weight on one latent pixel: the mean over its channels
        s = sigma.view(-1, 1, 1, 1, 1)
        prediction = trainer.model.transformer(
            hidden_states=(1 - s) * x0 + s * noise,
            timestep=sigma * 1000,
            encoder_hidden_states=trainer.embed(texts),
            return_dict=False,
        )[0]
        expected = (prediction - (noise - x0)).pow(2)[:, :, 0, 0, 0].mean(dim=1)
        assert torch.allclose(trainer.flow_loss(x0, texts, sigma, noise, only), expected, rtol=1e-4)

    # the training loss with --object-weight: the clips' object masks are cached next to their latents
    out = tmp_path / "weighted"
    args = ["train", "video", "--out", str(out), "--vae", str(tiny_vae_run / "vae"), "--steps", "2"]
    args += ["--eval-every", "0", "--clip-cache", str(tiny_vae_run / "clips"), "--object-weight", "5"]
    assert engine_main(args + TINY_VIDEO) == 0
    masks = sorted((out / "latents").glob("train_*_objects.npy"))
    assert masks and all(np.load(m).dtype == bool and np.load(m).shape == (1, 2, 4, 4) for m in masks)
    assert any(np.load(m).any() for m in masks)
    assert json.loads((out / "config.json").read_text())["object_weight"] == 5.0
    weighted = VideoTrainer(
        VideoConfig(**{**config.__dict__, "object_weight": 5.0}), None, vae=tiny_vae_run / "vae",
        clip_cache=tiny_vae_run / "clips",
    )  # fmt: skip
    weighted.model.load_state_dict(trainer.model.state_dict())
    trainer.generator.manual_seed(3)
    weighted.generator.manual_seed(3)
    with torch.no_grad():
        a, b = float(trainer.loss()[0]), float(weighted.loss()[0])
    assert a > 0 and b > 0 and abs(a - b) > 1e-6 * a
    with pytest.raises(ValueError, match="object_weight"):
        VideoConfig(object_weight=0.0)


def test_a_frozen_encoder_run_trains_the_decoder_alone_and_keeps_the_latent_space(
    tiny_vae_run, tmp_path, capsys, caplog
):
    """`train vae --freeze-encoder yes`: models trained on the VAE's latents stay valid."""
    source = tiny_vae_run / "vae"
    out = tmp_path / "decoder"
    args = ["train", "vae", "--out", str(out), "--init", str(source), "--steps", "2", "--eval-every", "0"]
    tiny = TINY_VAE.copy()
    tiny[tiny.index("--image-steps") + 1] = "0"
    assert engine_main(args + ["--freeze-encoder", "yes", "--lr", "1e-2"] + tiny) == 0
    before = load_file(str(source / "diffusion_pytorch_model.safetensors"))
    after = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder
    assert all(torch.equal(before[k], after[k]) for k in encoder)
    assert not all(torch.equal(before[k], after[k]) for k in decoder)
    old, new = (json.loads((f / "config.json").read_text()) for f in (source, out / "vae"))
    assert new["latents_mean"] == old["latents_mean"] and new["latents_std"] == old["latents_std"]
    # a resume finds the initial VAE's statistics in the run folder
    assert engine_main(["train", "vae", "--out", str(out), "--resume", "--steps", "3", "--eval-every", "0",
                        "--freeze-encoder", "yes", "--lr", "1e-2"] + tiny) == 0  # fmt: skip
    resumed = json.loads((out / "vae" / "config.json").read_text())
    assert resumed["latents_mean"] == old["latents_mean"]
    exported = tmp_path / "exported"  # --export-only reads them from the run folder too
    assert engine_main(["train", "vae", "--out", str(out), "--export-only", "--export", str(exported)] + tiny) == 0
    assert json.loads((exported / "config.json").read_text())["latents_std"] == old["latents_std"]

    capsys.readouterr()
    alone = ["train", "vae", "--out", str(tmp_path / "alone"), "--steps", "1", "--freeze-encoder", "yes"]
    assert engine_main(alone + tiny) == 2
    assert "give the VAE to start from" in caplog.text
    with pytest.raises(SystemExit):
        engine_main(alone + ["--freeze-encoder", "maybe"] + tiny)
    assert "expected yes or no" in capsys.readouterr().err
