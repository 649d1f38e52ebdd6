"""Quality of the default model's generator: does a generated video show its caption? And VAE PSNR.

For held-out captions (scenes of held-out seeds: each holds a colour-shape pair never seen in training)
and as many training captions, the generator (a diffusers WanPipeline folder, sampled by the project's
own sampler through ``Vist3aPipeline``) makes a 13 x 128 x 128 video; the first frame (the caption's
reference view) is checked with ``engine.generator.quality.check_frame``: colour accuracy (named objects
whose colour is visible) and relation accuracy (left/right, front/behind from the colour regions). The
same check on the ground-truth render of each scene is printed alongside (the ceiling of the check).
Since a colour counts as visible from 0.3 % of the frame, a frame flooded with the named colours passes it;
the object area (share of the frame in object colours) and the named share (of those pixels, the share in
colours the caption names), next to the true renders', tell the two apart.
The VAE's reconstruction PSNR is measured on whole held-out and training clips.

    .venv/bin/python benchmarks/default_generator.py                        # models/default/generator
    .venv/bin/python benchmarks/default_generator.py --model RUN/pipeline --heldout 8 --train 8 --steps 20

Targets (issue 13): held-out colour accuracy >= 90 %, relation accuracy >= 75 %, VAE PSNR >= 30 dB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `engine` importable


def load_pipeline(wan_folder: Path, workdir: Path):
    """A Vist3aPipeline over ``wan_folder`` with the tiny decoder (the decoder is not used here)."""
    from engine.pipeline.settings import ModelBundle, RuntimeOptions
    from engine.pipeline.vist3a import Vist3aPipeline
    from engine.testing.tiny import TINY_DECODER_KIND, build_stitched_decoder

    build_stitched_decoder(0).save_pretrained(workdir / "decoder")
    bundle = ModelBundle(
        root=workdir,
        name="benchmark",
        wan=str(wan_folder.resolve()),
        decoder_kind=TINY_DECODER_KIND,
        decoder_checkpoint="decoder",
    )
    bundle.save()
    return Vist3aPipeline.from_pretrained(str(workdir), runtime=RuntimeOptions(device="cpu", dtype="float32"))


def generate_first_frame(pipe, caption: str, args, seed: int) -> np.ndarray:
    from engine.pipeline.settings import GenerationSettings

    settings = GenerationSettings(
        prompt=caption,
        num_frames=13,
        height=128,
        width=128,
        num_steps=args.steps,
        guidance_scale=args.cfg,
        flow_shift=args.flow_shift,
        seed=seed,
    )
    latent = pipe.sample_latent(settings, seed)
    frames = pipe.decode_frames(pipe.denormalize_latent(latent))  # (1, T, 3, H, W)
    return frames[0, 0].permute(1, 2, 0).numpy()


def caption_figures(pipe, vae, split: str, count: int, args) -> dict:
    from engine.data import SyntheticClipDataset, generate_scene
    from engine.generator.quality import check_frame
    from engine.generator.vae import check_reconstruction

    dataset = SyntheticClipDataset(count, seed=0, num_frames=1, height=128, width=128, split=split)
    colours, relations, truth_colours, truth_relations, seconds = [], [], [], [], []
    vae_colours, vae_relations = [], []
    areas, shares, truth_areas, truth_shares = [], [], [], []
    for index in range(count):
        scene = generate_scene(dataset.item_seed(index))
        start = time.perf_counter()
        frame = generate_first_frame(pipe, scene.caption, args, seed=args.seed + index)
        seconds.append(time.perf_counter() - start)
        check = check_frame(frame, scene)
        colours += list(check.colors_visible.values())
        relations += check.relations_correct
        areas.append(check.object_area)
        shares.append(check.named_share)
        true_frame = dataset[index].frames[0]  # (H, W, 3) in [0, 1], rendered once
        truth = check_frame(true_frame.numpy(), scene)
        truth_colours += list(truth.colors_visible.values())
        truth_relations += truth.relations_correct
        truth_areas.append(truth.object_area)
        truth_shares.append(truth.named_share)
        # The VAE's reconstruction of the true frame: a generator decoded by this VAE cannot do better.
        ceiling = check_reconstruction(vae, true_frame.permute(2, 0, 1).float() * 2.0 - 1.0, scene)
        vae_colours += list(ceiling.colors_visible.values())
        vae_relations += ceiling.relations_correct
        if args.save_frames:
            import imageio.v3 as iio

            folder = Path(args.save_frames)
            folder.mkdir(parents=True, exist_ok=True)
            iio.imwrite(folder / f"{split}_{index:03d}.png", (frame * 255).round().astype(np.uint8))
    return {
        "captions": count,
        "color_accuracy": float(np.mean(colours)),
        "relation_accuracy": float(np.mean(relations)),
        "relations": len(relations),
        "truth_color_accuracy": float(np.mean(truth_colours)),
        "truth_relation_accuracy": float(np.mean(truth_relations)),
        "vae_color_accuracy": float(np.mean(vae_colours)),
        "vae_relation_accuracy": float(np.mean(vae_relations)),
        "object_area": float(np.mean(areas)),
        "named_share": float(np.mean(shares)),
        "truth_object_area": float(np.mean(truth_areas)),
        "truth_named_share": float(np.mean(truth_shares)),
        "seconds_per_video": float(np.mean(seconds)),
    }


@torch.no_grad()
def vae_psnr(vae, split: str, count: int) -> float:
    from engine.generator.clipcache import ClipCache
    from engine.generator.vae import psnr, reconstruct

    clips = ClipCache(None, split, count)
    values = [
        psnr(reconstruct(vae, clips.frames(i).permute(1, 0, 2, 3)[None]), clips.frames(i).permute(1, 0, 2, 3)[None])
        for i in range(count)
    ]
    return float(np.mean(values))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models" / "default" / "generator", help="WanPipeline folder"
    )
    parser.add_argument("--heldout", type=int, default=50, help="held-out captions")
    parser.add_argument("--train", type=int, default=50, help="training captions")
    parser.add_argument("--vae-clips", type=int, default=8, help="clips per split for the VAE PSNR")
    parser.add_argument("--steps", type=int, default=30, help="sampler steps")
    parser.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale")
    parser.add_argument("--flow-shift", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--vae-only", action="store_true", help="only the VAE PSNR (no transformer needed)")
    parser.add_argument("--save-frames", default=None, help="write each generated first frame here (PNG)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import AutoencoderKLWan

    figures = {"model": str(args.model)}
    vae = AutoencoderKLWan.from_pretrained(str(args.model / "vae"), torch_dtype=torch.float32).eval()
    for split in ("heldout", "train"):
        figures[f"vae_psnr_{split}"] = vae_psnr(vae, split, args.vae_clips)
    if not args.vae_only:
        with tempfile.TemporaryDirectory() as workdir:
            pipe = load_pipeline(args.model, Path(workdir))
            for split, count in (("heldout", args.heldout), ("train", args.train)):
                if count:
                    figures[split] = caption_figures(pipe, vae, split, count, args)

    print(f"model: {args.model}")
    print(
        f"VAE PSNR (13 x 128 x 128, {args.vae_clips} clips): held-out {figures['vae_psnr_heldout']:.2f} dB, "
        f"training {figures['vae_psnr_train']:.2f} dB   (target >= 30)"
    )
    if not args.vae_only:
        print(
            f"{'captions':<10}{'n':>4}{'colour acc':>12}{'relation acc':>14}{'VAE colour':>12}{'VAE relation':>14}"
            f"{'GT colour':>11}{'GT relation':>13}{'s/video':>9}"
        )
        for split in ("heldout", "train"):
            if split in figures:
                f = figures[split]
                print(
                    f"{split:<10}{f['captions']:>4}{f['color_accuracy']:>12.1%}{f['relation_accuracy']:>14.1%}"
                    f"{f['vae_color_accuracy']:>12.1%}{f['vae_relation_accuracy']:>14.1%}"
                    f"{f['truth_color_accuracy']:>11.1%}{f['truth_relation_accuracy']:>13.1%}{f['seconds_per_video']:>9.1f}"
                )
        print(
            "targets on held-out captions: colour >= 90 %, relation >= 75 %  (GT = the check on the true renders,"
            " VAE = on the VAE's reconstructions of them: the ceiling for a generator decoded by this VAE)"
        )
        print(f"{'captions':<10}{'object area':>13}{'named share':>13}{'GT area':>9}{'GT share':>10}")
        for split in ("heldout", "train"):
            if split in figures:
                f = figures[split]
                print(
                    f"{split:<10}{f['object_area']:>13.1%}{f['named_share']:>13.1%}"
                    f"{f['truth_object_area']:>9.1%}{f['truth_named_share']:>10.1%}"
                )
        print(
            "object area: share of the first frame in object colours; named share: of those pixels, the share in"
            " colours the caption names (a frame flooded with a named colour passes the colour check, not this)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
