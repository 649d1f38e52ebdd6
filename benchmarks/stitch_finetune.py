"""Stitched-decoder self-distillation on tiny models: L1 to the teacher and render PSNR before/after.

    .venv/bin/python benchmarks/stitch_finetune.py [--steps 60] [--views 5 9]

Tiny Wan VAE (diffusers config) + tiny AnySplat, synthetic clips; a held-out batch is evaluated before
and after finetuning: the weighted L1 to the teacher and the PSNR between the stitched decoder's render
(its Gaussians at its predicted cameras) and the original network's render.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.render import rasterize  # noqa: E402


def render_psnr(student_prediction, teacher_prediction) -> float:
    """PSNR (dB) of the student's render at its cameras against the teacher's render at its cameras."""
    renders = []
    for prediction in (student_prediction, teacher_prediction):
        scene = prediction.gaussian_scene(sh_degree=0)
        renders.append(rasterize(scene, prediction.cameras(), background=(1.0, 1.0, 1.0)).rgb.clamp(0, 1))
    mse = ((renders[0] - renders[1]) ** 2).mean().clamp_min(1e-10)
    return float(-10 * torch.log10(mse))


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_stitching_train import make_trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--views", type=int, nargs=2, default=(5, 9))
    args = parser.parse_args()
    trainer = make_trainer(steps=args.steps, views=tuple(args.views), warmup_steps=5, lr=2e-3)
    held_out = trainer.targets(trainer.sample_batch())
    before, _ = trainer.evaluate(held_out)
    psnr_before = render_psnr(trainer.student.predict(*held_out[:2]), held_out[2])
    start = time.time()
    trainer.train(progress=True)
    after, _ = trainer.evaluate(held_out)
    psnr_after = render_psnr(trainer.student.predict(*held_out[:2]), held_out[2])
    print(f"{args.steps} steps in {time.time() - start:.0f} s")
    print(f"L1 to teacher: {before:.4f} -> {after:.4f}")
    print(f"render PSNR vs teacher: {psnr_before:.2f} dB -> {psnr_after:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
