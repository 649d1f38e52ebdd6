"""Training the video generator: diffusers ``WanTransformer3DModel`` with flow matching on VAE latents.

Data: orbit clips of training scenes (13 x 128 x 128) encoded by the trained VAE (posterior mean),
normalised per channel with the VAE config's ``latents_mean``/``latents_std`` (the pipeline's sampler
space), with their captions wrapped in the pipeline's orbit template (the text the pipeline feeds at
generation time). Latents are encoded progressively (``encode_per_step`` new clips per step, cached in
``RUN/latents``), so training starts at once and the data grows to ``train_clips``.

Objective (rectified flow, as Wan 2.1): u ~ U(0, 1), sigma = shift·u / (1 + (shift - 1)·u), noise n,
x_sigma = (1 - sigma)·x0 + sigma·n; the transformer at timestep 1000·sigma predicts the velocity n - x0
(MSE), optionally weighted ``object_weight`` times on the latent pixels whose footprint holds an object
(:func:`latent_object_mask` of :func:`engine.data.object_pixels`): objects fill a few latent pixels of a frame, and binding a caption's colour
words to them is what the generator learns last (the VAE's object weight, session 5). Caption dropout: with probability ``caption_dropout`` the caption is replaced by the empty text
or by the pipeline's default negative prompt (half each), which is what classifier-free guidance
contrasts with at generation time.

The text encoder (``engine.generator.text``) is trained jointly and frozen afterwards. Held-out
evaluation: the flow-matching loss at fixed noise and sigmas on held-out clips (captions with colour-shape
pairs never seen in training) and, for comparison, on as many training clips.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from engine.generator.clipcache import ClipCache
from engine.generator.runs import Trainer
from engine.generator.text import build_text_encoder, build_tokenizer, encode_texts
from engine.io.atomic import atomic_directory, atomic_write
from engine.models.checkpoint import load_safetensors_folder
from engine.pipeline.vist3a import MAX_TEXT_TOKENS  # the text length of the pipeline (padding changes Wan)
from engine.stitching.vae import WanVAEAdapter

log = logging.getLogger(__name__)

PIPELINE_FOLDER = "pipeline"  # inside a run folder: the exported WanPipeline folder
_EVAL_SIGMAS = (0.2, 0.5, 0.8, 0.95)


@dataclass
class VideoConfig:
    """Settings of a video-generator training run (all saved in the run's config.json)."""

    seed: int = 0
    steps: int = 8000
    lr: float = 4e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    batch_size: int = 4
    caption_dropout: float = 0.1
    flow_shift: float = 3.0
    orbit_template: bool = True
    object_weight: float = 1.0
    # Architecture (WanTransformer3DModel; Wan 2.1 1.3B: 12 heads x 128, 30 layers, ffn 8960).
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    num_layers: int = 8
    ffn_dim: int = 384
    freq_dim: int = 64
    text_dim: int = 64
    text_layers: int = 2
    # Data.
    num_frames: int = 13
    size: int = 128
    data_seed: int = 0
    train_clips: int = 800
    eval_clips: int = 16
    encode_per_step: int = 1
    # Bookkeeping.
    log_every: int = 10
    eval_every: int = 250
    save_every: int = 100
    keep_checkpoints: int = 2

    def __post_init__(self):
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be positive, got {self.flow_shift}")
        if self.object_weight <= 0:
            raise ValueError(f"object_weight must be positive, got {self.object_weight}")
        if self.batch_size < 1 or self.train_clips < self.batch_size:
            raise ValueError("batch_size must be at least 1 and at most train_clips")


class Generator(nn.Module):
    """The trained parts together: ``transformer`` (WanTransformer3DModel) and ``text_encoder`` (UMT5)."""

    def __init__(self, transformer: nn.Module, text_encoder: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.text_encoder = text_encoder


def build_transformer(config: VideoConfig):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(config.seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=config.num_attention_heads,
        attention_head_dim=config.attention_head_dim,
        in_channels=16,
        out_channels=16,
        text_dim=config.text_dim,
        freq_dim=config.freq_dim,
        ffn_dim=config.ffn_dim,
        num_layers=config.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )


def shifted_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's / SD3's timestep shift: sigma = shift·u / (1 + (shift - 1)·u) for u in [0, 1]."""
    return shift * u / (1 + (shift - 1) * u)


def latent_object_mask(mask: torch.Tensor, spatial: int = 8, temporal: int = 4) -> torch.Tensor:
    """(B, 1, 1 + (T - 1) / temporal, H / spatial, W / spatial) bool: the latent pixels of a causal Wan VAE
    whose footprint holds at least one pixel of ``mask`` (B, 1, T, H, W) bool (e.g.
    :func:`engine.data.object_pixels`).

    Latent frame 0 covers frame 0 and latent frame j >= 1 frames temporal·(j - 1) + 1 .. temporal·j (the
    causal VAE's grouping, T = 1 + temporal·k); a latent pixel covers a ``spatial`` x ``spatial`` block.
    Raises ValueError for sizes the VAE does not take.
    """
    import torch.nn.functional as F

    _, _, frames, height, width = mask.shape
    if (frames - 1) % temporal or height % spatial or width % spatial:
        raise ValueError(
            f"a video of {frames} x {height} x {width} does not map onto latent pixels "
            f"({temporal}k + 1 frames, sides multiples of {spatial})"
        )
    mask = mask.float()
    grouped = [F.max_pool3d(mask[:, :, :1], (1, spatial, spatial))]
    if frames > 1:
        grouped.append(F.max_pool3d(mask[:, :, 1:], (temporal, spatial, spatial)))
    return torch.cat(grouped, dim=2) > 0


def load_vae(folder: Path):
    """The trained VAE (diffusers folder), float32, frozen; raises FileNotFoundError naming the folder."""
    from diffusers import AutoencoderKLWan

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no trained VAE at {folder} (expected a diffusers folder with config.json)")
    vae = AutoencoderKLWan.from_pretrained(str(folder), torch_dtype=torch.float32).eval().requires_grad_(False)
    if vae.config.latents_mean is None or len(vae.config.latents_mean) != 16:
        raise ValueError(f"{folder}: the VAE config has no latents_mean/latents_std of 16 channels")
    return vae


class VideoTrainer(Trainer):
    """Trains the transformer and text encoder; see the module docstring.

    Args:
        config: the run's settings.
        out_dir: run folder (None: nothing is written, latents kept in memory).
        vae: the trained VAE folder.
        text: optional WanPipeline-style folder with ``tokenizer/`` and ``text_encoder/`` to start from.
        init: optional trained WanPipeline folder whose ``transformer/`` (and, unless ``text`` is given, whose
            tokenizer and text encoder) the run starts from: a finetune, e.g. on the latents of a VAE trained
            further. Its transformer must have the architecture ``config`` describes (ValueError naming the
            differences otherwise). A resumed run continues from its own checkpoint instead.
        resume: continue the run in ``out_dir``.
        clip_cache: folder of rendered clips (default ``out_dir/clips``).
        context: this process's place in a data-parallel run (default: a single process).
    """

    name = "train video"
    eval_metric = "heldout_loss"

    def __init__(
        self,
        config: VideoConfig,
        out_dir: Optional[Path] = None,
        *,
        vae: Path,
        text: Optional[Path] = None,
        init: Optional[Path] = None,
        resume: bool = False,
        clip_cache: Optional[Path] = None,
        context=None,
    ):
        from engine.pipeline.settings import DEFAULT_NEGATIVE_PROMPT, ORBIT_PROMPT_TEMPLATE

        self.config = config
        self.vae_folder = Path(vae)
        self.vae = load_vae(self.vae_folder)
        if init is not None:
            init = Path(init)
            if not (init / "transformer").is_dir():
                raise FileNotFoundError(f"{init} is not a WanPipeline folder (it has no transformer/ folder)")
            if text is None:
                text = init
        if text is not None:
            from transformers import AutoTokenizer, UMT5EncoderModel

            self.tokenizer = AutoTokenizer.from_pretrained(str(Path(text) / "tokenizer"))
            text_encoder = UMT5EncoderModel.from_pretrained(str(Path(text) / "text_encoder"), torch_dtype=torch.float32)
        else:
            self.tokenizer = build_tokenizer()
            text_encoder = build_text_encoder(len(self.tokenizer), config.seed, config.text_dim, config.text_layers)
        if text_encoder.config.d_model != config.text_dim:
            raise ValueError(
                f"the text encoder has width {text_encoder.config.d_model}, config.text_dim is {config.text_dim}"
            )
        transformer = build_transformer(config)
        if init is not None:
            load_safetensors_folder(transformer, init / "transformer", "the transformer")
        self.model = Generator(transformer, text_encoder)
        self.template = ORBIT_PROMPT_TEMPLATE if config.orbit_template else "{prompt}"
        self.unconditional = ("", DEFAULT_NEGATIVE_PROMPT)
        cache = clip_cache if clip_cache is not None else (None if out_dir is None else Path(out_dir) / "clips")
        common = dict(seed=config.data_seed, num_frames=config.num_frames, height=config.size, width=config.size)
        self.train_clips = ClipCache(cache, "train", config.train_clips, **common)
        self.eval_clips = ClipCache(cache, "heldout", config.eval_clips, **common)
        self.latent_dir = None if out_dir is None else Path(out_dir) / "latents"
        self._latents: dict[tuple[str, int], torch.Tensor] = {}
        self._objects: dict[int, torch.Tensor] = {}
        self.vae_adapter = WanVAEAdapter(self.vae)  # the pipeline's latent normalisation
        self.setup(out_dir, resume, context)

    # ----------------------------------------------------------------------------------------------
    def latent(self, split: str, index: int) -> torch.Tensor:
        """(16, T_lat, h, w) normalised latent (posterior mean) of a clip; cached in memory and on disk."""
        key = (split, index)
        if key in self._latents:
            return self._latents[key]
        file = None if self.latent_dir is None else self.latent_dir / f"{split}_{index:06d}.npy"
        if file is not None and file.is_file():
            value = torch.from_numpy(np.load(file)).float()
        else:
            clips = self.train_clips if split == "train" else self.eval_clips
            video = clips.frames(index).permute(1, 0, 2, 3)[None]
            with torch.no_grad():
                raw = self.vae.encode(video).latent_dist.mode()
            value = self.vae_adapter.normalize(raw)[0]
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(file) as f:
                    np.save(f, value.numpy().astype(np.float16))
                value = value.half().float()  # the same values as when read back after a resume
        self._latents[key] = value
        return value

    def objects(self, index: int) -> torch.Tensor:
        """(1, T_lat, h, w) bool :func:`latent_object_mask` of training clip ``index``; cached like the latents."""
        if index in self._objects:
            return self._objects[index]
        file = None if self.latent_dir is None else self.latent_dir / f"train_{index:06d}_objects.npy"
        if file is not None and file.is_file():
            value = torch.from_numpy(np.load(file))
        else:
            from engine.data import object_pixels

            clip = self.train_clips.dataset[index]  # rendered again: the cache keeps frames, not depth
            value = latent_object_mask(object_pixels(clip)[None, None])[0]
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(file) as f:
                    np.save(f, value.numpy())
        self._objects[index] = value
        return value

    def caption(self, split: str, index: int) -> str:
        clips = self.train_clips if split == "train" else self.eval_clips
        return self.template.format(prompt=clips.caption(index))

    def available_clips(self) -> int:
        """Training clips encoded by now (grows by ``encode_per_step`` per step up to ``train_clips``)."""
        cfg = self.config
        return min(cfg.train_clips, cfg.batch_size + cfg.encode_per_step * self.step)

    def embed(self, texts: list[str]) -> torch.Tensor:
        return encode_texts(self.tokenizer, self.model.text_encoder, texts, MAX_TEXT_TOKENS)

    def flow_loss(
        self,
        x0: torch.Tensor,
        texts: list[str],
        sigma: torch.Tensor,
        noise: torch.Tensor,
        weight: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Per-sample MSE between predicted and true velocity (B,); with ``weight`` (B, 1, T_lat, h, w), the
        weighted mean over the latent pixels (every channel alike)."""
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * noise
        prediction = self.model.transformer(
            hidden_states=noisy, timestep=sigma * 1000, encoder_hidden_states=self.embed(texts), return_dict=False
        )[0]
        error = (prediction.float() - (noise - x0)).pow(2)
        if weight is None:
            return error.mean(dim=(1, 2, 3, 4))
        weight = weight.expand_as(error)
        return (weight * error).sum(dim=(1, 2, 3, 4)) / weight.sum(dim=(1, 2, 3, 4))

    def loss(self):
        cfg, g = self.config, self.generator
        available = self.available_clips()
        # encode the clips that became available (cheap when cached); data-parallel: each process its share
        for index in self.context.shard(range(available)):
            self.latent("train", index)
        # the whole global batch is drawn (the generator advances alike on every process), this process's
        # samples are computed
        indices = torch.randint(available, (cfg.batch_size,), generator=g).tolist()
        texts = []  # a caption, or None for the caption of the clip (read only for this process's samples)
        for _ in indices:
            if float(torch.rand((), generator=g)) < cfg.caption_dropout:
                texts.append(self.unconditional[int(torch.randint(2, (1,), generator=g))])
            else:
                texts.append(None)
        sigma = shifted_sigmas(torch.rand(cfg.batch_size, generator=g), cfg.flow_shift)
        local = self.local_indices()
        x0 = torch.stack([self.latent("train", indices[j]) for j in local])
        noise = torch.randn((cfg.batch_size, *x0.shape[1:]), generator=g)[local.start : local.stop]
        texts = [self.caption("train", indices[j]) if texts[j] is None else texts[j] for j in local]
        weight = None
        if cfg.object_weight != 1.0:
            objects = torch.stack([self.objects(indices[j]) for j in local]).float()
            weight = 1.0 + (cfg.object_weight - 1.0) * objects
        loss = self.forward(self.flow_loss, x0, texts, sigma[local.start : local.stop], noise, weight).mean()
        return loss, {"clips": available}

    def evaluate(self) -> dict:
        """Flow-matching loss at fixed sigmas and noise: held-out clips, and as many training clips."""
        results = {}
        for split, count in (
            ("heldout", len(self.eval_clips)),
            ("train", min(len(self.eval_clips), len(self.train_clips))),
        ):
            g = torch.Generator().manual_seed(1234)
            losses = []
            for start in range(0, count, 8):
                indices = list(range(start, min(count, start + 8)))
                x0 = torch.stack([self.latent(split, i) for i in indices])
                texts = [self.caption(split, i) for i in indices]
                for value in _EVAL_SIGMAS:
                    sigma = torch.full((len(indices),), value)
                    noise = torch.randn(x0.shape, generator=g)
                    losses.append(self.flow_loss(x0, texts, sigma, noise))
            results[f"{split}_loss"] = float(torch.cat(losses).mean())
        return results

    # ----------------------------------------------------------------------------------------------
    def export(self, folder: Path) -> Path:
        """Writes the whole ``WanPipeline`` folder (fp16 safetensors): tokenizer, text encoder,
        transformer, the VAE and a flow-matching UniPC scheduler."""
        return export_pipeline(self.model, self.tokenizer, self.vae_folder, folder)


def export_pipeline(model: Generator, tokenizer, vae_folder: Path, folder: Path) -> Path:
    import copy

    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    vae = AutoencoderKLWan.from_pretrained(str(vae_folder), torch_dtype=torch.float16)
    # diffusers records the folder a model was loaded from; a shipped pipeline must not carry this machine's paths
    vae.register_to_config(_name_or_path="")
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=copy.deepcopy(model.text_encoder).to(torch.float16),
        transformer=copy.deepcopy(model.transformer).to(torch.float16),
        vae=vae,
        scheduler=scheduler,
    )
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(folder, replace=True) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
    log.info("WanPipeline written to %s", folder)
    return folder
