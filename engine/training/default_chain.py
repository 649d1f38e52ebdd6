"""``python -m engine train default``: the embedded default model, reproduced stage by stage.

Fifteen stages, each made of the engine's own commands (see :mod:`engine.training.chain` for the resume and
skip rules, the logs and the state files), all inside one work folder ``W``:

==============  ====================================================================================
teacher-data    ``teacher data``: the teachers' cached orbits (W/teacher_data)
vae             ``train vae``: the Wan video VAE (W/vae; export W/vae/vae), clips cached in W/clips
vae-objects     ``train vae --init``: that VAE finetuned with the objects' pixels weighted in its loss
                (``--object-weight``; W/vae_objects; export W/vae_objects/vae)
vae-decoder     ``train vae --init --freeze-encoder yes``: its decoder finetuned alone, objects weighted; the
                latent space stays (W/vae_decoder; export W/vae_decoder/vae, the VAE of every later stage)
video           ``train video``: transformer + text encoder on that VAE (W/video; export W/video/pipeline)
video-objects   ``train video --init``: that generator finetuned with the latent pixels that hold an object
                weighted in the flow-matching loss (``--object-weight``; W/video_objects; export
                W/video_objects/pipeline, the generator of every later stage)
anysplat        ``teacher train anysplat`` + ``teacher export`` (W/anysplat -> W/parts/anysplat_teacher)
vggt            ``teacher train vggt`` + ``teacher export`` (W/vggt -> W/parts/vggt_teacher)
caption         ``teacher caption data|train|export`` (W/caption_data, W/caption -> W/parts/caption_scorer)
search          ``stitch search``: the stitching layer of the VAE latent into the AnySplat teacher (W/search)
stitch          ``stitch train``: LoRA self-distillation of the stitched decoder (W/stitch; export W/stitch/export)
search-vggt     ``stitch search`` into the VGGT teacher (W/search_vggt)
stitch-vggt     ``stitch train`` of the stitched VGGT, the pointmap decoder (W/stitch_vggt; export W/stitch_vggt/export)
align           ``align train``: reward finetuning (LoRA) of the generator with the stitched decoder; the
                paper preset with the caption scorer as its CLIP scorer and L1 consistency (base bundle
                W/align_base; run W/align)
bundle          W/bundle: generator + LoRA + stitched decoder + stitched points decoder + ``vist3a.json``;
                ``--install DIR`` copies it
==============  ====================================================================================

``--scale full`` is the recipe of docs/default_model.md (hours to days on a CPU); ``--scale smoke``
shrinks every stage to seconds (tiny architectures, a few steps, a few clips) to check the whole chain.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from engine.training.chain import (
    ChainError,
    Command,
    InProcess,
    Stage,
    format_seconds,
    plan_text,
    run_chain,
    stage_status,
)

STAGES = (
    "teacher-data",
    "vae",
    "vae-objects",
    "vae-decoder",
    "video",
    "video-objects",
    "anysplat",
    "vggt",
    "caption",
    "search",
    "stitch",
    "search-vggt",
    "stitch-vggt",
    "align",
    "bundle",
)
TRAINED_STAGES = (
    *("vae", "vae-objects", "vae-decoder", "video", "video-objects"),
    *("anysplat", "vggt", "caption", "stitch", "stitch-vggt", "align"),
)

# The stitching conv of the default model: the released stitch's kernel (5 x 3 x 3, stride 1 x 2 x 2) with
# 96 output channels, the teachers' width (docs/default_model.md, "Stitching").
STITCH_SPEC = "conv3d_k5x3x3_o96_s1x2x2_p2x1x1"
# Loss weight of the teachers' camera term: the committed teachers learned depth, not cameras; weighting
# the camera loss up is the first of the next tries docs/default_model.md lists ("3D teachers").
TEACHER_WEIGHTS = ("--weight", "camera=5")

# The generation settings the default model is made for, written into its manifest's "defaults": the
# generator's training format (13 frames of 128², flow shift 3) and the sampler settings its benchmark
# uses (benchmarks/default_generator.py: 30 steps, guidance 5).
MODEL_DEFAULTS = {
    "num_frames": 13,
    "height": 128,
    "width": 128,
    "flow_shift": 3.0,
    "num_steps": 30,
    "guidance_scale": 5.0,
}
SMOKE_MODEL_DEFAULTS = {"num_frames": 5, "height": 64, "width": 64, "flow_shift": 3.0, "num_steps": 2}

# ---------------------------------------------------------------------------------------- full scale
# Steps of each training stage, with the figures of docs/default_model.md (2-core CPU, one thread, shared).
FULL_STEPS = {
    # VAE run 4: 2000 image steps, then video crops; the shipped VAE is its step-6000 checkpoint (the schedule,
    # first 8000 steps, was shortened to 6500 at step 4500 to anneal within the session): held-out caption
    # check of its reconstructions 69 % colour / 44 % relations on 32 first frames (the generator's ceiling).
    "vae": 6000,
    # The shipped VAE (session 6): run 4's step 6000 finetuned 1200 steps with the objects' pixels weighted 5
    # (`/work/runs/vae_obj5`, 26 min): caption check of its reconstructions 82.8 % / 62.3 % on the same frames.
    "vae-objects": 1200,
    # The shipped VAE (session 9): that VAE's decoder finetuned 2000 steps, encoder frozen, objects weighted 5
    # (`/work/runs/vae_dec`, 38 min): caption check of its reconstructions on the benchmark's 50 held-out first
    # frames 85.2 % / 60.6 % (the session-6 VAE: 80.5 % / 56.6 %), whole held-out clips 23.07 dB (22.73).
    "vae-decoder": 2000,
    # The shipped transformer: 6000 steps on the step-3750 VAE, then 1600 steps finetuned on the step-6000
    # VAE's latents and 1600 more on the object-weighted VAE's (`train video --init`, sessions 5 and 6: held-out
    # colour / relation accuracy 55.0 % / 13.1 %, 56.4 % / 15.2 % with the session-9 decoder); from scratch on the
    # final VAE, as here, is the plain recipe.
    "video": 6000,
    # The shipped transformer (session 9): the one above finetuned 1500 steps with the objects' latent pixels
    # weighted 2 (`/work/runs/video6`, 20 min): held-out colour / relation accuracy 64.4 % / 18.2 %; weight 5 flooded
    # the floor with the named colours (docs/default_model.md).
    "video-objects": 1500,
    # `teacher train` default. The shipped VGGT (session 7) continued the world-version-1 teacher with the camera
    # loss weighted 5 on a 3400-scene cache, 2000 + 2000 steps (35 min, the second run with the sky's points
    # supervised): depth AbsRel 0.028 on 16 held-out scenes (target 0.05). The shipped AnySplat is session 6's
    # (depth 0.098); session 7's (2400 steps, depth 0.042) left the sky transparent and is not shipped
    # (docs/default_model.md). Cameras not learned by either (46-49 degrees, target 2).
    "anysplat": 2000,
    "vggt": 2000,
    # The committed caption scorer: 700 steps, batch 48, lr 1e-3, 33.6 min, held-out top-1 0.898 (>= 0.80).
    "caption": 700,
    # the shipped stitched decoder (session 6): 500 steps (23.7 min, 2.4-4 s per step on the loaded machine; 1.56 s
    # on an idle one, session 7), novel views 0.05 dB above its teacher
    "stitch": 500,
    # the shipped stitched VGGT (session 7): the same recipe as the AnySplat stitch (12.4 min), points 0.056 from
    # its teacher's
    "stitch-vggt": 500,
    # `align train` default (the paper's run length). The shipped LoRA: 150 steps with the reward weighted 10 and
    # lr 3e-4 to make up for the short run (26.5 min; consistency +0.61 dB, colour and relations not lower).
    "align": 1000,
}
FULL = {
    "teacher-data": ("--train", "800", "--heldout", "50"),  # README: 800 training + 50 held-out orbits
    # run 4's evaluation and checkpoint spacing; architecture, crops and data: `train vae` defaults
    "vae": ("--eval-every", "250", "--save-every", "250"),
    # after the "vae" options: video crops only (no image stage), a gentler schedule, the objects weighted
    "vae-objects": ("--image-steps", "0", "--lr", "1e-4", "--warmup-steps", "20", "--object-weight", "5"),
    # after the "vae" options: the same finetune of the decoder alone
    "vae-decoder": (
        *("--image-steps", "0", "--lr", "1e-4", "--warmup-steps", "20", "--object-weight", "5"),
        *("--freeze-encoder", "yes"),
    ),
    "video": (),  # `train video` defaults: 4 heads x 32, 8 layers, ffn 384, batch 4, 800 clips of 13 x 128²
    # after the "video" options
    "video-objects": ("--lr", "2e-4", "--warmup-steps", "50", "--object-weight", "2", "--eval-every", "500"),
    "teacher": ("--train-scenes", "800"),
    "caption-data": ("--train", "2000", "--heldout", "128"),  # the committed scorer: 2000 training scenes
    "caption": ("--batch-size", "48", "--lr", "1e-3"),
    # >= 200 clips (issue 15); 13 x 128² -> latent 16 x 4 x 16 x 16 -> an 8 x 8 token grid at 112²
    "search": ("--world", "240", "--frames", "13", "--size", "128"),
    "stitch": (
        *("--world", "800", "--views", "13", "13", "--vae-size", "128", "--model-size", "112"),
        *("--warmup", "50", "--save-every", "50", "--lora-rank", "16", "--lora-alpha", "16"),
    ),
    # the generator's own format (13 x 128²) and flow shift (3, as `train video` trains and exports it)
    "align": ("--frames", "13", "--height", "128", "--width", "128", "--flow-shift", "3", "--save-every", "50"),
}

# ---------------------------------------------------------------------------------------- smoke scale
SMOKE_STEPS = {
    **{"vae": 2, "vae-objects": 1, "vae-decoder": 1, "video": 2, "video-objects": 1},
    **{"anysplat": 1, "vggt": 1, "caption": 1},
    **{"stitch": 1, "stitch-vggt": 1, "align": 1},
}
SMOKE = {
    "teacher-data": ("--train", "2", "--heldout", "1"),
    "vae": (
        *("--image-steps", "1", "--batch-size", "1", "--image-batch-size", "1"),
        *("--crop-frames", "5", "--crop-size", "16", "--image-crop-size", "16", "--base-dim", "8"),
        *("--num-frames", "5", "--size", "64", "--train-clips", "2", "--eval-clips", "1", "--stats-clips", "1"),
        *("--eval-every", "0", "--save-every", "1", "--log-every", "1"),
    ),
    "vae-objects": ("--image-steps", "0", "--object-weight", "5"),
    "vae-decoder": ("--image-steps", "0", "--object-weight", "5", "--freeze-encoder", "yes"),
    "video-objects": ("--object-weight", "2"),
    "video": (
        *("--batch-size", "1", "--num-attention-heads", "2", "--attention-head-dim", "8", "--num-layers", "1"),
        *("--ffn-dim", "16", "--freq-dim", "16", "--text-dim", "16", "--text-layers", "1"),
        *("--num-frames", "5", "--size", "64", "--train-clips", "2", "--eval-clips", "1"),
        *("--eval-every", "0", "--save-every", "1", "--log-every", "1"),
    ),
    "teacher": ("--train-scenes", "2", "--eval-scenes", "1", "--eval-every", "1"),
    "caption-data": ("--train", "4", "--heldout", "32"),  # 32: the held-out retrieval pool's size
    "caption": ("--batch-size", "4", "--eval-every", "1"),
    "search": ("--world", "2", "--frames", "5", "--size", "64"),
    "stitch": (
        *("--world", "2", "--views", "5", "5", "--vae-size", "64", "--model-size", "56"),
        *("--warmup", "1", "--save-every", "1", "--lora-rank", "4", "--lora-alpha", "4"),
    ),
    "align": (
        *("--frames", "5", "--height", "64", "--width", "64", "--flow-shift", "3", "--save-every", "1"),
        *("--rollout-steps", "2", "2", "--grad-steps", "1", "--clips", "2"),
    ),
}
SCALES = {"full": (FULL, FULL_STEPS), "smoke": (SMOKE, SMOKE_STEPS)}


@dataclass(frozen=True)
class ChainOptions:
    """What ``train default`` was asked (see :func:`add_parser` for each option)."""

    work: Path
    scale: str = "full"
    threads: Optional[int] = 1
    steps: Optional[dict] = None  # stage -> steps, overriding the scale's
    align_preset: str = "paper"
    align_consistency: Optional[str] = None  # paper preset: "l1" (None: the chain's default) or "l1+lpips"
    lpips_backbone: Optional[Path] = None
    lpips_lin: Optional[Path] = None

    def steps_of(self, stage: str) -> int:
        return (self.steps or {}).get(stage) or SCALES[self.scale][1][stage]

    def args_of(self, key: str) -> tuple[str, ...]:
        return SCALES[self.scale][0][key]


# Where everything lives inside the work folder W (relative paths).
LAYOUT = {
    "teacher_data": "teacher_data",
    "clips": "clips",
    "vae_run": "vae",
    "vae_base": "vae/vae",
    "vae_objects_run": "vae_objects",
    "vae_objects": "vae_objects/vae",
    "vae_decoder_run": "vae_decoder",
    "vae": "vae_decoder/vae",
    "video_run": "video",
    "video_base": "video/pipeline",
    "video_objects_run": "video_objects",
    "generator": "video_objects/pipeline",
    "anysplat_run": "anysplat",
    "anysplat": "parts/anysplat_teacher",
    "vggt_run": "vggt",
    "vggt": "parts/vggt_teacher",
    "caption_data": "caption_data",
    "caption_run": "caption",
    "caption": "parts/caption_scorer",
    "search": "search",
    "stitch_run": "stitch",
    "decoder": "stitch/export",
    "search_vggt": "search_vggt",
    "stitch_vggt_run": "stitch_vggt",
    "points_decoder": "stitch_vggt/export",
    "align_base": "align_base",
    "align_run": "align",
    "lora": "align/adapter_ema",
    "bundle": "bundle",
}


def layout(work: Path) -> SimpleNamespace:
    """The chain's paths inside ``work`` as attributes (``layout(W).vae`` is W/vae_decoder/vae)."""
    return SimpleNamespace(work=work, **{name: work / relative for name, relative in LAYOUT.items()})


def _teacher_stage(options: ChainOptions, w: SimpleNamespace, kind: str) -> Stage:
    run, export = getattr(w, f"{kind}_run"), getattr(w, kind)
    train = Command(
        ("teacher", "train", kind, "--data", str(w.teacher_data), "--out", str(run))
        + ("--steps", str(options.steps_of(kind)), *options.args_of("teacher"), *TEACHER_WEIGHTS),
        run_dir=run,
        resume_probe="train_config.json",
        threads=True,
    )
    return Stage(
        kind,
        f"the {'AnySplat' if kind == 'anysplat' else 'VGGT'} teacher -> {export}",
        (train, Command(("teacher", "export", str(run), "--out", str(export)))),
        outputs=(export / "config.json", export / "model.safetensors"),
        inputs=(w.teacher_data,),
    )


def _generator_stages(options: ChainOptions, w: SimpleNamespace) -> list[Stage]:
    data = Command(("teacher", "data", "--out", str(w.teacher_data), *options.args_of("teacher-data")))
    common = ("--clip-cache", str(w.clips), "--no-progress")

    def train(kind: str, stage: str, run: Path, inputs: tuple[str, ...], option_keys: tuple[str, ...]) -> Command:
        """``train KIND`` of ``stage`` in ``run`` (resumable): ``inputs``, the clip cache, the stage's steps, then
        the options of ``option_keys`` in order."""
        options_given = tuple(arg for key in option_keys for arg in options.args_of(key))
        return Command(
            ("train", kind, "--out", str(run), *inputs, *common, "--steps", str(options.steps_of(stage)))
            + options_given,
            run_dir=run,
            resume_probe="config.json",
            threads=True,
        )

    vae = train("vae", "vae", w.vae_run, (), ("vae",))
    vae_objects = train("vae", "vae-objects", w.vae_objects_run, ("--init", str(w.vae_base)), ("vae", "vae-objects"))
    vae_decoder = train("vae", "vae-decoder", w.vae_decoder_run, ("--init", str(w.vae_objects)), ("vae", "vae-decoder"))
    vae_input = ("--vae", str(w.vae))
    video = train("video", "video", w.video_run, vae_input, ("video",))
    video_objects = train(
        "video",
        "video-objects",
        w.video_objects_run,
        (*vae_input, "--init", str(w.video_base)),
        ("video", "video-objects"),
    )
    return [
        Stage(
            "teacher-data",
            f"the teachers' cached orbits -> {w.teacher_data}",
            (data,),
            outputs=(w.teacher_data / "train", w.teacher_data / "heldout"),
        ),
        Stage(
            "vae",
            f"the video VAE -> {w.vae_base}",
            (vae,),
            outputs=(w.vae_base / "config.json", w.vae_base / "diffusion_pytorch_model.safetensors"),
        ),
        Stage(
            "vae-objects",
            f"the video VAE finetuned with the objects weighted -> {w.vae_objects}",
            (vae_objects,),
            outputs=(w.vae_objects / "config.json", w.vae_objects / "diffusion_pytorch_model.safetensors"),
            inputs=(w.vae_base,),
        ),
        Stage(
            "vae-decoder",
            f"its decoder finetuned alone, the objects weighted -> {w.vae}",
            (vae_decoder,),
            outputs=(w.vae / "config.json", w.vae / "diffusion_pytorch_model.safetensors"),
            inputs=(w.vae_objects,),
        ),
        Stage(
            "video",
            f"the video generator (WanPipeline) -> {w.video_base}",
            (video,),
            outputs=(w.video_base / "model_index.json", w.video_base / "transformer" / "config.json"),
            inputs=(w.vae,),
        ),
        Stage(
            "video-objects",
            f"the video generator finetuned with the objects weighted -> {w.generator}",
            (video_objects,),
            outputs=(w.generator / "model_index.json", w.generator / "transformer" / "config.json"),
            inputs=(w.vae, w.video_base),
        ),
    ]


def _caption_stage(options: ChainOptions, w: SimpleNamespace) -> Stage:
    steps = (
        Command(("teacher", "caption", "data", "--out", str(w.caption_data), *options.args_of("caption-data"))),
        Command(
            ("teacher", "caption", "train", "--data", str(w.caption_data), "--out", str(w.caption_run))
            + ("--steps", str(options.steps_of("caption")), *options.args_of("caption")),
            run_dir=w.caption_run,
            resume_probe="train_config.json",
            threads=True,
        ),
        Command(("teacher", "caption", "export", str(w.caption_run), "--out", str(w.caption))),
    )
    return Stage(
        "caption",
        f"the caption scorer -> {w.caption}",
        steps,
        outputs=(w.caption / "caption_scorer.json", w.caption / "model.safetensors"),
    )


def _stitch_stages(options: ChainOptions, w: SimpleNamespace, kind: str = "anysplat") -> list[Stage]:
    """``search`` + ``stitch`` (the AnySplat teacher: the Gaussians decoder), or with ``kind`` "vggt"
    ``search-vggt`` + ``stitch-vggt`` (the VGGT teacher: the pointmap decoder), the same recipe."""
    suffix = "" if kind == "anysplat" else "-vggt"
    teacher = getattr(w, kind)
    search_dir = w.search if kind == "anysplat" else w.search_vggt
    run = w.stitch_run if kind == "anysplat" else w.stitch_vggt_run
    export = w.decoder if kind == "anysplat" else w.points_decoder
    search = Command(
        ("stitch", "search", "--vae", str(w.vae), "--model", str(teacher), "--clip-cache", str(w.clips))
        + ("--spec", STITCH_SPEC, "--out", str(search_dir), *options.args_of("search"))
    )
    train = Command(
        ("stitch", "train", "--base-model", str(teacher), "--vae", str(w.vae), "--stitching-init", str(search_dir))
        + ("--clip-cache", str(w.clips), "--out", str(run), "--steps", str(options.steps_of("stitch" + suffix)))
        + options.args_of("stitch"),
        run_dir=run,
        resume_probe="checkpoints/step_*",
    )
    what = "stitched decoder" if kind == "anysplat" else "stitched points decoder (VGGT)"
    return [
        Stage(
            "search" + suffix,
            f"the stitching layer search{' into VGGT' if suffix else ''} -> {search_dir}",
            (search,),
            outputs=(search_dir / "layer_search.json", search_dir / "stitching_layer.safetensors"),
            inputs=(w.vae, teacher),
        ),
        Stage(
            "stitch" + suffix,
            f"the {what} -> {export}",
            (train,),
            outputs=(export / "model.safetensors", export / "stitched_config.json"),
            inputs=(w.vae, teacher, search_dir / "stitching_layer.safetensors"),
        ),
    ]


def _steps_arg(args: argparse.Namespace, stage: str) -> Optional[int]:
    """The value of ``--steps-STAGE`` (argparse stores ``--steps-vae-objects`` as ``steps_vae_objects``)."""
    return getattr(args, "steps_" + stage.replace("-", "_"))


def reward_args(options: ChainOptions, w: SimpleNamespace) -> tuple[str, ...]:
    """``align train``'s reward options on the default model's parts, every choice on the command line.

    ``paper`` (default): the caption scorer in DFN-CLIP's place; HPSv2.1 left out (``--hps-weight 0``:
    nothing here scores human preference, and the caption scorer twice would only double the CLIP term);
    the consistency term ``--consistency l1`` (C = -L1: the LPIPS weights cannot be downloaded here) unless
    ``align_consistency`` is "l1+lpips", which needs both LPIPS files. ``released``: the caption scorer in
    DFN-CLIP's place and PickScore left out (``--pickscore-weight 0``: the caption scorer's cosine is not on
    PickScore's scale, where |1 - score/100| would be all but constant). ChainError for options that
    cannot work together."""
    scorer = str(w.caption)
    lpips_given = options.lpips_backbone is not None or options.lpips_lin is not None
    if options.align_preset == "released":
        if options.align_consistency is not None or lpips_given:
            raise ChainError(
                "--align-consistency and the LPIPS files belong to --align-preset paper: the released reward has "
                "no consistency term"
            )
        return ("--preset", "released", "--dfn-clip", scorer, "--pickscore-weight", "0")
    consistency = options.align_consistency or "l1"
    if consistency == "l1" and lpips_given:
        raise ChainError(
            "--lpips-backbone/--lpips-lin are used by the L1+LPIPS consistency term: add --align-consistency "
            "l1+lpips, or drop them"
        )
    args = ("--preset", "paper", "--dfn-clip", scorer, "--hps-weight", "0", "--consistency", consistency)
    if consistency == "l1":
        return args
    if options.lpips_backbone is None or options.lpips_lin is None:
        raise ChainError(
            "--align-consistency l1+lpips needs the LPIPS weights: give --lpips-backbone (torchvision's VGG16 "
            "file) and --lpips-lin (LPIPS v0.1 vgg.pth), or use --align-consistency l1 (the default); see README, "
            "'Reward finetuning'"
        )
    return (
        *args,
        *("--lpips-backbone", str(Path(options.lpips_backbone).resolve())),
        *("--lpips-lin", str(Path(options.lpips_lin).resolve())),
    )


def write_align_base(w: SimpleNamespace) -> None:
    """The base bundle ``align train`` finetunes: the generator and the stitched decoder, no LoRA (paths
    relative to the bundle folder, so the work folder can move)."""
    from engine.io.atomic import atomic_write
    from engine.pipeline.settings import BUNDLE_MANIFEST, ModelBundle

    bundle = ModelBundle(
        root=w.align_base,
        name="vist3a-default-base",
        wan="../" + LAYOUT["generator"],
        decoder_kind="stitched",
        decoder_checkpoint="../stitch/export",
    )
    w.align_base.mkdir(parents=True, exist_ok=True)
    with atomic_write(w.align_base / BUNDLE_MANIFEST, "w") as handle:
        handle.write(json.dumps(bundle.to_manifest(), indent=2) + "\n")
    ModelBundle.load(w.align_base).check_files()


def _final_stages(options: ChainOptions, w: SimpleNamespace) -> list[Stage]:
    from engine.training.default_bundle import assemble_bundle

    align = Command(
        ("align", "train", "--model", str(w.align_base), "--out", str(w.align_run), "--no-progress")
        + ("--steps", str(options.steps_of("align")), *reward_args(options, w), *options.args_of("align")),
        run_dir=w.align_run,
        resume_probe="checkpoints/step_*",
    )
    name = "vist3a-default" if options.scale == "full" else f"vist3a-default-{options.scale}"
    extra = {
        "note": "the embedded default model: a miniature VIST3A trained on the procedural world (engine.data)",
        "trained_by": "python -m engine train default",
        "scale": options.scale,
        "align_preset": options.align_preset,
        # the align stage's reward options, the work folder's paths relative to it
        "align_reward": shlex.join(reward_args(options, w)).replace(f"{w.work}/", ""),
    }

    def bundle() -> None:
        defaults = MODEL_DEFAULTS if options.scale == "full" else SMOKE_MODEL_DEFAULTS
        assemble_bundle(
            w.bundle,
            generator=w.generator,
            lora=w.lora,
            decoder=w.decoder,
            points_decoder=w.points_decoder,
            name=name,
            extra=extra,
            defaults=defaults,
        )

    return [
        Stage(
            "align",
            f"reward finetuning of the generator -> {w.lora}",
            (InProcess(f"write the base bundle {w.align_base}/vist3a.json", lambda: write_align_base(w)), align),
            outputs=(w.lora / "adapter_config.json", w.lora / "adapter_model.safetensors"),
            inputs=(w.generator, w.decoder, w.caption),
        ),
        Stage(
            "bundle",
            f"the model bundle -> {w.bundle}",
            (
                InProcess(
                    f"assemble {w.bundle} ({name}) from {w.generator}, {w.lora}, {w.decoder}, {w.points_decoder}",
                    bundle,
                ),
            ),
            outputs=(w.bundle / "vist3a.json",),
            inputs=(w.generator, w.lora, w.decoder, w.points_decoder),
        ),
    ]


def build_stages(options: ChainOptions) -> list[Stage]:
    """All fifteen stages, in order, for ``options``; raises ChainError for options that cannot work."""
    if options.scale not in SCALES:
        raise ChainError(f"unknown scale {options.scale!r}; choose one of {', '.join(SCALES)}")
    w = layout(Path(options.work).resolve())
    stages = _generator_stages(options, w)
    stages += [_teacher_stage(options, w, "anysplat"), _teacher_stage(options, w, "vggt"), _caption_stage(options, w)]
    stages += _stitch_stages(options, w) + _stitch_stages(options, w, "vggt") + _final_stages(options, w)
    assert tuple(stage.name for stage in stages) == STAGES
    return stages


def select_stages(stages: list[Stage], first: Optional[str], last: Optional[str]) -> list[Stage]:
    """The stages from ``first`` to ``last`` (names; None: the chain's ends). ChainError when reversed."""
    names = [stage.name for stage in stages]
    start = names.index(first) if first else 0
    stop = names.index(last) if last else len(names) - 1
    if start > stop:
        raise ChainError(f"--from {first} comes after --until {last}: nothing to run")
    return stages[start : stop + 1]


def check_earlier_outputs(stages: list[Stage], first: Optional[str]) -> None:
    """With ``--from``: every stage before it must have written its outputs (ChainError naming them)."""
    if not first:
        return
    for stage in stages[: [s.name for s in stages].index(first)]:
        missing = [str(path) for path in stage.outputs if not path.exists()]
        if missing:
            raise ChainError(
                f"--from {first}: stage {stage.name} has not written {', '.join(missing)}; run it first "
                f"(drop --from, or start from {stage.name})"
            )


# ---------------------------------------------------------------------------------------------- CLI
def add_parser(stages_subparsers) -> argparse.ArgumentParser:
    """``train default`` under the ``train`` command group."""
    parser = stages_subparsers.add_parser(
        "default",
        help="reproduce the embedded default model: every stage from data to the bundle (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--work", required=True, type=Path, help="work folder of every stage (runs, logs, bundle)")
    parser.add_argument("--scale", choices=tuple(SCALES), default="full", help="full recipe or seconds-long smoke")
    parser.add_argument("--from", dest="first", choices=STAGES, help="start at this stage (earlier ones must be done)")
    parser.add_argument("--until", dest="last", choices=STAGES, help="stop after this stage")
    parser.add_argument("--plan", action="store_true", help="print the stages and their commands; run nothing")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every stage (default 1)")
    parser.add_argument("--install", type=Path, help="copy the bundle into this folder (e.g. models/default)")
    for stage in TRAINED_STAGES:
        parser.add_argument(f"--steps-{stage}", type=int, metavar="N", help=f"steps of stage {stage}")
    parser.add_argument(
        "--align-preset",
        choices=("paper", "released"),
        default="paper",
        help="reward of the align stage (default paper, with the caption scorer as its CLIP scorer)",
    )
    parser.add_argument(
        "--align-consistency",
        choices=("l1", "l1+lpips"),
        help="paper preset: the consistency term (default l1; l1+lpips also needs --lpips-backbone and --lpips-lin)",
    )
    parser.add_argument("--lpips-backbone", type=Path, help="torchvision VGG16 weights file (l1+lpips)")
    parser.add_argument("--lpips-lin", type=Path, help="LPIPS v0.1 linear-layer weights file (l1+lpips)")
    parser.set_defaults(func=run_default)
    return parser


def options_from_args(args: argparse.Namespace) -> ChainOptions:
    steps = {s: _steps_arg(args, s) for s in TRAINED_STAGES if _steps_arg(args, s) is not None}
    if any(value < 1 for value in steps.values()):
        raise ChainError("--steps-STAGE must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise ChainError(f"--threads must be at least 1, got {args.threads}")
    return ChainOptions(
        work=args.work,
        scale=args.scale,
        threads=args.threads,
        steps=steps,
        align_preset=args.align_preset,
        align_consistency=args.align_consistency,
        lpips_backbone=args.lpips_backbone,
        lpips_lin=args.lpips_lin,
    )


def resume_command(args: argparse.Namespace) -> str:
    """The ``train default`` command line that continues this chain (every option but --plan)."""
    argv = ["python", "-m", "engine", "train", "default", "--work", str(Path(args.work).resolve())]
    argv += ["--scale", args.scale, "--threads", str(args.threads)]
    options = ("first", "last", "install", "align_preset", "align_consistency", "lpips_backbone", "lpips_lin")
    for option in options:
        value = getattr(args, option)
        flag = {"first": "--from", "last": "--until"}.get(option, "--" + option.replace("_", "-"))
        if value is not None and not (option == "align_preset" and value == "paper"):
            argv += [flag, str(Path(value).resolve()) if isinstance(value, Path) else str(value)]
    for stage in TRAINED_STAGES:
        if _steps_arg(args, stage) is not None:
            argv += [f"--steps-{stage}", str(_steps_arg(args, stage))]
    return shlex.join(argv)


def say(message: str) -> None:
    print(f"[train default] {message}", flush=True)


def run_default(args: argparse.Namespace, runner=None) -> int:
    """Runs (or with ``--plan`` prints) the chain; 0 when every selected stage is complete.

    ``runner``: how a command is run (default: a subprocess, see :mod:`engine.training.chain`)."""
    from engine.training.chain import subprocess_runner

    try:
        if args.install is not None and args.last not in (None, "bundle"):
            raise ChainError(f"--install copies the bundle, which --until {args.last} does not reach")
        options = options_from_args(args)
        stages = build_stages(options)
        selected = select_stages(stages, args.first, args.last)
        work = Path(options.work).resolve()
        if args.plan:
            print(plan_text(work, selected, options.threads))
            if args.install is not None:
                print(f"    then install {work / 'bundle'} into {Path(args.install).resolve()}")
            return 0
        check_earlier_outputs(stages, args.first)
        work.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        report = run_chain(
            work,
            selected,
            threads=options.threads,
            resume_command=resume_command(args),
            runner=runner or subprocess_runner,
            say=say,
        )
    except ChainError as error:
        say(f"error: {error}")
        return 2
    except KeyboardInterrupt:
        say(f"interrupted; resume with: {resume_command(args)}")
        return 130
    if report.failed is not None:
        return 1
    return _finish(args, work, selected, time.monotonic() - began)


def _finish(args: argparse.Namespace, work: Path, selected: list[Stage], seconds: float) -> int:
    from engine.training.default_bundle import folder_megabytes, install_bundle

    say(f"done in {format_seconds(seconds)}: " + ", ".join(f"{s.name} {stage_status(work, s)}" for s in selected))
    bundle = work / "bundle"
    if selected[-1].name != "bundle":
        return 0
    say(f"bundle: {bundle} ({folder_megabytes(bundle):.1f} MB)")
    if args.install is not None:
        try:
            entries = install_bundle(bundle, Path(args.install))
        except (OSError, ValueError) as error:
            say(f"error: installing into {args.install} failed: {error}")
            return 1
        say(f"installed {', '.join(entries)} into {Path(args.install).resolve()}")
    return 0
