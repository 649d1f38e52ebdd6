"""Held-out figures of the default model's 3D teachers and caption scorer, next to their targets.

    .venv/bin/python benchmarks/default_teachers.py [--scenes 32] [--data DIR] [--caption-data DIR]

Teachers (``models/default/anysplat_teacher``, ``models/default/vggt_teacher``): 13 input views of 112^2
of held-out procedural scenes (the world's held-out split), normalised to view 0's frame and unit mean point
distance; novel-view PSNR at 6 held-out views half-way between inputs (AnySplat), depth AbsRel on surface
pixels, camera rotation error (views 1..12 vs the truth, both relative to view 0). Caption scorer
(``models/default/caption_scorer``): image -> caption top-1 of each held-out scene's reference view among
32 held-out captions. Missing caches are rendered into a temporary folder (about a second per scene).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "models" / "default"
TARGETS = {"novel_psnr": (">=", 26.0), "depth_absrel": ("<=", 0.05), "rot_err_deg": ("<=", 2.0), "top1": (">=", 0.8)}


def _verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    op, target = TARGETS[key]
    ok = value >= target if op == ">=" else value <= target
    return f"{op} {target:g}: {'met' if ok else 'NOT met'}"


def _folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--data", type=Path, help="teacher cache folder ('teacher data'); default: render")
    parser.add_argument("--caption-data", type=Path, help="caption cache folder ('teacher caption data')")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from engine.alignment.scorers import CLIPScorer
    from engine.models.loading import load_model
    from engine.teachers.caption import build_caption_cache, load_caption_cache, retrieval_accuracy
    from engine.teachers.data import build_cache, load_cache
    from engine.teachers.train import evaluate_model

    scratch = tempfile.TemporaryDirectory()
    print(f"{'part':<18} {'MB':>6} {'metric':<16} {'value':>9}  target")
    for name in ("anysplat_teacher", "vggt_teacher"):
        folder = DEFAULT / name
        if not (folder / "model.safetensors").is_file():
            print(f"{name:<18} {'-':>6} (not trained yet)")
            continue
        data = args.data
        if data is None:
            data = Path(scratch.name) / "teacher"
            build_cache(data, "heldout", args.scenes, progress=False)
        samples = load_cache(data, "heldout", args.scenes)
        model, _ = load_model(folder)
        start = time.perf_counter()
        metrics = evaluate_model(model, samples, render=name.startswith("anysplat"))
        seconds = time.perf_counter() - start
        for key in (
            "novel_psnr",
            "novel_coverage",
            "depth_absrel",
            "rot_err_deg",
            "rot_err_max_deg",
            "trans_err",
            "points_err",
        ):
            if key in metrics:
                print(
                    f"{name:<18} {_folder_mb(folder):>6.2f} {key:<16} {metrics[key]:>9.4f}  {_verdict(key, metrics[key])}"
                )
        print(f"{name:<18} {'':>6} {'scenes':<16} {len(samples):>9d}  ({seconds:.0f} s)")
    folder = DEFAULT / "caption_scorer"
    if (folder / "model.safetensors").is_file():
        data = args.caption_data
        if data is None:
            data = Path(scratch.name) / "caption"
            build_caption_cache(data, "heldout", max(32, args.scenes), progress=False)
        frames, captions = load_caption_cache(data, "heldout", max(32, args.scenes))
        result = retrieval_accuracy(CLIPScorer.from_pretrained(folder), frames[:, 0], captions)
        print(
            f"{'caption_scorer':<18} {_folder_mb(folder):>6.2f} {'top1':<16} {result['top1']:>9.4f}  {_verdict('top1', result['top1'])}"
        )
        print(
            f"{'caption_scorer':<18} {'':>6} {'pools of 32':<16} {result['pools']:>9d}  (chance {result['chance']:.3f})"
        )
    else:
        print(f"{'caption_scorer':<18} {'-':>6} (not trained yet)")
    total = sum(_folder_mb(p) for p in DEFAULT.iterdir() if p.is_dir()) if DEFAULT.is_dir() else 0.0
    print(f"all default-model parts in {DEFAULT}: {total:.2f} MB (budget 40 MB)")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
