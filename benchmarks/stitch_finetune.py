"""Stitched-decoder self-distillation on tiny models: L1 to the teacher and render PSNR before/after.

    .venv/bin/python benchmarks/stitch_finetune.py [--steps 60] [--views 5 9]

Tiny Wan VAE (diffusers config) + the visible tiny AnySplat of ``engine.testing.tiny.build_visible_anysplat``
as teacher, synthetic clips (``engine.testing.tiny.tiny_trainer``). A held-out batch (a clip the
run does not train on) is evaluated before and after finetuning: the weighted L1 to the teacher and the
PSNR of the stitched decoder's Gaussians against the teacher's, both rendered at the teacher's cameras
(``engine.stitching.train.render_psnr``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.stitching.train import render_psnr  # noqa: E402
from engine.testing.tiny import tiny_trainer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--views", type=int, nargs=2, default=(5, 9))
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = tiny_trainer(steps=args.steps, views=tuple(args.views), warmup_steps=5, lr=args.lr)
    held_out = trainer.targets(trainer.sample_batch(step=-1))  # the run starts at step 0: clips it never sees

    def measure() -> tuple[float, float]:
        l1, _ = trainer.evaluate(held_out)
        return l1, render_psnr(trainer.student.predict(*held_out[:2]), held_out[2])

    l1_before, psnr_before = measure()
    start = time.time()
    trainer.train(progress=True)
    l1_after, psnr_after = measure()
    print(f"{args.steps} steps in {time.time() - start:.0f} s (held-out clip, {held_out[1].shape[1]} views)")
    print(f"L1 to teacher: {l1_before:.4f} -> {l1_after:.4f}")
    print(f"render PSNR vs teacher (teacher's cameras): {psnr_before:.2f} dB -> {psnr_after:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
