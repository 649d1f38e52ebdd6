"""The default model's trainers data-parallel under torchrun: 2 CPU processes (gloo) against 1 process.

Each test runs the real command line (tiny models, a few steps) as one process and through
``torch.distributed.run`` with two, then resumes the 2-process run's checkpoint in a single process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import run_engine
from test_generator_train import TINY_VAE


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_same_curve(one: list[dict], two: list[dict], keys=("loss",), rel=1e-4) -> None:
    assert [r["step"] for r in two] == [r["step"] for r in one]  # written once, by rank 0
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


def test_train_vae_rejects_a_batch_the_processes_cannot_share(tmp_path):
    from engine.distributed import DistributedContext
    from engine.generator.vae import VAEConfig, VAETrainer

    config = VAEConfig(base_dim=4, dim_mult=[1, 1, 1, 1], size=32, num_frames=5, crop_size=16, crop_frames=5)
    with pytest.raises(ValueError, match="batch size 3 cannot be split evenly over 2 processes"):
        VAETrainer(VAEConfig(**{**config.__dict__, "batch_size": 3}), None, context=DistributedContext(0, 2))


@pytest.mark.slow
def test_teacher_train_on_two_processes_follows_one_and_resumes_on_one(tmp_path):
    from engine.models.config import tiny_anysplat_config
    from engine.teachers.data import build_cache
    from engine.teachers.train import TeacherTrainConfig, save_config

    data = tmp_path / "data"
    build_cache(data, "train", 4, num_views=3, size=56, progress=False)
    build_cache(data, "heldout", 1, num_views=3, size=56, progress=False)
    config = TeacherTrainConfig(
        model_type="anysplat",
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
        model_config=tiny_anysplat_config(sh_degree=1).to_dict(),
    )
    single, double = tmp_path / "single", tmp_path / "double"
    for run in (single, double):  # the tiny network is set in the run's config; the command picks it up
        run.mkdir()
        save_config(config, run)
    train = ["teacher", "train", "anysplat", "--data", str(data), "--resume"]
    run_engine([*train, "--out", str(single), "--steps", "3"], 1, tmp_path)
    run_engine([*train, "--out", str(double), "--steps", "3"], 2, tmp_path)

    one, two = read_jsonl(single / "loss_log.jsonl"), read_jsonl(double / "loss_log.jsonl")
    assert all("render" in r and not r.get("skipped") for r in two)
    assert_same_curve(one, two, keys=("loss", "camera", "depth", "render"))
    assert [r["step"] for r in read_jsonl(double / "eval_log.jsonl")] == [3]
    checkpoint = Path("checkpoints") / "step_00000003" / "model.safetensors"
    assert_same_weights(single / checkpoint, double / checkpoint)
    assert (double / "loss_curve.png").is_file() and (double / "eval" / "step_00000003.png").is_file()

    for run in (single, double):
        run_engine([*train, "--out", str(run), "--steps", "5"], 1, tmp_path)
    one, two = read_jsonl(single / "loss_log.jsonl"), read_jsonl(double / "loss_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5]
    assert_same_curve(one[3:], two[3:], rel=1e-3)
