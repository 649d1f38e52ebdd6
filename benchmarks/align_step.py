"""Reward-finetuning step cost on the tiny model: seconds per step and peak memory vs rollout length.

    .venv/bin/python benchmarks/align_step.py [--steps 4] [--threads 1]

One table, rows compared side by side in one run: rollouts of a fixed number of sampler steps T with
K gradient steps (+ the last), the paper preset's reward (stand-in brightness scorers, random-weight
LPIPS) on the visible tiny bundle (5 frames at 32²). It shows how the truncation keeps the cost of a
step nearly flat in T: the DiT runs without a graph at all but K + 1 steps. On CUDA the peak figure
is torch's allocator peak; on the CPU it is the process's peak RSS (which only grows across rows).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.alignment.lpips import LPIPS  # noqa: E402
from engine.alignment.rewards import ConsistencyReward, PaperReward  # noqa: E402
from engine.alignment.scorers import QualityScorer  # noqa: E402
from engine.alignment.train import AlignConfig, AlignmentTrainer  # noqa: E402
from engine.pipeline.settings import RuntimeOptions  # noqa: E402
from engine.pipeline.vist3a import Vist3aPipeline  # noqa: E402
from engine.testing.tiny import build_tiny_bundle  # noqa: E402


class Brightness(QualityScorer):
    name = "brightness"

    def forward(self, images, prompts):
        return images.flatten(1).mean(1)


def measure(bundle: Path, steps: int, rollout_steps: int, grad_steps: int, device: str) -> tuple[float, float]:
    pipeline = Vist3aPipeline.from_pretrained(bundle, runtime=RuntimeOptions(device=device, dtype="float32"))
    reward = PaperReward(Brightness(), Brightness(), ConsistencyReward(LPIPS("vgg")))
    config = AlignConfig(
        steps=steps + 1,
        num_frames=5,
        height=32,
        width=32,
        steps_range=(rollout_steps, rollout_steps),
        grad_steps=grad_steps,
        num_clips=2,
    )
    trainer = AlignmentTrainer(config, pipeline, reward)
    trainer.train_step()  # warm-up (clip encoding, caches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (time.perf_counter() - start) / steps, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        bundle = build_tiny_bundle(Path(folder) / "bundle", visible=True)
        print(f"device {args.device}, threads {torch.get_num_threads()}, {args.steps} timed steps per row")
        print(f"{'T steps':>8} {'K grad':>7} {'s/step':>8} {'peak MB':>9}")
        for rollout_steps, grad_steps in ((10, 2), (25, 2), (50, 2), (50, 0), (50, 8)):
            seconds, peak = measure(bundle, args.steps, rollout_steps, grad_steps, args.device)
            print(f"{rollout_steps:>8} {grad_steps:>7} {seconds:>8.3f} {peak:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
