"""Prompt -> Blender objects: the artist's Generate in one Blender, with the default model, timed phase by phase.

    nice -n 10 .venv/bin/python benchmarks/prompt_to_blender.py [--threads N] [--steps N] [--seed N]
        [--prompts "PROMPT" "PROMPT" ...] [--json]

Builds the extension zip (as ``build.py build`` does, with the embedded default model), then runs Blender
(the bpy module) in a subprocess that installs it, leaves the add-on's preferences at their defaults
(embedded default model, automatic device, a preview every 5 steps) apart from the engine Python (this
Python) and an outputs folder, and generates each prompt in turn through the add-on's own code: the
Generate operator, then the panel's polling (``generation.update``) until the result is imported with
``vist3a.import_run``. The first prompt starts the worker (cold); the next ones reuse it, models loaded.

Per prompt it prints, side by side:
  * worker start: the Generate operator's call (it returns once the started worker said hello);
  * load: the rest of the model loading, up to the last "load" event (torch, diffusers and the bundle);
  * the worker's stages as their progress events arrive (encoding the prompt, denoising, decoding the
    video, decoding the 3D scene, writing the run folder), and the worker's own timings from the run's
    ``metadata.json`` (``load`` = ``Vist3aPipeline.from_pretrained`` alone, ``sample`` = encoding +
    denoising, ``decode_video``, ``decode_scene``, ``write_outputs``);
  * import: the poll that read the result and imported the run folder (objects in the scene);
  * total: the Generate operator's call to the objects in the scene.

``--threads N`` sets the add-on's "CPU Threads" preference (the worker's ``OMP_NUM_THREADS``); by default
it is left automatic: every core but one. ``--steps N`` overrides the model's denoising steps (unticks "Model
Defaults" with the model's other values). The panel's timer polls every 0.2 s; this polls every
``--poll`` s (0.02), so the UI may show the objects up to 0.2 s later than measured here.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLENDER_SCRIPT = Path(__file__).resolve().parent / "blender_scripts" / "prompt_to_blender.py"
RESULT_MARKER = "@@RESULT@@ "
PROMPTS = (
    "a pink sphere to the left of a green house on a dark grey floor under a sunset sky",  # the README's
    "a red cube to the left of a green cone on a grey floor under a cloudy sky",
)
# The worker's stages in order (the add-on's client.STAGE_LABELS), and the column each is printed under.
STAGES = (
    ("load", "load"),
    ("encode_prompt", "encode"),
    ("denoise", "denoise"),
    ("decode_video", "VAE"),
    ("decode_scene", "3D dec"),
    ("write_outputs", "write"),
)
WORKER_TIMINGS = ("load", "sample", "decode_video", "decode_scene", "write_outputs")


def build_zip(out_dir: Path) -> Path:
    spec = importlib.util.spec_from_file_location("vist3a_build", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.build_extension(out_dir=out_dir)


def phases(run: dict) -> dict:
    """Seconds per phase, from the stage ends seen in Blender: worker start, then each stage, then import."""
    out = {"worker start": run["operator_s"] if run["cold"] else 0.0}
    previous = run["operator_s"]
    ends = dict(run["stage_end_s"])
    ends["write_outputs"] = run["result_s"]  # the run folder is complete when the result arrives
    for stage, column in STAGES:
        if stage not in ends:
            out[column] = 0.0 if stage == "load" else float("nan")
            continue
        out[column] = ends[stage] - previous
        previous = ends[stage]
    out["import"] = run["import_s"]
    out["total"] = run["total_s"]
    return out


def print_table(runs: list) -> None:
    columns = ["worker start"] + [column for _, column in STAGES] + ["import", "total"]
    print("Prompt -> Blender objects, seconds per phase (as seen in Blender):")
    print(f"{'run':<6}" + "".join(f"{c:>13}" for c in columns))
    for index, run in enumerate(runs):
        figures = phases(run)
        name = "cold" if run["cold"] else f"warm{index}"
        print(f"{name:<6}" + "".join(f"{figures[c]:>13.2f}" for c in columns))
    print("\nThe worker's own timings (metadata.json), seconds:")
    print(f"{'run':<6}" + "".join(f"{c:>15}" for c in WORKER_TIMINGS))
    for index, run in enumerate(runs):
        name = "cold" if run["cold"] else f"warm{index}"
        timings = run["worker_timings"]
        print(f"{name:<6}" + "".join(f"{timings.get(c, float('nan')):>15.2f}" for c in WORKER_TIMINGS))
    print()
    for index, run in enumerate(runs):
        s = run["settings"]
        print(
            f"{index}: {run['prompt']!r}: {run['objects']} objects, {run['points']} splats, "
            f"{s['num_frames']} frames of {s['width']}x{s['height']}, {s['num_steps']} steps on {run['device']}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", nargs="+", default=list(PROMPTS), help="the first runs cold, the others warm")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="the add-on's CPU Threads preference (default 0: automatic, every core but one)",
    )
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between polls of the worker's events")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here (default: temp folder)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vist3a-bench-") as tmp:
        tmp = Path(tmp)
        zip_path = build_zip(tmp / "dist")
        outputs = (args.keep or tmp / "outputs").resolve()
        parameters = {
            "zip": str(zip_path),
            "python": sys.executable,
            "outputs": str(outputs),
            "prompts": args.prompts,
            "seed": args.seed,
            "steps": args.steps,
            "poll": args.poll,
            "cpu_threads": args.threads or 0,
        }
        params_file = tmp / "params.json"
        params_file.write_text(json.dumps(parameters), encoding="utf-8")
        env_dir = tmp / "blender_user"
        env_dir.mkdir()
        env = {**os.environ, "BLENDER_USER_RESOURCES": str(env_dir)}
        env.pop("OMP_NUM_THREADS", None)  # the add-on's preference decides
        completed = subprocess.run(
            [sys.executable, "-X", "faulthandler", str(BLENDER_SCRIPT), str(params_file)],
            env=env,
            capture_output=True,
            text=True,
        )
        lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARKER)]
        if completed.returncode != 0 or not lines:
            print(f"Blender exited with code {completed.returncode}", file=sys.stderr)
            print(completed.stdout[-3000:], completed.stderr[-3000:], file=sys.stderr)
            return 1
        results = json.loads(lines[0][len(RESULT_MARKER) :])
        results["threads"] = args.threads

    print_table(results["runs"])
    if args.json:
        for run in results["runs"]:
            run["phases_s"] = phases(run)
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
