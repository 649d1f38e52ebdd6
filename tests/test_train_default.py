"""``python -m engine train default`` / ``python3 build.py train-default``: the default model's chain.

The plan's commands are checked against the real CLI parsers; skipping, resuming, failing and installing
run with a fake command runner (which writes what each command would write); the slow test runs the
real chain end to end at ``--scale smoke`` and generates with the bundle it made.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import build_parser
from engine.pipeline.settings import ModelBundle
from engine.training.chain import Command
from engine.training.default_chain import STAGES, ChainOptions, build_stages, run_default

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str]):
    return build_parser(only=argv[0]).parse_args(argv)


def chain(work: Path, *options: str, runner=None) -> int:
    return run_default(parse(["train", "default", "--work", str(work), *options]), runner=runner)


class FakeRunner:
    """Records each command and writes the files the real command would leave (distinct bytes each
    call, so a re-run changes its outputs); ``fail`` maps a stage's first words to an exit status."""

    def __init__(self, fail: dict | None = None):
        self.calls: list[list[str]] = []
        self.fail = fail or {}

    def __call__(self, argv, log, env):
        self.calls.append(list(argv))
        assert env["OMP_NUM_THREADS"] == "1"
        words = tuple(a for a in argv if not a.startswith("-"))[:3]
        out = Path(argv[argv.index("--out") + 1])
        for prefix, code in self.fail.items():
            if words[: len(prefix)] == prefix:
                (out / "checkpoints" / "step_1").mkdir(parents=True, exist_ok=True)
                (out / "config.json").write_text("{}")
                log.write_text(log.read_text() + "Traceback ...\nValueError: the fake stage broke\n")
                return code
        for relative in self._writes(words, argv):
            path = out / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{len(self.calls)} {shlex.join(argv)}")
        return 0

    @staticmethod
    def _writes(words, argv) -> list[str]:
        if words[:2] in {("teacher", "data"), ("caption", "data")} or words[:3] == ("teacher", "caption", "data"):
            return ["train/shard_0.pt", "heldout/shard_0.pt"]
        table = {
            ("train", "vae"): ["config.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"],
            ("train", "video"): ["config.json", "pipeline/model_index.json", "pipeline/transformer/config.json"],
            ("teacher", "train"): ["train_config.json"],
            ("teacher", "export"): ["config.json", "model.safetensors"],
            ("caption", "train"): ["train_config.json"],
            ("caption", "export"): ["caption_scorer.json", "model.safetensors"],
            ("stitch", "search"): ["layer_search.json", "stitching_layer.safetensors"],
            ("stitch", "train"): ["checkpoints/step_1/x", "export/model.safetensors", "export/stitched_config.json"],
            ("align", "train"): [
                "checkpoints/step_1/x",
                "adapter_ema/adapter_config.json",
                "adapter_ema/adapter_model.safetensors",
            ],
        }
        key = words[1:3] if words[0] == "teacher" and words[1] == "caption" else words[:2]
        return table[key]


def stage_of(argv: list[str]) -> str:
    """The chain stage a recorded command belongs to."""
    if argv[0] == "align":
        return "align"
    if argv[0] == "stitch":
        suffix = (
            "-vggt"
            if "vggt_teacher" in argv[argv.index("--model" if argv[1] == "search" else "--base-model") + 1]
            else ""
        )
        return argv[1].replace("train", "stitch") + suffix
    if argv[0] == "train":
        if "--init" not in argv:
            return argv[1]
        if argv[1] == "video":
            return "video-objects"
        return "vae-decoder" if "--freeze-encoder" in argv else "vae-objects"
    if argv[1] in ("caption", "data"):
        return {"caption": "caption", "data": "teacher-data"}[argv[1]]
    return argv[2] if argv[1] == "train" else Path(argv[2]).name


# --------------------------------------------------------------------------------------------- the plan
def test_plan_lists_every_stage_with_its_commands_and_paths_and_runs_nothing(tmp_path, capsys):
    work = tmp_path / "w"
    assert chain(work, "--plan", "--threads", "2") == 0
    text = capsys.readouterr().out
    assert not work.exists(), "--plan must not create anything"
    positions = [text.index(f". {name} [") for name in STAGES]
    assert positions == sorted(positions)
    w = str(work.resolve())
    expected = [
        f"teacher data --out {w}/teacher_data --train 800 --heldout 50",
        f"train vae --out {w}/vae --clip-cache {w}/clips --no-progress --steps 6000",
        f"train vae --out {w}/vae_objects --init {w}/vae/vae --clip-cache {w}/clips --no-progress --steps 1200 "
        "--eval-every 250 --save-every 250 --image-steps 0 --lr 1e-4 --warmup-steps 20 --object-weight 5",
        f"train vae --out {w}/vae_decoder --init {w}/vae_objects/vae --clip-cache {w}/clips --no-progress --steps 2000 "
        "--eval-every 250 --save-every 250 --image-steps 0 --lr 1e-4 --warmup-steps 20 --object-weight 5 "
        "--freeze-encoder yes",
        f"train video --out {w}/video --vae {w}/vae_decoder/vae --clip-cache {w}/clips --no-progress --steps 6000",
        f"train video --out {w}/video_objects --vae {w}/vae_decoder/vae --init {w}/video/pipeline --clip-cache "
        f"{w}/clips --no-progress --steps 1500 --lr 2e-4 --warmup-steps 50 --object-weight 2 --eval-every 500",
        f"teacher train anysplat --data {w}/teacher_data --out {w}/anysplat --steps 2000",
        "--weight camera=5 --threads 2",
        f"teacher export {w}/anysplat --out {w}/parts/anysplat_teacher",
        f"teacher export {w}/vggt --out {w}/parts/vggt_teacher",
        f"teacher caption train --data {w}/caption_data --out {w}/caption --steps 700 --batch-size 48 --lr 1e-3",
        f"teacher caption export {w}/caption --out {w}/parts/caption_scorer",
        f"stitch search --vae {w}/vae_decoder/vae --model {w}/parts/anysplat_teacher --clip-cache {w}/clips "
        f"--spec conv3d_k5x3x3_o96_s1x2x2_p2x1x1 --out {w}/search --world 240 --frames 13 --size 128",
        f"stitch train --base-model {w}/parts/anysplat_teacher --vae {w}/vae_decoder/vae --stitching-init {w}/search "
        f"--clip-cache {w}/clips --out {w}/stitch",
        "--world 800 --views 13 13 --vae-size 128 --model-size 112 --warmup 50 --save-every 50 --lora-rank 16",
        f"align train --model {w}/align_base --out {w}/align --no-progress --steps 1000 --preset paper "
        f"--dfn-clip {w}/parts/caption_scorer --hps-weight 0 --consistency l1 --frames 13",
        f"write the base bundle {w}/align_base/vist3a.json",
        f"assemble {w}/bundle",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    assert "--resume" not in text


@pytest.mark.parametrize("scale", ["full", "smoke"])
def test_every_planned_command_is_accepted_by_the_engines_own_parser(tmp_path, scale):
    commands = [step for stage in build_stages(ChainOptions(work=tmp_path, scale=scale)) for step in stage.steps]
    commands = [c for c in commands if isinstance(c, Command)]
    assert len(commands) == 18  # two per teacher, caption scorer and stitch (AnySplat, VGGT); one per other stage
    for command in commands:
        args = parse(command.full_argv(threads=3))  # an unknown option would exit the parser
        assert callable(args.func)
        if command.threads:
            assert args.threads == 3
    (align,) = [parse(list(c.argv)) for c in commands if c.argv[0] == "align"]
    assert_reward_options_fit(align, consistency="l1")


def assert_reward_options_fit(args, **expected):
    """``align train``'s own checks of its reward options (what runs before any model is loaded)."""
    from engine.alignment.cli import reward_settings
    from engine.alignment.rewards import RewardModelSources, check_sources

    settings = reward_settings(args)
    sources = RewardModelSources(
        dfn_clip=args.dfn_clip,
        hps=args.hps,
        pickscore=args.pickscore,
        lpips_backbone=args.lpips_backbone,
        lpips_lin=args.lpips_lin,
    )
    check_sources(settings, sources)  # raises for options that contradict each other or miss LPIPS files
    assert Path(args.dfn_clip).name == "caption_scorer"
    for name, value in expected.items():
        assert getattr(settings, name) == value, name


def align_args(work: Path, *options: str, capsys):
    """The align stage's command of the chain's plan with ``options``, parsed by ``align train``'s parser."""
    assert chain(work, "--plan", *options) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "python -m engine align train" in x)
    return parse(shlex.split(line.split("python -m engine ", 1)[1]))


def test_the_align_stage_runs_the_paper_preset_with_explicit_choices(tmp_path, capsys):
    work = tmp_path / "w"
    args = align_args(work, capsys=capsys)  # the default: L1 consistency, no HPSv2.1, no LPIPS files
    assert (args.preset, args.consistency, args.hps_weight) == ("paper", "l1", 0.0)
    assert args.lpips_backbone is None and args.hps is None and args.pickscore is None
    assert_reward_options_fit(args, preset="paper", consistency="l1", hps_weight=0.0)

    # L1 + LPIPS: only with both files, which the plan passes on
    assert chain(work, "--plan", "--align-consistency", "l1+lpips") == 2
    out = capsys.readouterr().out
    assert "--lpips-backbone" in out and "--align-consistency l1" in out
    backbone, lin = tmp_path / "vgg16.pth", tmp_path / "vgg.pth"
    files = ("--lpips-backbone", str(backbone), "--lpips-lin", str(lin))
    args = align_args(work, "--align-consistency", "l1+lpips", *files, capsys=capsys)
    assert (args.consistency, args.lpips_backbone, args.lpips_lin) == ("l1+lpips", backbone, lin)
    assert_reward_options_fit(args, consistency="l1+lpips")
    assert chain(work, "--plan", *files) == 2  # files without the choice that uses them
    assert "--align-consistency l1+lpips" in capsys.readouterr().out

    # released: the caption scorer as DFN-CLIP, PickScore left out
    args = align_args(work, "--align-preset", "released", capsys=capsys)
    assert (args.preset, args.pickscore_weight, args.pickscore) == ("released", 0.0, None)
    assert_reward_options_fit(args, preset="released", pickscore_weight=0.0)
    assert chain(work, "--plan", "--align-preset", "released", "--align-consistency", "l1") == 2
    assert "no consistency term" in capsys.readouterr().out


# ------------------------------------------------------------------------------- running (fake runner)
def test_a_whole_chain_runs_each_stage_once_then_skips_everything(tmp_path, capsys):
    work = tmp_path / "w"
    runner = FakeRunner()
    assert chain(work, "--scale", "smoke", runner=runner) == 0
    order = []
    for argv in runner.calls:
        if not order or order[-1] != stage_of(argv):
            order.append(stage_of(argv))
    assert order == [s for s in STAGES if s != "bundle"]
    assert not any("--resume" in argv for argv in runner.calls)
    out = capsys.readouterr().out
    for name in STAGES:
        assert f"{name}: finished in" in out
        assert (work / "logs" / f"{name}.log").is_file()
        assert json.loads((work / "state" / f"{name}.json").read_text())["status"] == "done"
    manifest = json.loads((work / "bundle" / "vist3a.json").read_text())
    assert manifest["wan"] == "generator" and manifest["lora"] == "generator_lora"
    assert manifest["decoder"] == {"kind": "stitched", "checkpoint": "stitched_decoder"}
    assert manifest["points_decoder"] == {"kind": "stitched", "checkpoint": "stitched_points_decoder"}
    assert manifest["defaults"]["num_frames"] == 5 and manifest["defaults"]["height"] == 64  # smoke scale
    bundle = ModelBundle.load(work / "bundle")
    bundle.check_files()
    assert "stitch train" in (bundle.decoder_path / "model.safetensors").read_text()
    # the points decoder is the VGGT stitch's export, the Gaussians decoder the AnySplat stitch's
    stitch_runs = [a for a in runner.calls if a[:2] == ["stitch", "train"]]
    assert [a[a.index("--out") + 1].split("/")[-1] for a in stitch_runs] == ["stitch", "stitch_vggt"]
    assert stitch_runs[1][stitch_runs[1].index("--base-model") + 1].endswith("parts/vggt_teacher")
    assert "stitch train" in (bundle.points_decoder_path / "model.safetensors").read_text()

    again = FakeRunner()
    assert chain(work, "--scale", "smoke", runner=again) == 0
    assert again.calls == []
    out = capsys.readouterr().out
    assert all(f"{name}: skipped (already complete)" in out for name in STAGES)


def test_a_failed_stage_stops_the_chain_names_its_log_and_the_resume_command(tmp_path, capsys):
    work = tmp_path / "w"
    broken = FakeRunner(fail={("train", "video"): 1})
    assert chain(work, "--scale", "smoke", "--threads", "1", runner=broken) == 1
    assert [stage_of(a) for a in broken.calls] == ["teacher-data", "vae", "vae-objects", "vae-decoder", "video"]
    out = capsys.readouterr().out
    log = work.resolve() / "logs" / "video.log"
    assert "video: FAILED" in out and "exit status 1" in out
    assert f"---- last lines of {log} ----" in out and "ValueError: the fake stage broke" in out
    assert f"python -m engine train default --work {work.resolve()} --scale smoke --threads 1" in out
    assert not (work / "bundle").exists()

    # the partial run is resumed, the finished stages are not run again
    fixed = FakeRunner()
    assert chain(work, "--scale", "smoke", runner=fixed) == 0
    assert stage_of(fixed.calls[0]) == "video" and fixed.calls[0][-1] == "--resume"
    assert "teacher-data" not in [stage_of(a) for a in fixed.calls]
    assert not any("--resume" in a for a in fixed.calls[1:])


def test_more_steps_resume_the_stage_and_redo_what_depends_on_it(tmp_path, capsys):
    work = tmp_path / "w"
    assert chain(work, "--scale", "smoke", runner=FakeRunner()) == 0
    old_manifest = (work / "bundle" / "vist3a.json").stat().st_mtime_ns
    runner = FakeRunner()
    assert chain(work, "--scale", "smoke", "--steps-align", "5", runner=runner) == 0
    assert runner.calls == [runner.calls[0]] and stage_of(runner.calls[0]) == "align"
    argv = runner.calls[0]
    assert argv[argv.index("--steps") + 1] == "5" and argv[-1] == "--resume"
    out = capsys.readouterr().out
    assert "align: started (resuming)" in out and "bundle: finished" in out  # its input (the LoRA) changed
    assert (work / "bundle" / "vist3a.json").stat().st_mtime_ns != old_manifest


def test_a_stage_whose_inputs_changed_under_its_run_folder_is_refused(tmp_path, capsys):
    work = tmp_path / "w"
    assert chain(work, "--scale", "smoke", "--until", "video", runner=FakeRunner()) == 0
    runner = FakeRunner()
    assert chain(work, "--scale", "smoke", "--until", "video", "--steps-vae", "9", runner=runner) == 2
    # the VAE was extended; the finetune that started from the old one is not resumed
    assert [stage_of(a) for a in runner.calls] == ["vae"]
    out = capsys.readouterr().out
    assert f"Delete {work.resolve() / 'vae_objects'}" in out


def test_from_needs_the_earlier_outputs_and_until_stops(tmp_path, capsys):
    work = tmp_path / "w"
    assert chain(work, "--scale", "smoke", "--from", "search", runner=FakeRunner()) == 2
    assert "stage teacher-data has not written" in capsys.readouterr().out
    runner = FakeRunner()
    assert chain(work, "--scale", "smoke", "--until", "vae", runner=runner) == 0
    assert [stage_of(a) for a in runner.calls] == ["teacher-data", "vae"]
    assert chain(work, "--scale", "smoke", "--until", "vae", "--install", str(tmp_path / "m")) == 2
    assert "--install" in capsys.readouterr().out


def test_install_replaces_only_the_bundles_own_entries(tmp_path, capsys):
    work, models = tmp_path / "w", tmp_path / "models" / "default"
    (models / "anysplat_teacher").mkdir(parents=True)
    (models / "anysplat_teacher" / "model.safetensors").write_text("teacher")
    (models / "generator" / "vae").mkdir(parents=True)
    (models / "generator" / "vae" / "old.safetensors").write_text("old vae")
    assert chain(work, "--scale", "smoke", "--install", str(models), runner=FakeRunner()) == 0
    assert (models / "anysplat_teacher" / "model.safetensors").read_text() == "teacher"
    assert not (models / "generator" / "vae" / "old.safetensors").exists()
    assert (models / "generator" / "model_index.json").is_file()
    installed = ModelBundle.load(models)
    installed.check_files()
    assert sorted(p.name for p in models.iterdir()) == sorted(
        [
            "anysplat_teacher",
            "generator",
            "generator_lora",
            "stitched_decoder",
            "stitched_points_decoder",
            "vist3a.json",
        ]
    )
    assert installed.points_decoder_path == models / "stitched_points_decoder"
    installed_entries = "generator, stitched_decoder, generator_lora, stitched_points_decoder, vist3a.json"
    assert f"installed {installed_entries} into {models}" in (capsys.readouterr().out)


def test_a_bundle_without_reward_finetuning_carries_the_models_defaults(tmp_path):
    from engine.training.default_bundle import assemble_bundle
    from engine.training.default_chain import MODEL_DEFAULTS

    parts = tmp_path / "parts"
    (parts / "generator").mkdir(parents=True)
    (parts / "generator" / "model_index.json").write_text("{}")
    (parts / "decoder").mkdir()
    bundle_dir = assemble_bundle(
        tmp_path / "bundle",
        generator=parts / "generator",
        lora=None,
        decoder=parts / "decoder",
        name="b",
        defaults=MODEL_DEFAULTS,
    )
    bundle = ModelBundle.load(bundle_dir)
    assert bundle.lora is None and not (bundle_dir / "generator_lora").exists()
    assert not bundle.has_points_decoder and "points_decoder" not in json.loads(
        (bundle_dir / "vist3a.json").read_text()
    )
    assert bundle.generation_settings({"prompt": "a red cube"}).height == 128
    assert bundle.generation_settings({"prompt": "a red cube", "height": 96}).height == 96


def test_build_py_train_default_forwards_its_arguments(tmp_path):
    command = [sys.executable, str(ROOT / "build.py"), "train-default", "--work", str(tmp_path / "w"), "--plan"]
    out = subprocess.run(command + ["--scale", "smoke"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "15. bundle [waiting]" in out.stdout and "--train 2 --heldout 1" in out.stdout
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------------- the real chain (smoke)
@pytest.mark.slow
def test_the_smoke_chain_makes_a_bundle_that_generates(tmp_path):
    """Every stage for real at --scale smoke (about 80 CPU seconds), then a tiny generation with the bundle."""
    work, models = tmp_path / "w", tmp_path / "models"
    engine = [sys.executable, "-m", "engine"]
    command = engine + ["train", "default", "--work", str(work), "--scale", "smoke", "--install", str(models)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for name in STAGES:
        assert f"{name}: finished in" in done.stdout
    bundle = ModelBundle.load(models)
    bundle.check_files()
    assert bundle.decoder_kind == "stitched" and bundle.lora == "generator_lora"
    assert json.loads((work / "parts" / "caption_scorer" / "caption_scorer.json").read_text())
    (record,) = [json.loads(line) for line in (work / "align" / "reward_log.jsonl").read_text().splitlines()]
    reward = json.loads((work / "align" / "align_config.json").read_text())["reward"]
    assert (reward["preset"], reward["consistency"], reward["scorers"]) == ("paper", "l1", {"clip": "caption-scorer"})
    assert list(record["terms"]) == reward["terms"] and "consistency_l1" in reward["terms"]
    assert not any("lpips" in name or "hps" in name for name in reward["terms"])

    run = tmp_path / "scene"
    prompt = ["a red cube on a grey floor", "--frames", "5", "--height", "64", "--width", "64", "--steps", "2"]
    generate = engine + ["generate", *prompt, "--model", str(models), "--out", str(run), "--seed", "0"]
    made = subprocess.run(generate, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-4000:]
    metadata = json.loads((run / "metadata.json").read_text())
    assert metadata["model"]["lora"]["path"] == str((models / "generator_lora").resolve())
    assert metadata["outputs"]["num_primitives"] == 5 * 56 * 56  # one Gaussian per pixel at the decoder's 56²
    assert (run / "scene.ply").stat().st_size > 0

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert all(f"{name}: skipped (already complete)" in again.stdout for name in STAGES)
