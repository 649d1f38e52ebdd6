"""Training the video VAE: diffusers ``AutoencoderKLWan`` (Wan 2.1's structure, small widths).

The Wan 2.1 VAE maps T = 4k + 1 frames of H x W RGB in [-1, 1] to a latent of 16 channels, (T - 1)/4 + 1
frames, H/8 x W/8 (causal 3D convolutions: the first frame is encoded on its own, then groups of four).
It is fully convolutional, so it trains on short crops (``crop_frames`` = 4k + 1 frames, ``crop_size``
squared pixels) of the world's 13 x 128 x 128 clips and is evaluated on whole held-out clips.

Curriculum (Wan 2.1's, technical report section 3.1: a 2D image VAE of the same structure first, then
inflated to the causal 3D VAE, "which drastically improves training speed compared to training a video
VAE from scratch"): the first ``image_steps`` steps train on single frames (``image_batch_size`` crops of
``image_crop_size`` squared pixels). A causal VAE encodes a clip's first frame on its own, so single frames
train exactly the spatial path that every frame goes through; the later steps train on video crops, which
adds the temporal path. Measured here from the same initialisation: 300 single-frame steps (4 x 64^2, 247 s)
reached 21.9 dB on held-out first frames; video crops (2 x 9 x 40^2) stood at 16.0 dB after 200 steps and
15.8 dB after 250 (302 s).

Loss: mean squared error of the decoded posterior mean (what PSNR measures; it fitted a fixed batch
faster than L1 here) + ``kl_weight`` x KL to N(0, I) per latent element
(the small KL keeps the latents bounded for the diffusion model, as in latent-diffusion VAEs). The mean,
not a sample, is decoded: a freshly initialised encoder's posterior has unit variance, which drowns the
latent (|mean| ~ 0.1) in noise and stalled a first run at 12 dB after 250 steps; the generator is trained
on posterior means as well.

After training, :func:`latent_statistics` encodes training clips and the per-channel mean and standard
deviation of the posterior means are written into the config as ``latents_mean``/``latents_std``, the
fields with which Wan pipelines normalise latents (``(z - mean) / std``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from engine.generator.clipcache import ClipCache
from engine.generator.runs import Trainer
from engine.io.atomic import atomic_write
from engine.strict_config import dataclass_from_json_file

log = logging.getLogger(__name__)

VAE_FOLDER = "vae"  # inside a run folder: the exported diffusers folder
LATENT_STATS_FILE = "latent_stats.json"  # a frozen-encoder run: the initial VAE's latents_mean/std


@dataclass
class VAEConfig:
    """Settings of a VAE training run (all saved in the run's config.json)."""

    seed: int = 0
    steps: int = 1400
    lr: float = 2e-4
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    batch_size: int = 2
    crop_frames: int = 9
    crop_size: int = 40
    kl_weight: float = 1e-6
    # Loss weight of the pixels the caption check labels as objects (1: plain MSE over all pixels).
    object_weight: float = 1.0
    # Train the decoder alone (needs an initial VAE): the latent space, and with it every model trained on
    # its latents (the transformer, the stitched decoders), stays valid; latents_mean/std are the initial VAE's.
    freeze_encoder: bool = False
    # Image stage (Wan's first stage): single-frame crops for the first image_steps steps.
    image_steps: int = 2000
    image_batch_size: int = 4
    image_crop_size: int = 64
    # Architecture (AutoencoderKLWan arguments; Wan 2.1 itself: 96, [1, 2, 4, 4], 2).
    base_dim: int = 32
    dim_mult: list = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 1
    # Data: the world's clips.
    num_frames: int = 13
    size: int = 128
    data_seed: int = 0
    train_clips: int = 800
    eval_clips: int = 4
    caption_check_clips: int = 32
    stats_clips: int = 48
    # Bookkeeping.
    log_every: int = 10
    eval_every: int = 100
    save_every: int = 100
    keep_checkpoints: int = 2

    def __post_init__(self):
        if self.object_weight <= 0:
            raise ValueError(f"object_weight must be positive, got {self.object_weight}")
        for name in ("crop_frames", "num_frames"):
            value = getattr(self, name)
            if value < 1 or (value - 1) % 4:
                raise ValueError(f"{name} must be 4k + 1 (the Wan VAE's causal time grouping), got {value}")
        for name in ("crop_size", "size", "image_crop_size"):
            if getattr(self, name) % 8:
                raise ValueError(
                    f"{name} must be a multiple of 8 (the VAE's spatial factor), got {getattr(self, name)}"
                )
        if self.image_steps < 0 or self.image_batch_size < 1:
            raise ValueError("image_steps must be >= 0 and image_batch_size >= 1")
        if self.crop_frames > self.num_frames or max(self.crop_size, self.image_crop_size) > self.size:
            raise ValueError("crops must fit in the clips (crop_frames <= num_frames, crop_size <= size)")
        self.dim_mult = list(self.dim_mult)


def build_vae(config: VAEConfig):
    """A randomly initialised ``AutoencoderKLWan`` (16 latent channels, 8x spatial, 4x causal temporal)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(config.seed)
    return AutoencoderKLWan(
        base_dim=config.base_dim,
        z_dim=16,
        dim_mult=list(config.dim_mult),
        num_res_blocks=config.num_res_blocks,
        temperal_downsample=[False, True, True],
    )


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (computed on the [0, 1] scale, the reconstruction clamped)."""
    mse = ((reconstruction.clamp(-1, 1) - target) / 2).pow(2).mean().clamp_min(1e-12)
    return float(-10.0 * torch.log10(mse))


def object_mask(video: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) bool: the pixels of ``video`` (B, 3, T, H, W) in [-1, 1] that
    :func:`engine.generator.quality.label_pixels` explains by an object colour of the world's palette, not
    by a floor or a sky (the objects, and the few floor pixels whose shade matches an object colour).

    Why: floor and sky fill most of a frame, so a plain MSE hardly sees the small objects, which are what a
    caption names (session 5: the caption check of the reconstructions plateaued near 70 %).
    """
    from engine.generator.quality import label_pixels

    batch, _, frames, height, width = video.shape
    pixels = video.detach().permute(0, 2, 3, 4, 1).add(1.0).div(2.0).clamp(0.0, 1.0)  # (B, T, H, W, 3)
    names, labels = label_pixels(pixels.reshape(-1, width, 3).float().numpy())
    is_object = np.array([name.startswith("object:") for name in names])
    mask = torch.from_numpy(is_object[labels]).reshape(batch, frames, height, width)
    return mask[:, None]


@torch.no_grad()
def check_reconstruction(vae, frame: torch.Tensor, scene):
    """:func:`engine.generator.quality.check_frame` of ``scene`` (a world scene or a parsed caption) on the
    VAE's reconstruction of ``frame`` (3, H, W) in [-1, 1], encoded on its own (a causal VAE's first frame)."""
    from engine.generator.quality import check_frame

    image = reconstruct(vae, frame[:, None][None])[0, :, 0].permute(1, 2, 0).add(1.0).div(2.0).clamp(0.0, 1.0)
    return check_frame(image.float().numpy(), scene)


def caption_check_of_reconstructions(vae, clips: ClipCache) -> dict:
    """The generator benchmark's caption check on the VAE's reconstructions of the first frames of ``clips``
    (:func:`check_reconstruction`): the ceiling of what a generator on this VAE can score, since every
    generated video is decoded by it. Small objects are what a blurry VAE loses first, and PSNR, dominated
    by floor and sky, hardly shows it (session 5: a VAE at 21.6 dB scored 27 % here).

    Returns:
        ``color_accuracy`` (fraction of named objects whose colour is visible) and ``relation_accuracy``
        (fraction of the captions' relations in place) over all clips.
    """
    from engine.data import generate_scene

    colours, relations = [], []
    for index in range(len(clips)):
        check = check_reconstruction(vae, clips.frames(index)[0], generate_scene(clips.dataset.item_seed(index)))
        colours += list(check.colors_visible.values())
        relations += check.relations_correct
    return {
        "color_accuracy": float(np.mean(colours)) if colours else float("nan"),
        "relation_accuracy": float(np.mean(relations)) if relations else float("nan"),
    }


def reconstruct(vae, video: torch.Tensor, sample: bool = False) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] through the VAE (posterior mode unless ``sample``)."""
    posterior = vae.encode(video).latent_dist
    latent = posterior.sample() if sample else posterior.mode()
    return vae.decode(latent).sample


class VAETrainer(Trainer):
    """Trains :func:`build_vae` on crops of training clips (single frames first: the image stage);
    evaluates PSNR on whole held-out clips and on their first frames.

    Args:
        config: the run's settings.
        out_dir: run folder (None: nothing is written).
        init: optional trained VAE folder (diffusers ``AutoencoderKLWan``, e.g. an earlier run's export) the
            run starts from: a finetune, e.g. with ``object_weight``. Its architecture must be the one
            ``config`` describes (ValueError naming the differences otherwise). A resumed run continues from
            its own checkpoint instead. ``config.freeze_encoder`` needs it (ValueError otherwise): the
            decoder alone trains, and the export keeps this VAE's ``latents_mean``/``latents_std``.
        resume: continue the run in ``out_dir`` from its newest checkpoint.
        clip_cache: folder of the rendered clips (default ``out_dir/clips``; may be shared by runs).
        context: this process's place in a data-parallel run (default: a single process).
    """

    name = "train vae"
    eval_metric = "psnr"

    def __init__(
        self,
        config: VAEConfig,
        out_dir: Optional[Path] = None,
        *,
        init: Optional[Path] = None,
        resume: bool = False,
        clip_cache: Optional[Path] = None,
        context=None,
    ):
        self.config = config
        self.model = build_vae(config)
        if init is not None:
            from engine.models.checkpoint import load_safetensors_folder

            if not (Path(init) / "config.json").is_file():
                raise FileNotFoundError(f"{init} is not a VAE folder (it has no config.json)")
            load_safetensors_folder(self.model, init, "the VAE")
        self.latent_stats = self._frozen_encoder_statistics(init, out_dir, resume)
        cache = clip_cache if clip_cache is not None else (None if out_dir is None else Path(out_dir) / "clips")
        common = dict(seed=config.data_seed, num_frames=config.num_frames, height=config.size, width=config.size)
        self.train_clips = ClipCache(cache, "train", config.train_clips, **common)
        self.eval_clips = ClipCache(cache, "heldout", config.eval_clips, **common)
        self.caption_clips = ClipCache(cache, "heldout", config.caption_check_clips, **common)
        if context is not None:  # the image stage's batch too must split over the processes (raises)
            context.per_rank(config.image_batch_size)
        self.setup(out_dir, resume, context)

    def _frozen_encoder_statistics(self, init, out_dir, resume) -> Optional[dict]:
        """With ``freeze_encoder``: freezes the encoder side and returns the initial VAE's latent statistics
        (kept in the run folder, so that a resume and :func:`export_run_checkpoint` find them); else None."""
        if not self.config.freeze_encoder:
            return None
        stats_file = None if out_dir is None else Path(out_dir) / LATENT_STATS_FILE
        if init is not None:
            saved = json.loads((Path(init) / "config.json").read_text(encoding="utf-8"))
            stats = {"latents_mean": saved.get("latents_mean"), "latents_std": saved.get("latents_std")}
            if not stats["latents_mean"] or not stats["latents_std"]:
                raise ValueError(f"{init}: a frozen encoder keeps its VAE's latents_mean/std, and this VAE has none")
        elif resume and stats_file is not None and stats_file.is_file():
            stats = json.loads(stats_file.read_text(encoding="utf-8"))
        else:
            raise ValueError("freeze_encoder trains the decoder of a trained VAE: give the VAE to start from (init)")
        for module in (self.model.encoder, self.model.quant_conv):
            module.requires_grad_(False)
        if stats_file is not None and not stats_file.is_file():
            stats_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(stats_file, "w") as f:
                f.write(json.dumps(stats))
        return stats

    @property
    def find_unused_parameters(self) -> bool:
        """Single-frame steps leave the temporal convolutions out of the loss (DDP must know)."""
        return self.config.image_steps > 0

    def crop_shape(self, step: int) -> tuple[int, int, int]:
        """(batch, frames, size) of the training crops at ``step``: single frames during the image stage."""
        cfg = self.config
        if step < cfg.image_steps:
            return cfg.image_batch_size, 1, cfg.image_crop_size
        return cfg.batch_size, cfg.crop_frames, cfg.crop_size

    def sample_crops(self, indices: Optional[range] = None) -> torch.Tensor:
        """(B', 3, frames, size, size) random crops (and mirror images) of training clips, of the shape
        :meth:`crop_shape` gives at the current step: samples ``indices`` (default: all) of the global
        batch. Every sample's draws are made, so the generator advances the same whichever samples are
        returned."""
        cfg, g = self.config, self.generator
        batch, crop_frames, crop_size = self.crop_shape(self.step)
        indices = range(batch) if indices is None else indices
        crops = []
        for j in range(batch):
            index = int(torch.randint(len(self.train_clips), (1,), generator=g))
            t0 = int(torch.randint(cfg.num_frames - crop_frames + 1, (1,), generator=g))
            y0, x0 = (int(v) for v in torch.randint(cfg.size - crop_size + 1, (2,), generator=g))
            flip = bool(torch.rand((), generator=g) < 0.5)
            if j not in indices:
                continue
            frames = self.train_clips.frames(index)  # (T, 3, H, W)
            crop = frames[t0 : t0 + crop_frames, :, y0 : y0 + crop_size, x0 : x0 + crop_size]
            if flip:
                crop = crop.flip(-1)
            crops.append(crop.permute(1, 0, 2, 3))
        return torch.stack(crops)

    def _reconstruct(self, video: torch.Tensor):
        posterior = self.model.encode(video).latent_dist
        return posterior, self.model.decode(posterior.mode()).sample

    def loss(self):
        batch = self.crop_shape(self.step)[0]
        video = self.sample_crops(self.context.local_indices(batch))
        posterior, reconstruction = self.forward(self._reconstruct, video)
        if self.config.object_weight == 1.0:
            mse = F.mse_loss(reconstruction, video)
        else:
            weight = 1.0 + (self.config.object_weight - 1.0) * object_mask(video).float()
            mse = (weight * (reconstruction - video).pow(2)).sum() / (weight.sum() * video.shape[1])
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        extra = {"l1": float(F.l1_loss(reconstruction.detach(), video)), "kl": float(kl.detach())}
        return mse + self.config.kl_weight * kl, extra

    def evaluate(self) -> dict:
        """PSNR (dB, mean over held-out clips) of whole 13 x 128 x 128 clips through the posterior mode,
        and of their first frames alone (what the image stage trains); the caption check of
        :func:`caption_check_of_reconstructions` on ``caption_check_clips`` held-out first frames."""
        values, first = [], []
        for index in range(len(self.eval_clips)):
            video = self.eval_clips.frames(index).permute(1, 0, 2, 3)[None]
            values.append(psnr(reconstruct(self.model, video), video))
            first.append(psnr(reconstruct(self.model, video[:, :, :1]), video[:, :, :1]))
        figures = {
            "psnr": sum(values) / len(values),
            "psnr_min": min(values),
            "psnr_first_frame": sum(first) / len(first),
        }
        if self.config.caption_check_clips:
            figures.update(caption_check_of_reconstructions(self.model, self.caption_clips))
        return figures

    def export(self, folder: Path, stats_clips: Optional[int] = None) -> Path:
        """Writes the trained VAE as a diffusers folder (fp16 safetensors) with latent statistics."""
        return export_vae(
            self.model, self.train_clips, folder, stats_clips or self.config.stats_clips, self.latent_stats
        )


def export_run_checkpoint(run_dir: Path, folder: Path, clip_cache: Optional[Path] = None) -> tuple[Path, int]:
    """Exports the newest checkpoint of a VAE run to ``folder`` without touching the run (it may be
    training meanwhile); returns the folder and the checkpoint's step."""

    from safetensors.torch import load_model

    from engine.generator.runs import CONFIG_FILE, MODEL_FILE
    from engine.training.checkpoints import latest_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} holds no VAE run ({CONFIG_FILE} is missing)")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet")
    config = dataclass_from_json_file(VAEConfig, run_dir / CONFIG_FILE)
    vae = build_vae(config)
    load_model(vae, str(checkpoint / MODEL_FILE), strict=True)
    cache = clip_cache if clip_cache is not None else run_dir / "clips"
    common = dict(seed=config.data_seed, num_frames=config.num_frames, height=config.size, width=config.size)
    clips = ClipCache(cache, "train", config.train_clips, **common)
    step = int(checkpoint.name.split("_")[-1])
    stats_file = run_dir / LATENT_STATS_FILE
    stats = json.loads(stats_file.read_text(encoding="utf-8")) if config.freeze_encoder else None
    return export_vae(vae.eval(), clips, folder, config.stats_clips, stats), step


@torch.no_grad()
def latent_statistics(vae, clips: ClipCache, count: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the posterior means of ``count`` whole clips."""
    vae.eval()
    total = torch.zeros(16, dtype=torch.float64)
    total_sq = torch.zeros(16, dtype=torch.float64)
    n = 0
    for index in range(min(count, len(clips))):
        video = clips.frames(index).permute(1, 0, 2, 3)[None]
        mean = vae.encode(video).latent_dist.mode().double()  # (1, 16, t, h, w)
        total += mean.sum(dim=(0, 2, 3, 4))
        total_sq += mean.pow(2).sum(dim=(0, 2, 3, 4))
        n += mean[0, 0].numel()
    channel_mean = total / n
    channel_std = (total_sq / n - channel_mean.pow(2)).clamp_min(1e-12).sqrt()
    return [round(float(v), 6) for v in channel_mean], [round(float(v), 6) for v in channel_std]


def export_vae(vae, clips: ClipCache, folder: Path, stats_clips: int, latent_stats: Optional[dict] = None) -> Path:
    """``vae`` saved as fp16 diffusers folder ``folder`` with its ``latents_mean``/``latents_std``: measured on
    ``stats_clips`` training clips, or ``latent_stats`` as given (a frozen encoder keeps its VAE's)."""
    import copy

    from engine.io.atomic import atomic_directory

    if latent_stats is not None:
        mean, std = list(latent_stats["latents_mean"]), list(latent_stats["latents_std"])
    else:
        mean, std = latent_statistics(vae, clips, stats_clips)
    exported = copy.deepcopy(vae).to(torch.float16)
    exported.register_to_config(latents_mean=mean, latents_std=std)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(folder, replace=True) as tmp:
        exported.save_pretrained(str(tmp), safe_serialization=True)
    log.info("VAE written to %s (latents_mean %s, latents_std %s)", folder, mean, std)
    return folder
