"""Direct reward finetuning, before and after: consistency, prompt adherence and the scorer's reward.

For held-out captions of the procedural world, each model (a bundle folder) samples a video with its own
default settings (13 x 128² for the default model), decodes it with the VAE and with the stitched decoder,
renders the Gaussians at the decoder's predicted cameras and prints, side by side
(``engine.alignment.evaluate``): consistency PSNR and L1 of the renders against the decoded frames on all
views, the caption scorer's score of frames and renders, and colour / relation accuracy of the first frame.

    .venv/bin/python benchmarks/default_alignment.py                         # models/default without / with its LoRA
    .venv/bin/python benchmarks/default_alignment.py --models BASE RUN/align --captions 16

With one model that has a LoRA (the default), the first row is the same bundle with the LoRA left out.
Target (issue 15): consistency up >= 1 dB with colour and relation accuracy not lower.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `engine` importable


def without_lora(model: Path, workdir: Path) -> Path:
    """A bundle in ``workdir`` that is ``model`` with its LoRA left out (parts referenced by absolute path)."""
    from engine.pipeline.settings import ModelBundle

    bundle = ModelBundle.load(model)
    if bundle.lora is None:
        raise SystemExit(f"{model} has no LoRA: give the models to compare with --models BEFORE AFTER")

    base = dataclasses.replace(
        bundle,
        root=workdir,
        name=f"{bundle.name}-without-lora",
        wan=bundle.portable_reference(bundle.wan),
        decoder_checkpoint=bundle.portable_reference(bundle.decoder_checkpoint),
        points_decoder_checkpoint=(
            None
            if bundle.points_decoder_checkpoint is None
            else bundle.portable_reference(bundle.points_decoder_checkpoint)
        ),
        lora=None,
    )
    base.save()
    return workdir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        type=Path,
        default=[ROOT / "models" / "default"],
        help="bundle folders, compared in this order (one bundle with a LoRA: compared with itself without it)",
    )
    parser.add_argument("--scorer", type=Path, default=ROOT / "models" / "default" / "caption_scorer")
    parser.add_argument("--captions", type=int, default=32, help="held-out captions")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: each model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from engine.alignment.evaluate import compare
    from engine.alignment.scorers import load_scorer
    from engine.data import SyntheticClipDataset, generate_scene

    dataset = SyntheticClipDataset(args.captions, seed=0, num_frames=1, height=128, width=128, split="heldout")
    scenes = [generate_scene(dataset.item_seed(i)) for i in range(args.captions)]
    scorer = load_scorer("dfn-clip", args.scorer)
    with tempfile.TemporaryDirectory() as workdir:
        models = list(args.models)
        if len(models) == 1:
            models = [without_lora(models[0], Path(workdir)), models[0]]
        figures = compare([str(m) for m in models], scenes, scorer, num_steps=args.steps, seed=args.seed)
    labels = list(figures)
    if len(args.models) == 1:
        labels = ["without LoRA", "with LoRA"]
    print(f"{args.captions} held-out captions; scorer {args.scorer}")
    print(
        f"{'model':<16}{'consistency PSNR':>18}{'L1':>8}{'score frames':>14}{'score renders':>15}"
        f"{'colour acc':>12}{'relation acc':>14}"
    )
    for label, f in zip(labels, figures.values()):
        print(
            f"{label[-16:]:<16}{f['consistency_psnr']:>15.2f} dB{f['consistency_l1']:>8.4f}{f['clip_decoded']:>14.4f}"
            f"{f['clip_rendered']:>15.4f}{f['color_accuracy']:>12.1%}{f['relation_accuracy']:>14.1%}"
        )
    print("target: consistency up >= 1 dB, colour and relation accuracy not lower")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(zip(labels, figures.values())), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
