"""Self-distillation finetuning of a stitched decoder (VIST3A step 2, method.md §4).

Teacher: the frozen original 3D network on the clip's RGB frames. Student: :class:`StitchedDecoder`
on the video-VAE latent of the same (colour-jittered) clip, its Gaussian head reading the same frames.
Trained: peft LoRA (rank 64, alpha 32, dropout 0) on every ``nn.Linear`` and ``nn.Conv2d`` of the kept
network (not ``ConvTranspose2d``), the stitching layer, and DINOv2's cls / register / mask tokens (the
mask token is trained for parity with the released checkpoint but no code path reads it, so it never
gets a gradient). Everything else is frozen, biases included.

Per step: T views are drawn from ``views`` (only counts the VAE can encode, 4k+1 for Wan), a clip of T
frames at the VAE's resolution is sampled, jittered (brightness/contrast/saturation, the same jitter
for both paths), encoded by the VAE and resized to the network's resolution for the teacher and the
student's RGB input; loss = weighted L1 to the teacher (``engine.stitching.losses`` presets). AdamW,
linear warm-up then cosine decay, gradient-norm clipping. On CUDA the aggregators run under bf16
autocast with the heads in fp32 (``ReconstructionModel``); gradient checkpointing is a switch.

Data-parallel (``engine.training.distributed``, under torchrun or accelerate launch): every process draws its share
of each step's global batch (sample j of step s always comes from the same seeded generator, so N processes
see what one process with the same ``batch_size`` sees), the student runs in DistributedDataParallel, the
logged losses are averaged over processes, and only rank 0 writes logs, checkpoints and the export.

Outputs in ``out_dir``: ``train_config.json``, ``loss_log.jsonl`` (one JSON object per logged step),
``checkpoints/step_<n>/`` (resumable: ``trainable.safetensors`` with the LoRA factors, stitching layer
and tokens, ``state.pt`` with optimizer, scheduler, step and RNG states), and the merged export
(``StitchedDecoder.save_pretrained`` format) via :meth:`DistillationTrainer.export`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.io.atomic import atomic_directory, atomic_write
from engine.models.reconstruction import ReconstructionModel
from engine.stitching.clips import ClipSource
from engine.stitching.decoder import StitchedDecoder, VAEReference
from engine.stitching.layer_spec import StitchingLayer
from engine.stitching.losses import PRESETS, distillation_loss
from engine.training.checkpoints import latest_checkpoint, prune_checkpoints, restore_rng, rng_state, truncate_log
from engine.training.distributed import DistributedContext, sample_generator

log = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"
LOG_FILE = "loss_log.jsonl"
CONFIG_FILE = "train_config.json"
TOKEN_NAMES = ("cls_token", "register_tokens", "mask_token")


@dataclass
class TrainConfig:
    """Hyper-parameters of one finetuning run (defaults: the paper's, method.md §4).

    ``batch_size`` is the global batch (split over the processes of a data-parallel run).
    ``views``: (min, max) views per step; each step draws one of the counts in the range the VAE can
    encode. ``vae_size``/``model_size``: square frame sizes the VAE and the 3D network see (512/448
    for Wan + AnySplat). ``loss_weights``: None = the preset of the model type.
    """

    cut_stage: str
    spec: str
    steps: int = 10000
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    grad_clip: float = 1.0
    batch_size: int = 1
    views: tuple[int, int] = (9, 21)
    vae_size: int = 512
    model_size: int = 448
    lora_rank: int = 64
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    loss_weights: Optional[dict[str, float]] = None
    color_jitter: float = 0.2
    bf16: bool = True
    gradient_checkpointing: bool = False
    seed: int = 0
    log_every: int = 1
    save_every: int = 1000
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        self.views = tuple(self.views)
        if len(self.views) != 2 or not 1 <= self.views[0] <= self.views[1]:
            raise ValueError(f"views must be (min, max) with 1 <= min <= max, got {self.views}")
        for name in ("steps", "batch_size", "lora_rank", "vae_size", "model_size", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError("warmup_steps must be >= 0, lr and grad_clip > 0")


def view_counts(views: tuple[int, int], vae: VAEReference) -> list[int]:
    """Every view count in [min, max] the VAE can encode (T = factor·k + 1)."""
    counts = [t for t in range(views[0], views[1] + 1) if (t - 1) % vae.temporal_factor == 0]
    if not counts:
        raise ValueError(f"no view count in {views} fits {vae.class_name} (T = {vae.temporal_factor}k+1)")
    return counts


def color_jitter(frames: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Random brightness, contrast and saturation (factors in [1-s, 1+s]) per clip of (B, T, 3, H, W)."""
    if strength <= 0:
        return frames
    b = frames.shape[0]

    def factors() -> Tensor:
        return (1 + (torch.rand(b, generator=generator) * 2 - 1) * strength).view(b, 1, 1, 1, 1).to(frames)

    out = frames * factors()
    mean = out.mean(dim=(1, 2, 3, 4), keepdim=True)
    out = (out - mean) * factors() + mean
    grey = (out * out.new_tensor([0.299, 0.587, 0.114]).view(1, 1, 3, 1, 1)).sum(2, keepdim=True)
    out = (out - grey) * factors() + grey
    return out.clamp(0, 1)


def resize_frames(frames: Tensor, size: int) -> Tensor:
    """(B, T, 3, H, W) -> (B, T, 3, size, size), bilinear with antialiasing."""
    if frames.shape[-2:] == (size, size):
        return frames
    b, t = frames.shape[:2]
    out = F.interpolate(frames.flatten(0, 1), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(b, t, *out.shape[1:]).clamp(0, 1)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def lora_targets(decoder: StitchedDecoder) -> list[str]:
    """Module names (relative to ``decoder.network``) of every nn.Linear / nn.Conv2d of the kept network."""
    return [name for name, m in decoder.network.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]


def add_lora(decoder: StitchedDecoder, rank: int, alpha: float, dropout: float) -> list[str]:
    """Injects peft LoRA into the kept network and sets what trains; returns the LoRA target names."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(decoder)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    inject_adapter_in_model(config, decoder.network)
    for name, param in decoder.named_parameters():
        param.requires_grad_("lora_" in name)
    decoder.stitching_layer.requires_grad_(True)
    dino = decoder.network.aggregator.patch_embed
    for token in TOKEN_NAMES:
        if getattr(dino, token) is not None:
            getattr(dino, token).requires_grad_(True)
    return targets


def merge_lora(decoder: StitchedDecoder) -> StitchedDecoder:
    """A copy of ``decoder`` with every peft LoRA layer merged into its base layer and removed."""
    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(decoder)
    for name, module in list(merged.network.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = merged.network.get_submodule(parent_name) if parent_name else merged.network
            setattr(parent, attr, module.get_base_layer())
    for param in merged.parameters():
        param.requires_grad_(False)
    return merged


class DistillationTrainer:
    """Owns teacher, student, optimizer and schedule; ``train()`` runs to ``config.steps``.

    Args:
        config: hyper-parameters.
        teacher: the original network (frozen; a copy of it becomes the student's kept part).
        vae: a ``VideoVAEAdapter`` (frozen) and its description ``vae_reference``.
        clips: where the training clips come from (``engine.stitching.clips``).
        stitching_layer: the initial stitching conv (e.g. the layer-search fit); None = fresh init.
        out_dir: run folder (checkpoints, log); None keeps everything in memory.
        context: this process's place in a data-parallel run (default: a single process).
    """

    def __init__(
        self,
        config: TrainConfig,
        teacher: ReconstructionModel,
        vae,
        vae_reference: VAEReference,
        clips: ClipSource,
        stitching_layer: Optional[StitchingLayer] = None,
        out_dir: Optional[Union[str, Path]] = None,
        device: Union[str, torch.device] = "cpu",
        context: Optional[DistributedContext] = None,
    ) -> None:
        self.config = config
        self.context = context or DistributedContext()
        self.local_samples = self.context.local_indices(config.batch_size)
        self.device = torch.device(device)
        self.vae = vae
        self.clips = clips
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.view_counts = view_counts(config.views, vae_reference)
        torch.manual_seed(config.seed)

        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self.student = StitchedDecoder.from_network(
            copy.deepcopy(teacher), config.cut_stage, config.spec, vae_reference, stitching_layer
        ).to(self.device)
        self.weights = dict(config.loss_weights or PRESETS[self.student.model_type])
        self.lora_modules = add_lora(self.student, config.lora_rank, config.lora_alpha, config.lora_dropout)
        autocast = torch.bfloat16 if config.bf16 else None
        self.teacher.autocast_dtype = autocast
        self.student.network.autocast_dtype = autocast
        self.student.set_gradient_checkpointing(config.gradient_checkpointing)
        self.student.train()

        # the mask token trains (for parity with the released checkpoint) but no path reads it
        self.model = self.context.wrap(self.student, find_unused_parameters=True)
        self.trainable = {n: p for n, p in self.student.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.trainable.values(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, config.warmup_steps, config.steps)
        )
        self.step = 0
        if self.writes_files:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.out_dir / CONFIG_FILE, "w") as f:
                f.write(json.dumps({"config": asdict(config), "vae": vae_reference.to_dict()}, indent=1))

    # ------------------------------------------------------------------------------------------------
    @property
    def writes_files(self) -> bool:
        """True on the process that writes the run folder (rank 0 of a data-parallel run)."""
        return self.out_dir is not None and self.context.is_main

    def sample_batch(self, step: Optional[int] = None) -> Tensor:
        """(B_local, T, 3, vae_size, vae_size) jittered clip frames in [0, 1] of this process's share of
        step ``step``'s batch (default: the next step); T is drawn per step from the view counts."""
        step = self.step if step is None else step
        shared = sample_generator(self.config.seed, step, -1)
        views = self.view_counts[int(torch.randint(len(self.view_counts), (1,), generator=shared))]
        clips = []
        for index in self.local_samples:
            generator = sample_generator(self.config.seed, step, index)
            clip = self.clips.sample(views, self.config.vae_size, generator)[None]
            clips.append(color_jitter(clip, self.config.color_jitter, generator))
        return torch.cat(clips).to(self.device)

    @torch.no_grad()
    def targets(self, frames: Tensor):
        """(latent, model-resolution frames, teacher prediction) for jittered frames at the VAE's size."""
        latent = self.vae.encode(frames, normalized=False).to(self.device)  # the stitched decoder reads raw latents
        model_frames = resize_frames(frames, self.config.model_size)
        return latent, model_frames, self.teacher(model_frames)

    def loss(self, latent: Tensor, model_frames: Tensor, teacher_prediction) -> tuple[Tensor, dict[str, float]]:
        return distillation_loss(self.model(latent, model_frames), teacher_prediction, self.weights)

    def train_step(self, batch: Optional[tuple] = None) -> dict:
        """One optimisation step (on ``batch`` = ``targets(...)`` if given); returns the log record."""
        latent, model_frames, teacher_prediction = batch if batch is not None else self.targets(self.sample_batch())
        self.student.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.loss(latent, model_frames, teacher_prediction)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step}: {terms}")
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), self.config.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        # the global batch's loss: the mean of the processes' (equal-sized) batch means
        averaged = self.context.mean({"loss": float(loss.detach()), **{f"terms.{k}": v for k, v in terms.items()}})
        return {
            "step": self.step,
            "loss": averaged.pop("loss"),
            "lr": lr,
            "grad_norm": float(grad_norm),
            "views": model_frames.shape[1],
            "terms": {k.removeprefix("terms."): v for k, v in averaged.items()},
        }

    @torch.no_grad()
    def evaluate(self, batch: tuple) -> tuple[float, dict[str, float]]:
        """Weighted L1 of the student (eval mode) to the teacher on a fixed batch."""
        latent, model_frames, teacher_prediction = batch
        self.student.eval()
        # the bare student: evaluation may run on one process only, outside the data-parallel wrapper
        loss, terms = distillation_loss(self.student(latent, model_frames), teacher_prediction, self.weights)
        self.student.train()
        return float(loss), terms

    def train(self, steps: Optional[int] = None, progress: bool = True) -> list[dict]:
        """Runs until ``steps`` (default ``config.steps``) steps are done; logs, checkpoints; returns the records."""
        from tqdm import tqdm

        total = self.config.steps if steps is None else steps
        records = []
        bar = tqdm(total=total, initial=self.step, disable=not progress, desc="stitch finetune")
        while self.step < total:
            record = self.train_step()
            records.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}", views=record["views"])
            if self.writes_files and self.step % self.config.log_every == 0:
                with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            if self.writes_files and (self.step % self.config.save_every == 0 or self.step == total):
                self.save_checkpoint()
        bar.close()
        return records

    # ------------------------------------------------------------------------------------------------
    def save_checkpoint(self, directory: Optional[Union[str, Path]] = None) -> Path:
        """Writes a resumable checkpoint (default ``out_dir/checkpoints/step_<n>``); prunes old ones."""
        from safetensors.torch import save_file

        if directory is None:
            if self.out_dir is None:
                raise ValueError("no out_dir: pass the checkpoint directory")
            directory = self.out_dir / "checkpoints" / f"step_{self.step:08d}"
        directory = Path(directory)
        tensors = {n: p.detach().contiguous().cpu() for n, p in self.trainable.items()}
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }
        directory.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(directory, replace=True) as tmp:
            save_file(tensors, str(tmp / TRAINABLE_FILE))
            torch.save(state, tmp / STATE_FILE)
        if self.out_dir is not None and directory.parent == self.out_dir / "checkpoints":
            prune_checkpoints(directory.parent, self.config.keep_checkpoints)
        return directory

    def load_checkpoint(self, directory: Union[str, Path]) -> None:
        """Restores trainable tensors, optimizer, scheduler, step and RNG states (strict)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (TRAINABLE_FILE, STATE_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a training checkpoint: {name} is missing")
        tensors = load_file(str(directory / TRAINABLE_FILE))
        missing = sorted(set(self.trainable) - set(tensors))
        unexpected = sorted(set(tensors) - set(self.trainable))
        if missing or unexpected:
            raise ValueError(
                f"{directory} does not fit this run: missing {missing[:5]} ({len(missing)}), "
                f"unexpected {unexpected[:5]} ({len(unexpected)}) - different model, cut or LoRA settings?"
            )
        with torch.no_grad():
            for name, param in self.trainable.items():
                if tensors[name].shape != param.shape:
                    raise ValueError(
                        f"{directory}: {name} has shape {tuple(tensors[name].shape)}, expected {tuple(param.shape)}"
                    )
                param.copy_(tensors[name])
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        # The optimizer state holds the learning rate of the saved run's schedule. When the run is
        # extended (more --steps), the next step must use this run's schedule at the resumed step.
        factor = warmup_cosine(self.step, self.config.warmup_steps, self.config.steps)
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base_lr * factor
        restore_rng(state["rng"])

    def truncate_log(self) -> int:
        """Drops records of steps after ``self.step`` from ``out_dir``'s loss log (a resumed run redoes
        them); returns how many were dropped."""
        return truncate_log(None if self.out_dir is None else self.out_dir / LOG_FILE, self.step)

    def latest_checkpoint(self) -> Optional[Path]:
        """The newest ``checkpoints/step_*`` folder of ``out_dir`` (None if there is none)."""
        return latest_checkpoint(self.out_dir)

    def export(self, directory: Union[str, Path], dtype: Optional[torch.dtype] = torch.float16) -> Path:
        """Writes the student with LoRA merged in our stitched-decoder checkpoint format, its weights in
        ``dtype`` (fp16 by default, as the teachers' exports; None: the student's own)."""
        merged = merge_lora(self.student)
        merged.lora_info = {
            "rank": self.config.lora_rank,
            "alpha": self.config.lora_alpha,
            "dropout": self.config.lora_dropout,
            "merged": True,
            "targets": "every nn.Linear and nn.Conv2d of the kept network",
            "steps": self.step,
        }
        return merged.eval().save_pretrained(directory, dtype=dtype)


@torch.no_grad()
def render_psnr(student_prediction, teacher_prediction, batch_index: int = 0, background=(1.0, 1.0, 1.0)) -> float:
    """PSNR (dB) of the student's Gaussians against the teacher's, both rendered at the teacher's cameras.

    Both scenes stay in the network frame and are rasterised (SH degree 0, ``engine.render``) with the
    teacher's predicted cameras, so the number compares the Gaussians alone (the student's own camera
    prediction only enters through its Gaussian means, which are its depth unprojected with its cameras).
    AnySplat predictions only.
    """
    from engine.render import rasterize

    cameras = teacher_prediction.cameras(batch_index, relative_to_first=False)
    renders = []
    for prediction in (student_prediction, teacher_prediction):
        scene = prediction.gaussian_scene(batch_index, relative_to_first=False, sh_degree=0)
        renders.append(rasterize(scene, cameras, background=background).rgb.clamp(0, 1))
    mse = ((renders[0] - renders[1]) ** 2).mean().clamp_min(1e-10)
    return float(-10 * torch.log10(mse))
