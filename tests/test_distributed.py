"""Data-parallel training commands under torchrun: 2 CPU processes (gloo) against 1 process.

Each test runs the real command line through ``torch.distributed.run`` (the module behind ``torchrun``) on
tiny models, then compares with the same command run as a single process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_alignment_cli
import torch
from safetensors.torch import load_file

from engine.models.anysplat import AnySplat
from engine.testing.tiny import (
    ADAPTER_WAN_LATENTS_MEAN,
    ADAPTER_WAN_LATENTS_STD,
    TINY_SPEC,
    tiny_anysplat_config,
    tiny_wan_vae,
)
from engine.training.distributed import DistributedContext, sample_generator

ROOT = Path(__file__).resolve().parents[1]
reward_models = test_alignment_cli.reward_models  # the tiny reward models, as a fixture here too


def run_engine(
    args: list[str], nproc: int, cwd: Path, launcher: str = "torchrun", timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m engine ARGS`` as one process, or under ``launcher`` (torchrun or accelerate launch) with
    ``nproc`` CPU processes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    if nproc == 1:
        command = [sys.executable, "-m", "engine", *args]
    elif launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        command += ["-m", "engine", *args]
    else:  # accelerate's multi-process mode; without CUDA its processes join with gloo on the CPU
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={nproc}"]
        command += ["--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "-m", "engine", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_wan_vae(latents_mean=ADAPTER_WAN_LATENTS_MEAN, latents_std=ADAPTER_WAN_LATENTS_STD).save_pretrained(
        root / "vae"
    )
    torch.manual_seed(0)
    AnySplat(tiny_anysplat_config()).eval().save_pretrained(root / "anysplat")
    return root / "vae", root / "anysplat"


def test_context_splits_batches_and_shards():
    contexts = [DistributedContext(rank=r, world_size=3) for r in range(3)]
    assert [list(c.local_indices(6)) for c in contexts] == [[0, 1], [2, 3], [4, 5]]
    assert [c.shard(list(range(7))) for c in contexts] == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(ValueError, match="batch size 4 cannot be split evenly over 3 processes"):
        contexts[0].per_rank(4)
    single = DistributedContext()
    assert single.is_main and not single.is_distributed and single.mean({"a": 2.0}) == {"a": 2.0}
    first, again, other = sample_generator(0, 5, 1), sample_generator(0, 5, 1), sample_generator(0, 5, 2)
    draw = torch.rand(4, generator=first)
    assert torch.equal(draw, torch.rand(4, generator=again)) and not torch.equal(draw, torch.rand(4, generator=other))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_layer_search_on_two_processes_equals_one(tiny_models, tmp_path, launcher):
    vae_dir, model_dir = tiny_models
    # 5 clips over 2 processes: an uneven split (3 + 2), so the moments of rank 1 start from another shift
    common = ["stitch", "search", "--vae", str(vae_dir), "--model", str(model_dir), "--synthetic", "5"]
    common += ["--frames", "5", "--size", "16", "--spec", TINY_SPEC, "--device", "cpu"]
    reports = {}
    for nproc in (1, 2):
        out = tmp_path / f"search_{nproc}"
        run_engine([*common, "--out", str(out)], nproc, tmp_path, launcher)
        reports[nproc] = (
            json.loads((out / "layer_search.json").read_text()),
            load_file(out / "stitching_layer.safetensors"),
        )
    (single, single_weights), (double, double_weights) = reports[1], reports[2]
    assert double["settings"]["processes"] == 2 and single["settings"]["processes"] == 1
    assert double["settings"]["num_clips"] == single["settings"]["num_clips"] == 5
    assert double["settings"]["num_rows"] == single["settings"]["num_rows"]
    assert double["best_layer"] == single["best_layer"]
    for one, two in zip(single["layers"], double["layers"]):
        assert two["mse"] == pytest.approx(one["mse"], rel=1e-8)
    for name, tensor in single_weights.items():
        # the report's weights are float32; the float64 fits agree to 1e-8, float32 rounding dominates
        torch.testing.assert_close(double_weights[name], tensor, rtol=1e-6, atol=1e-6 * tensor.abs().max().item())


def _log(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


@pytest.mark.slow
def test_stitch_train_on_two_processes_follows_one_and_resumes_on_one(tmp_path):
    from engine.models.checkpoint import save_checkpoint
    from engine.testing.tiny import FINETUNE_CUT_STAGE, build_visible_anysplat
    from engine.testing.tiny import FINETUNE_SPEC as TRAIN_SPEC

    model_dir, vae_dir = save_checkpoint(build_visible_anysplat(), tmp_path / "model"), tmp_path / "vae"
    tiny_wan_vae().save_pretrained(str(vae_dir))
    train = ["stitch", "train", "--base-model", str(model_dir), "--vae", str(vae_dir), "--synthetic", "1"]
    train += ["--cut-stage", FINETUNE_CUT_STAGE, "--spec", TRAIN_SPEC, "--views", "5", "5", "--vae-size", "32"]
    train += ["--model-size", "56", "--lora-rank", "4", "--lora-alpha", "2", "--lr", "2e-3", "--warmup", "0"]
    train += ["--batch-size", "2", "--save-every", "3", "--seed", "3", "--device", "cpu", "--gradient-checkpointing"]
    single, double = tmp_path / "single", tmp_path / "double"
    run_engine([*train, "--out", str(single), "--steps", "3"], 1, tmp_path)
    run_engine([*train, "--out", str(double), "--steps", "3"], 2, tmp_path)

    one, two = _log(single, "loss_log.jsonl"), _log(double, "loss_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3]  # written once, by rank 0
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["grad_norm"] == pytest.approx(
            a["grad_norm"], rel=1e-3
        )
    weights_one = load_file(single / "checkpoints" / "step_00000003" / "trainable.safetensors")
    weights_two = load_file(double / "checkpoints" / "step_00000003" / "trainable.safetensors")
    assert weights_one.keys() == weights_two.keys()
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-3, atol=1e-4 * (1 + tensor.abs().max().item()))
    assert (double / "export").is_dir()

    # the 2-process checkpoint continues on 1 process exactly as the 1-process run does
    for run in (single, double):
        run_engine([*train, "--out", str(run), "--steps", "5", "--resume"], 1, tmp_path)
    one, two = _log(single, "loss_log.jsonl"), _log(double, "loss_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5]
    for a, b in zip(one[3:], two[3:]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)


@pytest.mark.slow
def test_align_train_on_two_processes_follows_one_and_resumes_on_one(tmp_path, reward_models):
    from engine.testing.tiny import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path / "bundle", visible=True)
    train = ["align", "train", "--model", str(bundle), "--batch-size", "2", *test_alignment_cli.SMALL, "--seed", "5"]
    train += ["--dfn-clip", str(reward_models["dfn"]), "--hps", str(reward_models["hps"])]
    train += ["--clip-tokenizer", str(reward_models["tokenizer"]), "--lpips-backbone", str(reward_models["backbone"])]
    train += ["--lpips-lin", str(reward_models["lin"]), "--gradient-checkpointing"]
    single, double = tmp_path / "single", tmp_path / "double"
    run_engine([*train, "--out", str(single), "--steps", "2"], 1, tmp_path)
    run_engine([*train, "--out", str(double), "--steps", "2"], 2, tmp_path)

    one, two = _log(single, "reward_log.jsonl"), _log(double, "reward_log.jsonl")
    assert [r["step"] for r in two] == [1, 2]
    # the processes ran rollouts of different lengths in the same step (different numbers of forwards)
    assert any(len({plan["num_steps"] for plan in record["rollouts"]}) == 2 for record in one)
    for a, b in zip(one, two):
        assert b["rollouts"] == a["rollouts"] and len(a["rollouts"]) == 2  # the same samples, in order
        for key in ("loss", "fm_loss", "reward"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    lora_one = load_file(single / "checkpoints" / "step_00000002" / "lora.safetensors")
    lora_two = load_file(double / "checkpoints" / "step_00000002" / "lora.safetensors")
    for name, tensor in lora_one.items():
        torch.testing.assert_close(lora_two[name], tensor, rtol=1e-3, atol=1e-5)
    assert (double / "adapter_ema" / "adapter_model.safetensors").is_file()

    for run in (single, double):
        run_engine([*train, "--out", str(run), "--steps", "3", "--resume"], 1, tmp_path)
    one, two = _log(single, "reward_log.jsonl"), _log(double, "reward_log.jsonl")
    assert [r["step"] for r in two] == [1, 2, 3]
    assert two[2]["rollouts"] == one[2]["rollouts"]
    assert two[2]["loss"] == pytest.approx(one[2]["loss"], rel=1e-3, abs=1e-6)
