"""GPU memory of a full-size generation, measured on the meta device: parameters, bytes, activation peaks.

    .venv/bin/python benchmarks/memory_full_size.py [--transformer 1.3B|14B] [--kind anysplat-stitched|stitched]

No GPU and no weights needed: the published configurations (``engine.testing.dry_run``) run through the real
pipeline on the meta device at the released recipe's size (13 frames at 512², decoder at 448²,
bf16), and a dispatch-level tracker records the bytes of every tensor created per stage. One table per
simulated card (12 GB and 24 GB), side by side: the automatic memory policy's choice, then per stage
the model's parameters and bytes, the models resident on the GPU, the activation peak and their sum.
The target line checks activation + resident peak <= 11 GiB on the 12 GB card (the 1.3B model).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.pipeline.settings import GenerationSettings, RuntimeOptions  # noqa: E402
from engine.pipeline.vist3a import Vist3aPipeline  # noqa: E402
from engine.testing.dry_run import (  # noqa: E402
    CARD_12GB,
    CARD_24GB,
    meta_weight_loading,
    stage_memory,
    write_dry_run_bundle,
)

GIB = 1024**3
TARGET_12GB = 11 * GIB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transformer", default="1.3B", choices=["1.3B", "14B"])
    parser.add_argument("--kind", default="anysplat-stitched", choices=["anysplat-stitched", "stitched"])
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (the peak does not depend on it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = GenerationSettings(prompt="a red chair in a sunny garden", num_steps=args.steps, seed=0)
    verdict = None
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_dry_run_bundle(Path(tmp) / "bundle", kind=args.kind, transformer=args.transformer)
        for card_name, card in (("12 GB", CARD_12GB), ("24 GB", CARD_24GB)):
            start = time.perf_counter()
            with meta_weight_loading():
                pipeline = Vist3aPipeline.from_pretrained(
                    bundle, runtime=RuntimeOptions(device="meta"), device_memory=card
                )
            rows = stage_memory(pipeline, settings)
            policy = pipeline.memory_policy
            print(
                f"\n{card_name} card ({card[0] / GIB:.1f} GiB free), Wan {args.transformer}, {args.kind}, bf16: "
                f"cpu_offload={policy.cpu_offload} vae_tiling={policy.vae_tiling} ({policy.reason}); "
                f"measured in {time.perf_counter() - start:.0f} s"
            )
            print(
                f"{'stage':<14}{'model':<14}{'params':>14}{'model GiB':>11}{'resident GiB':>14}{'activ. GiB':>12}{'peak GiB':>10}"
            )
            for row in rows:
                print(
                    f"{row['stage']:<14}{row['model']:<14}{row['params']:>14,}{row['model_bytes'] / GIB:>11.2f}"
                    f"{row['resident_bytes'] / GIB:>14.2f}{row['activation_peak_bytes'] / GIB:>12.2f}"
                    f"{row['total_peak_bytes'] / GIB:>10.2f}"
                )
            peak = max(row["total_peak_bytes"] for row in rows)
            print(f"{'peak':<14}{'':<14}{'':>14}{'':>11}{'':>14}{'':>12}{peak / GIB:>10.2f}")
            if card == CARD_12GB:
                verdict = peak <= TARGET_12GB
                print(
                    f"target: activation + resident peak <= 11 GiB on a 12 GB card: {peak / GIB:.2f} GiB -> "
                    + ("MET" if verdict else "NOT MET")
                )
            pipeline.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
