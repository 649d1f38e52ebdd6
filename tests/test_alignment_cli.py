"""``python -m engine align train`` end to end through real subprocesses, then generation with its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_alignment_scorers import open_clip_config, random_open_clip_state

from engine.alignment.lpips import LPIPS
from engine.testing.tiny import build_tiny_bundle, build_tiny_clip_scorer, build_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--frames", "5", "--height", "32", "--width", "32", "--rollout-steps", "2", "3", "--grad-steps", "1"]
SMALL += ["--clips", "2", "--device", "cpu", "--dtype", "float32", "--no-progress", "--save-every", "1"]


def engine(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True, env=environment, timeout=600
    )


@pytest.fixture(scope="module")
def reward_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny reward models in the real on-disk formats: open_clip DFN/HPS files, a CLIP tokenizer, LPIPS files."""
    root = tmp_path_factory.mktemp("reward-models")
    tokenizer = build_tiny_tokenizer(root / "tokenizer")
    for name, file, quick in (("dfn", "open_clip_pytorch_model.bin", True), ("hps", "HPS_v2.1_compressed.pt", False)):
        (root / name).mkdir()
        torch.save(random_open_clip_state(len(tokenizer), seed=len(name)), root / name / file)
        (root / name / "open_clip_config.json").write_text(json.dumps(open_clip_config(quick)))
    lpips = LPIPS("vgg")
    torch.save({f"features.{k}": v for k, v in lpips.features.state_dict().items()}, root / "vgg16.pth")
    torch.save({f"lin{k}.model.1.weight": p.detach() for k, p in enumerate(lpips.lins)}, root / "vgg.pth")
    return {
        "dfn": root / "dfn",
        "hps": root / "hps",
        "tokenizer": root / "tokenizer",
        "backbone": root / "vgg16.pth",
        "lin": root / "vgg.pth",
    }


def test_align_train_resume_and_generate_with_the_result(tmp_path, reward_models):
    bundle = build_tiny_bundle(tmp_path / "bundle", visible=True)
    out = tmp_path / "run"
    models = ["--dfn-clip", str(reward_models["dfn"]), "--hps", str(reward_models["hps"])]
    models += ["--clip-tokenizer", str(reward_models["tokenizer"]), "--lpips-backbone", str(reward_models["backbone"])]
    models += ["--lpips-lin", str(reward_models["lin"])]
    first = engine("align", "train", "--model", str(bundle), "--out", str(out), "--steps", "2", *SMALL, *models)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout == ""  # logs go to stderr
    records = [json.loads(line) for line in (out / "reward_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert {"q_decoded", "q_rendered", "consistency", "decoded_clip", "rendered_hps"} <= set(records[0]["terms"])

    again = engine("align", "train", "--model", str(bundle), "--out", str(out), "--steps", "3", *SMALL, *models)
    assert again.returncode != 0 and "--resume" in again.stderr
    resumed = engine(
        "align", "train", "--model", str(bundle), "--out", str(out), "--steps", "3", "--resume", *SMALL, *models
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    records = [json.loads(line) for line in (out / "reward_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    manifest = json.loads((out / "vist3a.json").read_text())
    assert manifest["lora"] == "adapter_ema" and manifest["extra"]["reward_finetuning"]["steps"] == 3

    scene_dir = tmp_path / "scene"
    generated = engine(
        "generate", "a red chair", "--model", str(out), "--out", str(scene_dir), "--frames", "5", "--height", "32",
        "--width", "32", "--steps", "2", "--seed", "3", "--device", "cpu", "--dtype", "float32",
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert (scene_dir / "scene.ply").stat().st_size > 0
    metadata = json.loads((scene_dir / "metadata.json").read_text())
    assert "adapter_ema" in json.dumps(metadata["model"])


def test_missing_reward_models_stop_the_run_with_their_names(tmp_path, reward_models):
    bundle = build_tiny_bundle(tmp_path / "bundle", visible=True)
    env = {"HF_HOME": str(tmp_path / "empty-hf-home")}
    released = engine("align", "train", "--model", str(bundle), "--out", str(tmp_path / "a"), "--preset", "released",
                      "--steps", "1", *SMALL, env=env)  # fmt: skip
    assert released.returncode != 0
    assert "reward model missing" in released.stderr and "yuvalkirstain/PickScore_v1" in released.stderr
    no_lpips = engine("align", "train", "--model", str(bundle), "--out", str(tmp_path / "b"), "--steps", "1", *SMALL,
                      "--dfn-clip", str(reward_models["dfn"]), "--hps", str(reward_models["hps"]),
                      "--clip-tokenizer", str(reward_models["tokenizer"]), env=env)  # fmt: skip
    assert no_lpips.returncode != 0 and "LPIPS" in no_lpips.stderr and "--lpips-backbone" in no_lpips.stderr
    assert "--consistency l1" in no_lpips.stderr  # the other way out
    assert not (tmp_path / "a" / "adapter_ema").exists() and not (tmp_path / "b" / "adapter_ema").exists()


PAPER_L1_TERMS = ["q_decoded", "q_rendered", "decoded_clip", "rendered_clip", "consistency", "consistency_l1", "reward"]


def test_paper_preset_on_the_caption_scorer_with_l1_consistency_trains_records_and_resumes(tmp_path):
    """The default model's reward: no hub, no LPIPS files, no HPSv2.1; every choice explicit and recorded."""
    bundle = build_tiny_bundle(tmp_path / "bundle", visible=True)
    scorer = build_tiny_clip_scorer(name="caption-scorer").save_pretrained(tmp_path / "caption_scorer")
    out = tmp_path / "run"
    env = {"HF_HOME": str(tmp_path / "empty-hf-home")}
    base = ["align", "train", "--model", str(bundle), "--out", str(out), "--dfn-clip", str(scorer), *SMALL]
    first = engine(*base, "--preset", "paper", "--steps", "1", "--consistency", "l1", "--hps-weight", "0", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "C = -L1 (LPIPS left out: consistency l1)" in first.stderr and "HPSv2.1 left out" in first.stderr
    (record,) = [json.loads(line) for line in (out / "reward_log.jsonl").read_text().splitlines()]
    assert list(record["terms"]) == PAPER_L1_TERMS
    recorded = json.loads((out / "align_config.json").read_text())
    assert recorded["config"]["preset"] == "paper"
    reward = recorded["reward"]
    assert (reward["preset"], reward["consistency"], reward["hps_weight"]) == ("paper", "l1", 0.0)
    assert reward["scorers"] == {"clip": "caption-scorer"} and reward["terms"] == PAPER_L1_TERMS

    changed = engine(*base, "--steps", "2", "--resume", "--consistency", "l1+lpips", env=env)
    assert changed.returncode != 0 and "started with consistency 'l1'" in changed.stderr
    assert "Traceback" not in changed.stderr
    resumed = engine(*base, "--steps", "2", "--resume", env=env)  # the run's own choices, not the preset's defaults
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming with the run's reward settings" in resumed.stderr and "consistency l1" in resumed.stderr
    records = [json.loads(line) for line in (out / "reward_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(list(r["terms"]) == PAPER_L1_TERMS for r in records)
    assert json.loads((out / "align_config.json").read_text())["reward"] == reward
