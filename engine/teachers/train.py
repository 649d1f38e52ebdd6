"""Training the default model's 3D teachers (small AnySplat and VGGT) on procedural orbits.

Per step: one cached training scene (:mod:`engine.teachers.data`), its orbit used forwards or
backwards at random, T = 13 input views of 112 x 112, normalised to view 0's frame and unit mean point
distance. Loss (:mod:`engine.teachers.losses`): camera + depth, plus for VGGT the point head's world
points, plus for AnySplat the rendering loss of its per-pixel Gaussians (project rasterizer,
ground-truth cameras) at ``render_heldout`` held-out views and ``render_inputs`` input views at
``render_size`` pixels, composited over a random colour per view (``render_background``), so that the
Gaussians must cover the sky too. AdamW, linear warm-up then cosine decay, gradient-norm clipping.

Network initialisation (the only departures from PyTorch's defaults): the camera head's last layer
starts at the identity pose with a 60 degree field of view, and AnySplat's Gaussian head at opacity
logit 2, scale pre-activation 10 (0.001 * softplus(10) = 0.01 normalised units, about a pixel at unit
depth) and the identity rotation, so that the first renders are opaque, pixel-sized splats.

Run folder (outside the repository): ``train_config.json``, ``loss_log.jsonl`` (per step: losses, lr,
grad norm, seconds), ``eval_log.jsonl`` (every ``eval_every`` steps: held-out metrics averaged over
``eval_scenes`` scenes, and at step 0 for the starting weights), ``loss_curve.png``, ``eval/step_<n>.png`` (held-out frames above their
renders), ``checkpoints/step_<n>/`` (``model.safetensors`` fp32 + ``state.pt``: optimizer, scheduler,
step, RNG; ``--resume`` continues exactly), and ``final/`` (the model, ``save_pretrained`` layout).

A step trains on ``batch_size`` scenes (default 1), drawn one after the other from the run's generator
(scene, direction, rendered views), their gradients accumulated. Data-parallel (torchrun / accelerate
launch, :mod:`engine.training.distributed`): every process draws the whole global batch, computes its share
(``batch_size`` must be a multiple of the number of processes) and DDP averages the gradients, so N
processes train as one process with the same ``batch_size`` does; rank 0 writes the run folder, and a
run resumes on any number of processes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from engine.io.atomic import atomic_directory, atomic_write
from engine.strict_config import dataclass_from_json_file
from engine.teachers import losses
from engine.teachers.data import TeacherBatch, gt_pose_encoding, load_cache, normalise, random_reverse
from engine.training.checkpoints import latest_checkpoint, prune_checkpoints, restore_rng, rng_state, truncate_log
from engine.training.distributed import DistributedContext, Forward

log = logging.getLogger(__name__)

LOG_FILE = "loss_log.jsonl"
EVAL_FILE = "eval_log.jsonl"
CONFIG_FILE = "train_config.json"
LOSS_TERMS = ("camera", "depth", "points", "render")
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
MODEL_TYPES = ("anysplat", "vggt")
RENDER_BACKGROUNDS = ("random", "sky")


@dataclass
class TeacherTrainConfig:
    """Hyper-parameters of one teacher run."""

    model_type: str
    data_dir: str
    steps: int = 2000
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    train_scenes: int = 800
    eval_scenes: int = 6
    eval_every: int = 250
    save_every: int = 50
    keep_checkpoints: int = 2
    render_heldout: int = 2
    render_inputs: int = 0
    render_size: int = 56
    render_start: int = 0  # AnySplat: the rendering loss is used from this step on (geometry first)
    # What AnySplat's renders are composited over in the rendering loss: "random" (a uniform random colour
    # per rendered view, so every pixel, the sky's included, must be covered by opaque Gaussians) or "sky"
    # (the scene's sky colour, which the target frames show where nothing is hit: the network may then
    # leave the sky transparent, and a scene imported into Blender shows the world colour there instead).
    render_background: str = "random"
    # Train on orbits run backwards half of the time. Off by default: the world's clips (and so the
    # generator's videos the decoder will see) always orbit counter-clockwise, and a reversed orbit is a
    # second camera motion the camera head would have to tell apart from the content alone.
    reverse_augment: bool = False
    weights: dict = field(default_factory=lambda: {"camera": 1.0, "depth": 1.0, "points": 1.0, "render": 1.0})
    seed: int = 0
    model_config: Optional[dict] = None  # None: the default teacher configuration of model_type
    # Scenes per step, over all processes of a data-parallel run (a multiple of their number).
    batch_size: int = 1
    # A teacher folder (config.json + model.safetensors, as `teacher export` writes) whose weights start
    # the run instead of the initialisation below; its configuration must be the run's.
    init_from: Optional[str] = None

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        unknown = sorted(set(self.weights) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"unknown loss weight(s) {', '.join(unknown)}; the terms are {', '.join(LOSS_TERMS)}")
        if self.render_background not in RENDER_BACKGROUNDS:
            raise ValueError(f"render_background must be one of {RENDER_BACKGROUNDS}, got {self.render_background!r}")


def build_teacher(config: TeacherTrainConfig) -> nn.Module:
    """The network of ``config`` with the initialisation described in the module doc."""
    from engine.models.anysplat import AnySplat
    from engine.models.config import AnySplatConfig, VGGTConfig
    from engine.models.vggt import VGGT
    from engine.teachers.configs import anysplat_teacher_config, vggt_teacher_config

    torch.manual_seed(config.seed)
    if config.model_type == "anysplat":
        model_config = (
            AnySplatConfig.from_dict(config.model_config) if config.model_config else anysplat_teacher_config()
        )
        model = AnySplat(model_config)
        camera_head = model.encoder.camera_head
        head = model.encoder.gaussian_param_head
        last = head.scratch.output_conv2[2]
        with torch.no_grad():
            last.bias[0] = 2.0
            last.bias[1:4] = 10.0
            last.bias[4:8] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    else:
        model_config = VGGTConfig.from_dict(config.model_config) if config.model_config else vggt_teacher_config()
        model = VGGT(model_config)
        camera_head = model.camera_head
    last = camera_head.pose_branch.fc2
    iterations = camera_head.config.num_iterations
    with torch.no_grad():
        last.weight.mul_(0.01)
        target = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, math.radians(60), math.radians(60)])
        last.bias.copy_(target / iterations)
    if config.init_from:
        _load_initial_weights(model, Path(config.init_from))
    return model


def _load_initial_weights(model: nn.Module, folder: Path) -> None:
    """Start from the weights of an exported teacher ``folder``; ValueError if they do not fit ``model``."""
    from safetensors.torch import load_file

    from engine.models.checkpoint import state_dict_problems

    path = folder / MODEL_FILE
    if not path.is_file():
        raise ValueError(f"{folder} is not a teacher folder (no {MODEL_FILE})")
    state = model.state_dict()
    tensors = load_file(str(path))
    problems = state_dict_problems(state, tensors, "teacher")
    if problems:
        raise ValueError(f"the weights in {folder} do not fit this teacher configuration: " + "; ".join(problems))
    model.load_state_dict({k: v.to(state[k].dtype) for k, v in tensors.items()})


def _subset(gaussians, rows: torch.Tensor):
    """The Gaussians ``rows`` of batch element 0 (still batched, for ``to_scene``)."""
    from dataclasses import fields

    return type(gaussians)(**{f.name: getattr(gaussians, f.name)[:1, rows] for f in fields(gaussians)})


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


class TeacherTrainer:
    """Trains one teacher; see the module doc. ``out_dir`` None keeps nothing on disk (tests).
    ``context``: this process's place in a data-parallel run (default: a single process); ValueError
    if ``config.batch_size`` cannot be split evenly over its processes."""

    def __init__(
        self,
        config: TeacherTrainConfig,
        out_dir: Optional[Path] = None,
        train_samples: Optional[list[dict]] = None,
        eval_samples: Optional[list[dict]] = None,
        context: Optional[DistributedContext] = None,
    ):
        self.config = config
        self.context = context or DistributedContext()
        self.context.per_rank(config.batch_size)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.writes = self.out_dir is not None and self.context.is_main
        self.model = build_teacher(config)
        self.model.train()
        # the training forward (network + losses) runs through DDP; some parameters may get no gradient
        # in a step (AnySplat's Gaussian head before render_start)
        self.ddp = self.context.wrap(Forward(self.model), find_unused_parameters=True)
        self._refresh = train_samples is None
        if train_samples is None:
            train_samples = self._available_train_samples()
        if eval_samples is None:
            eval_samples = load_cache(config.data_dir, "heldout", config.eval_scenes)
        self.train_samples = train_samples
        self.eval_samples = eval_samples
        self.generator = torch.Generator().manual_seed(config.seed)
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (no_decay if param.dim() < 2 or "token" in name or "pos_embed" in name else decay).append(param)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.steps)
        )
        self.step = 0

    def _available_train_samples(self) -> list[dict]:
        """The cached training scenes written so far (at most ``train_scenes``): a run may start while
        ``teacher data`` is still rendering; later shards join at each evaluation."""
        samples = load_cache(self.config.data_dir, "train")[: self.config.train_scenes]
        if not samples:
            raise FileNotFoundError(f"no cached training scenes in {self.config.data_dir}/train; run 'teacher data'")
        # data-parallel: the scenes every process has read (`teacher data` may be writing meanwhile)
        return samples[: min(self.context.gather(len(samples)))]

    # ------------------------------------------------------------------------------------------------
    def sample_batch(self) -> TeacherBatch:
        index = int(torch.randint(len(self.train_samples), (), generator=self.generator))
        reverse = self.config.reverse_augment and random_reverse(self.generator)
        return normalise(self.train_samples[index], reverse=reverse)

    def sample_batches(self) -> list[tuple[TeacherBatch, Optional[tuple]]]:
        """This process's share of a step's ``batch_size`` scenes: (batch, rendered views) pairs.

        Every scene's draws are made in order (scene, direction, then for AnySplat's rendering loss the
        held-out and input views to render), so the generator advances alike on every process, and with
        one scene per step it draws what :meth:`sample_batch` followed by :meth:`loss` draws."""
        cfg, g = self.config, self.generator
        renders = cfg.model_type == "anysplat" and self.step >= cfg.render_start
        local = self.context.local_indices(cfg.batch_size)
        batches = []
        for j in range(cfg.batch_size):
            index = int(torch.randint(len(self.train_samples), (), generator=g))
            reverse = cfg.reverse_augment and random_reverse(g)
            views = None
            if renders:
                count = self.train_samples[index]["frames"].shape[0]  # 2T - 1: T inputs, T - 1 held out
                views = self._render_views(count // 2, (count + 1) // 2)
            if j in local:
                batches.append((normalise(self.train_samples[index], reverse=reverse), views))
        return batches

    def _render_views(self, held_out: int, inputs: int) -> tuple[list[int], list[int], Optional[torch.Tensor]]:
        """The rendering loss's draws for one scene: its held-out views, its input views and, with
        ``render_background="random"``, one (3,) background colour per rendered view ((n, 3); None for
        the sky colour), all from the run's generator (so processes stay in step and a resume is exact)."""
        cfg = self.config
        held = torch.randperm(held_out, generator=self.generator)[: cfg.render_heldout].tolist()
        chosen = torch.randperm(inputs, generator=self.generator)[: cfg.render_inputs].tolist()
        backgrounds = None
        if cfg.render_background == "random":
            backgrounds = torch.rand(len(held) + len(chosen), 3, generator=self.generator)
        return held, chosen, backgrounds

    def loss(self, batch: TeacherBatch, views: Optional[tuple] = None) -> tuple[torch.Tensor, dict]:
        """The loss of one scene and its terms; ``views``: the rendering loss's draws, (held-out views,
        input views, background colours or None) as :meth:`_render_views` returns them (default: drawn now)."""
        cfg = self.config
        w = cfg.weights
        prediction = self.model(batch.images)
        target_pose = gt_pose_encoding(batch, prediction.fov_eps)
        terms = {
            "camera": losses.camera_loss(prediction.pose_enc_list, target_pose),
            "depth": losses.depth_loss(prediction.depth, batch),
        }
        if cfg.model_type == "vggt":
            terms["points"] = losses.points_loss(prediction.world_points, batch)
        else:
            if self.step >= cfg.render_start:
                terms["render"], mse = self._render_terms(prediction, batch, views)
                terms["render_psnr"] = torch.tensor(losses.psnr_from_mse(float(mse)))
        total = sum(w.get(k, 0.0) * v for k, v in terms.items() if k != "render_psnr")
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def _render_terms(self, prediction, batch: TeacherBatch, chosen=None):
        """Rendering loss at ``render_heldout`` held-out and ``render_inputs`` input views.

        Each target view is rendered from the Gaussians of the input views next to it (held-out view
        2i+1: input views i and i+1; input view i: views i-1, i, i+1), which cover it on an orbit and
        cost a fifth of rendering all 13 x 112^2 Gaussians.
        """
        cfg = self.config
        from engine.scene import Cameras

        gaussians = prediction.gaussians()
        views = batch.images.shape[1]
        pixels = batch.images.shape[-1] * batch.images.shape[-2]
        held, inputs, backgrounds = self._render_views(len(batch.target_cameras), views) if chosen is None else chosen
        jobs = [(batch.target_cameras, i, [i, i + 1], batch.target_images[i]) for i in held]
        jobs += [
            (
                batch.input_cameras,
                i,
                [j for j in (i - 1, i, i + 1) if 0 <= j < views],
                batch.images[0, i].permute(1, 2, 0),
            )
            for i in inputs
        ]
        total, mse_sum = 0.0, 0.0
        for job, (cameras, index, sources, target) in enumerate(jobs):
            rows = torch.cat([torch.arange(v * pixels, (v + 1) * pixels) for v in sources])
            scene = _subset(gaussians, rows).to_scene(0)
            size = cameras.width
            camera = losses.scaled_cameras(
                Cameras(
                    cameras.camera_to_world[index : index + 1],
                    cameras.intrinsics[index : index + 1],
                    width=size,
                    height=size,
                ),
                cfg.render_size,
            )
            background = batch.background if backgrounds is None else backgrounds[job].to(batch.background)
            loss, mse = losses.render_loss(scene, camera, losses.downsample(target[None], cfg.render_size), background)
            total = total + loss
            mse_sum += float(mse.detach())
        return total / len(jobs), torch.tensor(mse_sum / len(jobs))

    def train_step(self, batch: Optional[TeacherBatch] = None) -> dict:
        """One optimisation step on ``batch`` (one scene) or on this process's share of ``batch_size``
        drawn scenes; returns the log record (losses averaged over all the step's scenes)."""
        start = time.perf_counter()
        work = [(batch, None)] if batch is not None else self.sample_batches()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        distributed = self.context.is_distributed
        total, sums, finite = 0.0, {}, True
        for k, (scene, views) in enumerate(work):
            # gradients accumulate over this process's scenes; DDP all-reduces in the last backward
            sync = self.ddp.no_sync() if distributed and k < len(work) - 1 else nullcontext()
            with sync:
                loss, terms = self.ddp(self.loss, scene, views) if distributed else self.loss(scene, views)
                scene_finite = bool(torch.isfinite(loss))
                if scene_finite or distributed:  # every process runs the backward the all-reduce waits for
                    (loss / len(work)).backward()
            finite = finite and scene_finite
            total += float(loss.detach())
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
        terms = {key: value / len(work) for key, value in sums.items()}
        terms["loss"] = total / len(work)
        if distributed:
            terms = self.context.mean(terms)
            finite = self.context.sum({"bad": 0.0 if finite else 1.0})["bad"] == 0
        lr = self.optimizer.param_groups[0]["lr"]
        record = {"step": self.step + 1, "loss": terms.pop("loss"), "lr": lr, **terms}
        if not finite:
            log.warning("step %d: non-finite loss %s, step skipped", self.step + 1, terms)
            record["skipped"] = True
        else:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if all(torch.isfinite(g).all() for g in grads):
                record["grad_norm"] = float(
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                )
                self.optimizer.step()
            else:
                log.warning("step %d: non-finite gradients, step skipped", self.step + 1)
                record["skipped"] = True
        self.scheduler.step()
        self.step += 1
        record["seconds"] = time.perf_counter() - start
        return record

    @torch.no_grad()
    def evaluate(self, samples: Optional[list[dict]] = None, sheet: Optional[Path] = None) -> dict:
        """Held-out metrics averaged over ``samples`` (default: the run's eval scenes)."""
        samples = self.eval_samples if samples is None else samples
        return evaluate_model(self.model, samples, sheet=sheet)

    def train(self, steps: Optional[int] = None, progress: bool = True, max_minutes: Optional[float] = None) -> None:
        """Runs to ``steps`` (default ``config.steps``), logging, evaluating and checkpointing; with
        ``max_minutes`` it stops (after a checkpoint) once that much wall time has passed."""
        from tqdm import tqdm

        total = self.config.steps if steps is None else steps
        began = time.perf_counter()
        writes = self.writes
        progress = progress and self.context.is_main
        bar = tqdm(total=total, initial=self.step, disable=not progress, desc=f"{self.config.model_type} teacher")
        if writes and self.out_dir is not None and self.step == 0 and total > 0:
            self._evaluate_start()
        while self.step < total:
            record = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3g}", s=f"{record['seconds']:.1f}")
            if writes:
                with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            if self.out_dir is not None and (self.step % self.config.eval_every == 0 or self.step == total):
                self._checkpoint_and_evaluate()
            elif writes and self.step % self.config.save_every == 0:
                self.save_checkpoint()
            if max_minutes is not None:
                # rank 0's clock decides, so that all processes stop after the same step
                if self.context.broadcast((time.perf_counter() - began) / 60 > max_minutes):
                    if writes:
                        self.save_checkpoint()
                    log.info("stopping at step %d after %.1f minutes (--max-minutes)", self.step, max_minutes)
                    break
        bar.close()
        if writes:
            self.plot()

    def _checkpoint_and_evaluate(self) -> None:
        """Every ``eval_every`` steps and at the end: a checkpoint, the training scenes written since (every
        process alike), the held-out evaluation."""
        if self.writes:
            self.save_checkpoint()
        if self._refresh and len(self.train_samples) < self.config.train_scenes:
            self.train_samples = self._available_train_samples()
            log.info("%d training scenes", len(self.train_samples))
        if self.writes:
            self._evaluate_and_log()

    def _evaluate_start(self) -> None:
        """The held-out figures of the starting weights, as step 0 (the baseline of a run, an --init run's
        above all); a run restarting at step 0 drops the records of its abandoned start first."""
        truncate_log(self.out_dir / LOG_FILE, -1)
        truncate_log(self.out_dir / EVAL_FILE, -1)
        self._evaluate_and_log()

    def _evaluate_and_log(self) -> None:
        """Held-out evaluation at the current step: a record in ``eval_log.jsonl``, a sheet, the plot."""
        metrics = self.evaluate(sheet=self.out_dir / "eval" / f"step_{self.step:08d}.png")
        with open(self.out_dir / EVAL_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        log.info("step %d held-out: %s", self.step, json.dumps(metrics))
        self.plot()

    # ------------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        directory = self.out_dir / "checkpoints" / f"step_{self.step:08d}"
        directory.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(self.generator),
        }
        with atomic_directory(directory, replace=True) as tmp:
            save_file(tensors, str(tmp / MODEL_FILE))
            torch.save(state, tmp / STATE_FILE)
        prune_checkpoints(directory.parent, self.config.keep_checkpoints)
        return directory

    def load_checkpoint(self, directory: Path) -> None:
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (MODEL_FILE, STATE_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a teacher checkpoint: {name} is missing")
        self.model.load_state_dict(load_file(str(directory / MODEL_FILE)), strict=True)
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        factor = warmup_cosine(self.step, self.config.warmup_steps, self.config.steps)
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base_lr * factor
        restore_rng(state["rng"], self.generator)

    def resume(self) -> bool:
        """Loads the newest checkpoint of ``out_dir`` (if any) and drops later log records."""
        found = latest_checkpoint(self.out_dir)
        if found is None:
            return False
        self.load_checkpoint(found)
        if self.writes:
            truncate_log(self.out_dir / LOG_FILE, self.step)
            truncate_log(self.out_dir / EVAL_FILE, self.step)
        return True

    def plot(self) -> None:
        plot_run(self.out_dir)

    def export(self, directory: Path, dtype: torch.dtype = torch.float16) -> Path:
        return export_model(self.model, directory, dtype)


def export_model(model: nn.Module, directory: Path, dtype: torch.dtype = torch.float16) -> Path:
    """``config.json`` + ``model.safetensors`` in ``dtype`` (fp16 for the shipped default model), atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_directory(directory, replace=True) as tmp:
        (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return directory


@torch.no_grad()
def evaluate_model(model: nn.Module, samples: list[dict], sheet: Optional[Path] = None, render: bool = True) -> dict:
    """Held-out metrics (``losses.evaluate_prediction``) averaged over ``samples``; ``sheet``: a PNG of
    the first two scenes' held-out frames (top) above the renders of the predicted Gaussians (bottom)."""
    was_training = model.training
    model.eval()
    records, rows = [], []
    for index, sample in enumerate(samples):
        batch = normalise(sample)
        metrics = losses.evaluate_prediction(model(batch.images), batch, render=render)
        if sheet is not None and index < 2 and "_renders" in metrics:
            count = len(batch.target_cameras)
            pick = torch.linspace(0, count - 1, min(6, count)).round().long()
            rows.append(torch.cat(list(batch.target_images[pick]), dim=1))
            rows.append(torch.cat(list(metrics["_renders"][:6]), dim=1))
        records.append(metrics)
    model.train(was_training)
    if sheet is not None and rows:
        write_sheet(rows, sheet)
    return losses.mean_metrics(records)


def write_sheet(rows: list[torch.Tensor], path: Path) -> None:
    """Stacks image rows (each (H, W', 3) in [0, 1], same width) top to bottom into a PNG, atomically."""
    import imageio.v3 as iio

    image = (torch.cat(rows, dim=0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(path), "wb") as f:
        iio.imwrite(f, image, extension=".png")


def plot_run(out_dir: Path) -> Optional[Path]:
    """``loss_curve.png``: training loss terms (moving average) and held-out metrics against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = _read_jsonl(out_dir / LOG_FILE)
    if not records:
        return None
    evals = _read_jsonl(out_dir / EVAL_FILE)
    keys = [k for k in ("loss", "camera", "depth", "points", "render") if k in records[0]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in records]
    window = max(1, len(records) // 50)
    for key in keys:
        values = [r[key] for r in records]
        smooth = [
            sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))
        ]
        axes[0].plot(steps, smooth, label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses (moving average)")
    axes[0].legend()
    for key in ("depth_absrel", "rot_err_deg", "novel_psnr"):
        if evals and key in evals[0]:
            axes[1].plot([e["step"] for e in evals], [e[key] for e in evals], marker="o", label=key)
    axes[1].set_xlabel("step")
    axes[1].set_yscale("log")
    axes[1].set_title("held-out metrics")
    axes[1].legend()
    fig.tight_layout()
    path = out_dir / "loss_curve.png"
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return path


def _read_jsonl(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def save_config(config: TeacherTrainConfig, out_dir: Path) -> None:
    with atomic_write(Path(out_dir) / CONFIG_FILE, "w") as f:
        f.write(json.dumps(asdict(config), indent=1))


def load_config(out_dir: Path) -> TeacherTrainConfig:
    return dataclass_from_json_file(TeacherTrainConfig, Path(out_dir) / CONFIG_FILE)
