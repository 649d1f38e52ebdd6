"""The default model's trainers data-parallel under torchrun: 2 CPU processes (gloo) against 1 process.

Each test runs the real command line (tiny models, a few steps) as one process and through
``torch.distributed.run`` with two, then resumes the 2-process run's checkpoint in a single process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import test_alignment_cli
import torch
from safetensors.torch import load_file
from test_distributed import run_engine
from test_generator_train import TINY_VAE, TINY_VIDEO

reward_models = test_alignment_cli.reward_models  # the tiny reward models, as a fixture here too


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_same_curve(one: list[dict], two: list[dict], keys=("loss",), rel=1e-4) -> None:
    assert [r["step"] for r in two] == [r["step"] for r in one]  # written once, by rank 0
    worst = {k: max(abs(b[k] - a[k]) / abs(a[k]) for a, b in zip(one, two)) for k in (*keys, "grad_norm")}
    print("largest relative difference, 1 vs 2 processes:", {k: f"{v:.1e}" for k, v in worst.items()})  # pytest -s
    for a, b in zip(one, two):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=rel), (a["step"], key)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3), a["step"]


def assert_same_weights(file_one: Path, file_two: Path) -> None:
    one, two = load_file(str(file_one)), load_file(str(file_two))
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-3, atol=1e-4 * (1 + tensor.abs().max().item()))


@pytest.mark.slow
def test_train_vae_on_two_processes_follows_one_and_resumes_on_one(tmp_path):
    clips = tmp_path / "clips"
    train = ["train", "vae", *TINY_VAE, "--batch-size", "4", "--train-clips", "4", "--clip-cache", str(clips)]
    train += ["--eval-every", "3", "--save-every", "3", "--warmup-steps", "1", "--lr", "2e-3"]
    single, double = tmp_path / "single", tmp_path / "double"
    run_engine([*train, "--out", str(single), "--steps", "3"], 1, tmp_path)
    run_engine([*train, "--out", str(double), "--steps", "3"], 2, tmp_path)

    one, two = read_jsonl(single / "train_log.jsonl"), read_jsonl(double / "train_log.jsonl")
    assert_same_curve(one, two, keys=("loss", "l1", "kl"))
    assert [r["step"] for r in read_jsonl(double / "eval_log.jsonl")] == [0, 3]  # evaluated once per point
    checkpoint = Path("checkpoints") / "step_00000003" / "model.safetensors"
    assert_same_weights(single / checkpoint, double / checkpoint)
    assert (double / "vae" / "diffusion_pytorch_model.safetensors").is_file() and (double / "loss.png").is_file()

    # the 2-process checkpoint continues on 1 process as the 1-process run does
    for run in (single, double):
        run_engine([*train, "--out", str(run), "--steps", "5", "--resume"], 1, tmp_path)
    one, two = read_jsonl(single / "train_log.jsonl"), read_jsonl(double / "train_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5]
    assert_same_curve(one[3:], two[3:], rel=1e-3)


@pytest.mark.slow
def test_train_video_on_two_processes_follows_one_and_resumes_on_one(tmp_path):
    from engine.cli import main as engine_main

    clips = tmp_path / "clips"
    vae_run = tmp_path / "vae_run"
    vae = ["train", "vae", "--out", str(vae_run), "--steps", "1", "--eval-every", "0", "--clip-cache", str(clips)]
    assert engine_main([*vae, *TINY_VAE]) == 0
    train = ["train", "video", *TINY_VIDEO, "--vae", str(vae_run / "vae"), "--clip-cache", str(clips)]
    train += ["--eval-every", "3", "--save-every", "3", "--caption-dropout", "0.5"]
    single, double = tmp_path / "single", tmp_path / "double"
    run_engine([*train, "--out", str(single), "--steps", "3"], 1, tmp_path)
    run_engine([*train, "--out", str(double), "--steps", "3"], 2, tmp_path)

    one, two = read_jsonl(single / "train_log.jsonl"), read_jsonl(double / "train_log.jsonl")
    assert [r["clips"] for r in two] == [r["clips"] for r in one] == [2, 3, 3]
    assert_same_curve(one, two)
    evals = read_jsonl(single / "eval_log.jsonl"), read_jsonl(double / "eval_log.jsonl")
    assert [r["step"] for r in evals[1]] == [0, 3]
    assert evals[1][1]["heldout_loss"] == pytest.approx(evals[0][1]["heldout_loss"], rel=1e-4)
    checkpoint = Path("checkpoints") / "step_00000003" / "model.safetensors"
    assert_same_weights(single / checkpoint, double / checkpoint)
    assert (double / "pipeline" / "model_index.json").is_file()

    for run in (single, double):
        run_engine([*train, "--out", str(run), "--steps", "5", "--resume"], 1, tmp_path)
    one, two = read_jsonl(single / "train_log.jsonl"), read_jsonl(double / "train_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5]
    assert_same_curve(one[3:], two[3:], rel=1e-3)


def test_train_vae_rejects_a_batch_the_processes_cannot_share(tmp_path):
    from engine.generator.vae import VAEConfig, VAETrainer
    from engine.training.distributed import DistributedContext

    config = VAEConfig(
        base_dim=4, dim_mult=[1, 1, 1, 1], size=32, num_frames=5, crop_size=16, crop_frames=5, image_crop_size=16
    )
    with pytest.raises(ValueError, match="batch size 3 cannot be split evenly over 2 processes"):
        VAETrainer(VAEConfig(**{**config.__dict__, "batch_size": 3}), None, context=DistributedContext(0, 2))
    with pytest.raises(ValueError, match="batch size 3 cannot be split evenly over 2 processes"):  # image stage
        VAETrainer(VAEConfig(**{**config.__dict__, "image_batch_size": 3}), None, context=DistributedContext(0, 2))


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["anysplat", "vggt"])
def test_teacher_train_on_two_processes_follows_one_and_resumes_on_one(tmp_path, model_type):
    from engine.teachers.data import build_cache
    from engine.teachers.train import TeacherTrainConfig, save_config
    from engine.testing.tiny import tiny_anysplat_config, tiny_vggt_config

    data = tmp_path / "data"
    build_cache(data, "train", 4, num_views=3, size=56, progress=False)
    build_cache(data, "heldout", 1, num_views=3, size=56, progress=False)
    config = TeacherTrainConfig(
        model_type=model_type,
        data_dir=str(data),
        steps=3,
        warmup_steps=1,
        lr=1e-3,
        eval_every=3,
        save_every=3,
        eval_scenes=1,
        render_size=28,
        render_inputs=1,
        reverse_augment=True,
        batch_size=2,
        model_config=(tiny_anysplat_config(sh_degree=1) if model_type == "anysplat" else tiny_vggt_config()).to_dict(),
    )
    single, double = tmp_path / "single", tmp_path / "double"
    for run in (single, double):  # the tiny network is set in the run's config; the command picks it up
        run.mkdir()
        save_config(config, run)
    train = ["teacher", "train", model_type, "--data", str(data), "--resume"]
    run_engine([*train, "--out", str(single), "--steps", "3"], 1, tmp_path)
    run_engine([*train, "--out", str(double), "--steps", "3"], 2, tmp_path)

    one, two = read_jsonl(single / "loss_log.jsonl"), read_jsonl(double / "loss_log.jsonl")
    head_loss = "render" if model_type == "anysplat" else "points"  # the Gaussian renders / the point map
    assert all(head_loss in r and not r.get("skipped") for r in two)
    assert_same_curve(one, two, keys=("loss", "camera", "depth", head_loss))
    assert [r["step"] for r in read_jsonl(double / "eval_log.jsonl")] == [0, 3]  # the starting weights, then step 3
    checkpoint = Path("checkpoints") / "step_00000003" / "model.safetensors"
    assert_same_weights(single / checkpoint, double / checkpoint)
    assert (double / "loss_curve.png").is_file()
    if model_type == "anysplat":
        assert (double / "eval" / "step_00000003.png").is_file()

    for run in (single, double):
        run_engine([*train, "--out", str(run), "--steps", "5"], 1, tmp_path)
    one, two = read_jsonl(single / "loss_log.jsonl"), read_jsonl(double / "loss_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5]
    assert_same_curve(one[3:], two[3:], rel=1e-3)
    assert [r["step"] for r in read_jsonl(double / "eval_log.jsonl")] == [0, 3, 5]  # the resume adds no step 0


def test_fsdp_units_are_the_transformer_blocks_and_only_lora_may_train():
    from engine.alignment.lora import add_video_lora, lora_parameters
    from engine.testing.tiny import build_wan_pipeline
    from engine.training.distributed import fsdp_units, shard_transformer

    transformer = build_wan_pipeline().transformer
    model = add_video_lora(transformer, 4, 4.0)
    units = fsdp_units(model)
    assert units == list(transformer.blocks) and len(units) == 2
    with pytest.raises(TypeError, match="no transformer blocks"):
        fsdp_units(torch.nn.Linear(2, 2))
    trainable = lora_parameters(model)
    transformer.proj_out.weight.requires_grad_(True)  # a frozen weight made trainable: FSDP here refuses
    with pytest.raises(ValueError, match="proj_out.weight"):
        shard_transformer(model, trainable.values())


@pytest.mark.slow
def test_align_train_fsdp_on_two_processes_follows_ddp_and_resumes_on_one(tmp_path, reward_models):
    from engine.testing.tiny import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path / "bundle", visible=True)
    train = ["align", "train", "--model", str(bundle), "--batch-size", "2", *test_alignment_cli.SMALL, "--seed", "5"]
    train += ["--rollout-steps", "2", "2", "--eval-every", "2", "--eval-steps", "2"]
    train += ["--dfn-clip", str(reward_models["dfn"]), "--hps", str(reward_models["hps"])]
    train += ["--clip-tokenizer", str(reward_models["tokenizer"]), "--lpips-backbone", str(reward_models["backbone"])]
    train += ["--lpips-lin", str(reward_models["lin"])]
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    run_engine([*train, "--out", str(ddp), "--steps", "2"], 2, tmp_path)
    sharded = run_engine([*train, "--out", str(fsdp), "--steps", "2", "--fsdp"], 2, tmp_path)
    held = [(int(a), int(b)) for a, b in re.findall(r"this one holds (\d+) of (\d+) values", sharded.stderr)]
    # the two processes hold complementary halves of the frozen transformer weights
    assert len(held) == 2 and held[0][1] == held[1][1] and held[0][0] + held[1][0] == held[0][1], held
    assert all(0.4 * total < part < 0.6 * total for part, total in held), held

    one, two = read_jsonl(ddp / "reward_log.jsonl"), read_jsonl(fsdp / "reward_log.jsonl")
    assert [r["step"] for r in two] == [1, 2]
    for a, b in zip(one, two):
        assert b["rollouts"] == a["rollouts"] and len(a["rollouts"]) == 2
        for key in ("loss", "fm_loss", "reward"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    evals = read_jsonl(ddp / "eval_log.jsonl"), read_jsonl(fsdp / "eval_log.jsonl")
    assert len(evals[1]) == 1 and evals[1][0]["reward"] == pytest.approx(evals[0][0]["reward"], rel=1e-4, abs=1e-7)
    lora = Path("checkpoints") / "step_00000002" / "lora.safetensors"
    assert_same_weights(ddp / lora, fsdp / lora)
    assert (fsdp / "adapter_ema" / "adapter_model.safetensors").is_file()

    # the FSDP checkpoint holds whole LoRA tensors: it continues in a single process
    for run in (ddp, fsdp):
        run_engine([*train, "--out", str(run), "--steps", "3", "--resume"], 1, tmp_path)
    one, two = read_jsonl(ddp / "reward_log.jsonl"), read_jsonl(fsdp / "reward_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3]
    assert two[2]["loss"] == pytest.approx(one[2]["loss"], rel=1e-3, abs=1e-6)


def test_align_train_fsdp_needs_several_processes(tmp_path):
    from engine.cli import main as engine_main

    with pytest.raises(SystemExit, match="launch with torchrun"):
        engine_main(["align", "train", "--model", str(tmp_path), "--out", str(tmp_path / "run"), "--fsdp"])


@pytest.mark.slow
def test_caption_train_on_two_processes_follows_one_and_resumes_on_one(tmp_path):
    from dataclasses import asdict

    from engine.teachers.caption import CaptionTrainConfig, build_caption_cache

    data = tmp_path / "data"
    build_caption_cache(data, "train", 8, views=2, size=32, progress=False)
    build_caption_cache(data, "heldout", 4, views=1, size=32, progress=False)
    config = CaptionTrainConfig(
        data_dir=str(data),
        steps=3,
        batch_size=8,
        hidden=32,
        layers=1,
        image_size=32,
        eval_every=3,
        save_every=3,
        retrieval_pool=4,
        heldout_scenes=4,
        warmup_steps=1,
    )
    single, double = tmp_path / "single", tmp_path / "double"
    for run in (single, double):  # the tiny scorer is set in the run's config; the command picks it up
        run.mkdir()
        (run / "train_config.json").write_text(json.dumps(asdict(config)))
    train = ["teacher", "caption", "train", "--data", str(data), "--resume"]
    run_engine([*train, "--out", str(single), "--steps", "3"], 1, tmp_path)
    run_engine([*train, "--out", str(double), "--steps", "3"], 2, tmp_path)

    one, two = read_jsonl(single / "loss_log.jsonl"), read_jsonl(double / "loss_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(one, two):  # the contrastive loss over the whole batch (gathered features)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["batch_top1"] == a["batch_top1"]
        assert b["logit_scale"] == pytest.approx(a["logit_scale"], rel=1e-5)
    assert [r["step"] for r in read_jsonl(double / "eval_log.jsonl")] == [3]
    checkpoint = Path("checkpoints") / "step_00000003" / "model.safetensors"
    assert_same_weights(single / checkpoint, double / checkpoint)

    for run in (single, double):
        run_engine([*train, "--out", str(run), "--steps", "5"], 1, tmp_path)
    one, two = read_jsonl(single / "loss_log.jsonl"), read_jsonl(double / "loss_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5]
    for a, b in zip(one[3:], two[3:]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
