"""Text -> 3D scene with VIST3A: Wan 2.1 text-to-video latent -> stitched 3D decoder -> Gaussians + cameras.

``Vist3aPipeline.from_pretrained(bundle)`` loads the parts named by a model bundle (see
``engine.pipeline.settings.ModelBundle``): the Wan diffusers components (UMT5 tokenizer and text
encoder, Wan transformer, Wan VAE, scheduler config), an optional PEFT LoRA adapter merged into the
transformer, and the stitched 3D decoder. ``generate(settings)`` then runs

1. ``encode_prompt``: UMT5 embeddings of the (orbit-templated) prompt and of the negative prompt,
   cached by text so repeated prompts skip the encoder;
2. ``denoise``: our own UniPC flow-matching loop with classifier-free guidance, so that progress per
   step, cancellation between steps, previews and determinism are under our control;
3. ``decode_video``: un-normalise the latent with the VAE's ``latents_mean``/``latents_std`` and decode
   the frames (the RGB input of the decoder's Gaussian head, and ``frames.mp4``);
4. ``decode_scene``: the stitched decoder turns latent + frames into a scene and cameras.

The 3D decoder interface (``SceneDecoder``)
-------------------------------------------
Any callable ``decoder(latent, frames) -> DecodedScene`` where

- ``latent``: (1, C, T_lat, h, w) float32, the *un-normalised* video latent (the space the VAE encoder
  produces, which is what the stitching layer was fitted on), T_lat = (T - 1) / 4 + 1, h = H / 8;
- ``frames``: (1, T, 3, H, W) float32 RGB in [0, 1], the VAE decoding of the same latent (the decoder
  resizes them to its own input size);
- the result holds Gaussians and/or points, one camera per frame and optionally a depth map per frame.

Decoders are built from a bundle by the loader of its ``decoder.kind`` (``engine.pipeline.decoders``:
``DECODER_LOADERS``), or passed ready-made to ``from_pretrained(decoder=...)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import html
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from engine.generator.text import unknown_words, unknown_words_message
from engine.pipeline.decoders import DecodedScene, SceneDecoder, load_decoder
from engine.pipeline.sampler import denoise, flow_scheduler
from engine.pipeline.settings import (
    MAX_SEED,
    OWN_CONDITIONING,
    RELEASED_CONDITIONING,
    GenerationCancelled,
    GenerationSettings,
    ModelBundle,
    ModelLoadError,
    ModelNotFoundError,
    RuntimeOptions,
    SettingsError,
    bundle_identity,
)
from engine.scene import Cameras, GaussianScene, PointScene
from engine.stitching.vae import WanVAEAdapter

logger = logging.getLogger(__name__)

__all__ = [
    "GenerationCancelled",
    "GenerationResult",
    "GenerationSettings",
    "ModelBundle",
    "ModelLoadError",
    "ModelNotFoundError",
    "RuntimeOptions",
    "SettingsError",
    "Vist3aPipeline",
    "resolve_device",
    "resolve_dtype",
    "software_versions",
]

# Wan 2.1 was trained with text sequences padded to 512 UMT5 tokens.
MAX_TEXT_TOKENS = 512
# Embeddings of this many distinct texts are kept (each ~4 MB for UMT5-XXL in bf16).
TEXT_CACHE_SIZE = 8

ProgressCallback = Callable[[str, int, int, Optional[np.ndarray]], None]
"""progress(stage, step, total, preview): stage from engine.worker.protocol.STAGES, step in 1..total,
preview an (h, w, 3) uint8 image or None."""

CancelCheck = Union[threading.Event, Callable[[], bool], None]


# ----------------------------------------------------------------------------- results


@dataclass
class GenerationResult:
    """One generated scene and everything needed to write and reproduce it.

    Attributes:
        settings: the settings used, with the seed filled in.
        runtime: the runtime options used.
        full_prompt: the text given to the text encoder.
        latent: (1, C, T_lat, h, w) float32 final latent in the sampler's (normalised) space, on the CPU.
        frames: (T, 3, H, W) float32 decoded video in [0, 1], on the CPU.
        scene: GaussianScene or PointScene (per ``settings.output_kind``), on the CPU.
        cameras: one camera per frame, on the CPU.
        depth: (V, H', W') depth per camera or None, on the CPU.
        model: identity of the model parts (paths, quick hashes, hub ids).
        timings: seconds per stage ("load" is the pipeline's load time).
        device, dtype: where the transformer ran, e.g. "cuda:0", "torch.bfloat16".
        memory: the memory policy in force (``engine.pipeline.memory.MemoryPolicy.to_dict()``), or None.
        unknown_words: words of the prompt that the model's tokenizer does not know (it maps them to
            its unknown token); empty for open-vocabulary tokenizers such as the real UMT5's.
    """

    settings: GenerationSettings
    runtime: RuntimeOptions
    full_prompt: str
    latent: Tensor
    frames: Tensor
    scene: Union[GaussianScene, PointScene]
    cameras: Cameras
    depth: Optional[Tensor]
    model: dict
    timings: dict = field(default_factory=dict)
    device: str = ""
    dtype: str = ""
    memory: Optional[dict] = None
    unknown_words: list = field(default_factory=list)


def software_versions() -> dict:
    """Versions of the engine and of the libraries that shape its results."""
    import diffusers
    import peft
    import transformers

    from engine import __version__

    return {
        "engine": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "numpy": np.__version__,
    }


# ----------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda if available else cpu; checks that an explicit CUDA device exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"device {name!r} requested but CUDA is not available in this environment")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError("device 'mps' requested but MPS is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto" -> bfloat16 on CUDA (what Wan was trained in) and on meta (a dry run of CUDA), float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type in ("cuda", "meta") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _is_cancelled(cancel: CancelCheck) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def check_cancel(cancel: CancelCheck) -> None:
    """Raises GenerationCancelled if ``cancel`` (an Event or a callable) says so."""
    if _is_cancelled(cancel):
        raise GenerationCancelled("generation cancelled")


def _memory_policy(
    runtime: RuntimeOptions, device: torch.device, loaded: dict, decoder, device_memory, points_decoder=None
):
    """The memory policy for the loaded parts (explicit runtime choices kept, None decided); a points
    decoder counts with the main decoder (both are resident unless offloaded)."""
    from engine.pipeline.memory import choose_memory_policy, module_bytes
    from engine.pipeline.memory import device_memory as query

    sizes = {name: module_bytes(loaded[name]) for name in ("text_encoder", "transformer", "vae")}
    sizes["decoder"] = module_bytes(decoder) + (0 if points_decoder is None else module_bytes(points_decoder))
    if device.type not in ("cuda", "meta"):
        free, total = None, None
    elif device_memory is not None:
        free, total = device_memory
    elif device.type == "meta":
        raise SettingsError("a dry run on the meta device needs device_memory=(free, total) for its memory policy")
    else:
        free, total = query(device)
    return choose_memory_policy(sizes, free, total, runtime.cpu_offload, runtime.vae_tiling)


def offload_device(device: torch.device) -> torch.device:
    """Where offloaded models wait: CPU memory (a dry run on meta stays on meta)."""
    return torch.device("meta") if torch.device(device).type == "meta" else torch.device("cpu")


def _host(tensor: Tensor) -> torch.device:
    return tensor.device if tensor.is_meta else torch.device("cpu")


def _to_host(tensor: Tensor) -> Tensor:
    """The tensor on the CPU (meta tensors of a dry run stay on meta)."""
    return tensor.to(_host(tensor))


def _clean_text(text: str) -> str:
    """The text as diffusers' ``WanPipeline`` cleans prompts (``prompt_clean``) with ftfy installed.

    ``ftfy.fix_text`` (mojibake, odd quotes and spaces), HTML entities decoded twice, stripped, then
    whitespace runs collapsed to one space. ftfy is a dependency of the engine.
    """
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def _to_uint8_image(rgb: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# ----------------------------------------------------------------------------- the pipeline


class Vist3aPipeline:
    """Loaded models plus the generation loop. Build it with ``from_pretrained``.

    Not thread-safe: one ``generate`` at a time (the worker serialises requests).
    """

    def __init__(
        self,
        *,
        tokenizer,
        text_encoder: torch.nn.Module,
        transformer: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler_config: dict,
        decoder: SceneDecoder,
        runtime: RuntimeOptions,
        model_identity: dict,
        load_seconds: float = 0.0,
        default_conditioning: str = "ours",
        memory_policy=None,
        points_decoder: Optional[SceneDecoder] = None,
    ):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.transformer = transformer
        self.vae = vae
        self.vae_adapter = WanVAEAdapter(vae)
        self.scheduler_config = dict(scheduler_config)
        self.decoder = decoder
        # the bundle's pointmap decoder (a stitched VGGT), used for output_kind "points"; None: points
        # are derived from the main decoder's Gaussians
        self.points_decoder = points_decoder
        self.runtime = runtime
        self.device = resolve_device(runtime.device)
        self.dtype = resolve_dtype(runtime.dtype, self.device)
        self.model_identity = model_identity
        self.load_seconds = load_seconds
        # the conditioning preset that settings with conditioning "auto" get (see GenerationSettings)
        self.default_conditioning = default_conditioning
        # engine.pipeline.memory.MemoryPolicy: the offload/tiling choice and its reasons (recorded in metadata)
        self.memory_policy = memory_policy
        # True while free_gpu_memory has moved the resident models off the GPU (they return on next use)
        self._parked = False
        self._text_cache: OrderedDict[str, Tensor] = OrderedDict()
        if runtime.vae_tiling:
            self.vae.enable_tiling()

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        model: Union[str, Path, ModelBundle],
        *,
        runtime: Optional[RuntimeOptions] = None,
        decoder: Optional[SceneDecoder] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: CancelCheck = None,
        device_memory: Optional[tuple[int, Optional[int]]] = None,
    ) -> Vist3aPipeline:
        """Loads every part of a model bundle.

        Args:
            model: a bundle folder, its ``vist3a.json``, or a ModelBundle.
            runtime: device, dtype and memory options (defaults: auto device and dtype).
            decoder: a ready 3D decoder to use instead of the bundle's (its checkpoint is then not loaded).
            progress: called with ("load", k, n, None) after each of the n parts.
            cancel: checked between parts; raises GenerationCancelled.
            device_memory: (free, total) bytes to plan the automatic memory policy for, instead of
                asking the device (a dry run on the meta device simulates a card with it).

        Memory: options of ``runtime`` left None are decided by ``engine.pipeline.memory.choose_memory_policy``
        from the free GPU memory and the models' sizes: the models are then loaded into CPU memory
        first, measured, and moved to the GPU unless CPU offload is chosen.

        Raises:
            ModelNotFoundError: the bundle or one of its parts (folder or file) does not exist.
            ModelLoadError: a part exists but cannot be loaded.
            SettingsError: a runtime option cannot be honoured here (e.g. CUDA requested, none present).
        """
        start = time.perf_counter()
        bundle = model if isinstance(model, ModelBundle) else ModelBundle.load(model)
        bundle.check_files()
        runtime = runtime or RuntimeOptions()
        device = resolve_device(runtime.device)
        dtype = resolve_dtype(runtime.dtype, device)
        # With CPU offload the models live in CPU memory and visit the GPU one at a time. An automatic
        # choice loads them there first and decides once their sizes are known.
        gpu = device.type in ("cuda", "meta")
        automatic = gpu and (runtime.cpu_offload is None or runtime.vae_tiling is None)
        home = offload_device(device) if (runtime.cpu_offload or automatic) else device
        loaded = _load_wan_parts(bundle, dtype, home, progress, cancel)
        check_cancel(cancel)
        if decoder is None:
            decoder = _load_part("decoder", str(bundle.decoder_path), lambda: load_decoder(bundle, home, dtype))
        if isinstance(decoder, torch.nn.Module):
            decoder = decoder.to(home).eval().requires_grad_(False)
        points_decoder = None
        if bundle.has_points_decoder:
            if progress:
                progress("load", _load_steps(bundle) - 1, _load_steps(bundle), None)
            check_cancel(cancel)
            points_bundle = bundle.points_decoder_bundle()
            points_decoder = _load_part(
                "points decoder", str(bundle.points_decoder_path), lambda: load_decoder(points_bundle, home, dtype)
            )
            if isinstance(points_decoder, torch.nn.Module):
                points_decoder = points_decoder.to(home).eval().requires_grad_(False)
        policy = _memory_policy(runtime, device, loaded, decoder, device_memory, points_decoder)
        runtime = dataclasses.replace(runtime, cpu_offload=policy.cpu_offload, vae_tiling=policy.vae_tiling)
        logger.info("memory policy: %s", policy.reason)
        if home != device and not runtime.cpu_offload:
            for name in ("text_encoder", "transformer", "vae"):
                loaded[name] = loaded[name].to(device)
            if isinstance(decoder, torch.nn.Module):
                decoder = decoder.to(device)
            if isinstance(points_decoder, torch.nn.Module):
                points_decoder = points_decoder.to(device)
        if progress:
            total = _load_steps(bundle)
            progress("load", total, total, None)
        identity = bundle_identity(bundle)
        identity["decoder"]["class"] = type(decoder).__qualname__
        if points_decoder is not None:
            identity["points_decoder"]["class"] = type(points_decoder).__qualname__
        return cls(
            tokenizer=loaded["tokenizer"],
            text_encoder=loaded["text_encoder"],
            transformer=loaded["transformer"],
            vae=loaded["vae"],
            scheduler_config=dict(loaded["scheduler"]),
            decoder=decoder,
            runtime=runtime,
            model_identity=identity,
            load_seconds=time.perf_counter() - start,
            default_conditioning=default_conditioning_for(bundle),
            memory_policy=policy,
            points_decoder=points_decoder,
        )

    def save_pretrained(self, directory: Union[str, Path], name: Optional[str] = None) -> Path:
        """Writes this pipeline as a model bundle that :meth:`from_pretrained` loads; returns the folder.

        Layout: ``wan/`` (a diffusers ``WanPipeline`` folder; a LoRA applied on load is saved merged into the
        transformer), ``decoder/`` (``StitchedDecoder.save_pretrained``), ``points_decoder/`` when the
        pipeline has one (the same) and ``vist3a.json`` (decoder kind
        ``stitched``; the decoder's default voxel size as ``extra.voxel_size``; the loaded bundle's generation
        ``defaults``). Written atomically.

        Raises:
            ValueError: a 3D decoder is not a stitched decoder whose settings the ``stitched`` kind keeps
                (a custom decoder, or the released kind, which reads unclamped frames).
        """
        from diffusers import UniPCMultistepScheduler, WanPipeline

        from engine.io.atomic import atomic_directory
        from engine.pipeline.decoders import STITCHED_KIND, StitchedSceneDecoder

        scene_decoder = self.decoder
        for part in [self.decoder] + ([] if self.points_decoder is None else [self.points_decoder]):
            if not isinstance(part, StitchedSceneDecoder) or not part.clamp_frames:
                raise ValueError(
                    f"only a pipeline with stitched decoders of kind {STITCHED_KIND!r} can be saved, "
                    f"not {type(part).__name__} (clamped frames: {getattr(part, 'clamp_frames', None)})"
                )
        directory = Path(directory)
        self._unpark()
        with atomic_directory(directory) as tmp:
            wan = WanPipeline(
                tokenizer=self.tokenizer,
                text_encoder=self.text_encoder,
                transformer=self.transformer,
                vae=self.vae,
                scheduler=UniPCMultistepScheduler.from_config(self.scheduler_config),
            )
            wan.save_pretrained(str(tmp / "wan"))
            scene_decoder.decoder.save_pretrained(tmp / "decoder")
            if self.points_decoder is not None:
                self.points_decoder.decoder.save_pretrained(tmp / "points_decoder")
            extra = {} if scene_decoder.voxel_size is None else {"voxel_size": scene_decoder.voxel_size}
            ModelBundle(
                root=tmp,
                name=name or self.model_identity.get("name", directory.name),
                wan="wan",
                decoder_kind=STITCHED_KIND,
                decoder_checkpoint="decoder",
                extra=extra,
                defaults=self.model_identity.get("manifest", {}).get("defaults", {}),
                points_decoder_kind=None if self.points_decoder is None else STITCHED_KIND,
                points_decoder_checkpoint=None if self.points_decoder is None else "points_decoder",
            ).save()
        return directory

    # ------------------------------------------------------------------ geometry of the latent

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    def check_settings(self, settings: GenerationSettings) -> None:
        """Checks the sizes against this model's VAE and patch factors (SettingsError)."""
        patch = self.transformer.config.patch_size
        multiple_h, multiple_w = self.spatial_factor * patch[1], self.spatial_factor * patch[2]
        if settings.height % multiple_h or settings.width % multiple_w:
            raise SettingsError(
                f"height and width must be multiples of {multiple_h} x {multiple_w} for this model "
                f"(VAE factor {self.spatial_factor} x patch {tuple(patch[1:])}), got {settings.height} x {settings.width}"
            )
        if (settings.num_frames - 1) % self.temporal_factor:
            raise SettingsError(
                f"num_frames must be {self.temporal_factor}k+1 for this model's VAE, got {settings.num_frames}"
            )

    def latent_shape(self, settings: GenerationSettings) -> tuple[int, int, int, int, int]:
        """(1, C, (T-1)/4+1, H/8, W/8) for the Wan VAE."""
        return (
            1,
            self.latent_channels,
            (settings.num_frames - 1) // self.temporal_factor + 1,
            settings.height // self.spatial_factor,
            settings.width // self.spatial_factor,
        )

    # ------------------------------------------------------------------ stages

    @contextlib.contextmanager
    def _on_device(self, module) -> Iterator:
        """With CPU offload: moves ``module`` to the GPU for the duration of the block, then back."""
        self._unpark()
        if not self.runtime.cpu_offload or not isinstance(module, torch.nn.Module):
            yield module
            return
        module.to(self.device)
        try:
            yield module
        finally:
            module.to(offload_device(self.device))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @torch.no_grad()
    def encode_text(self, text: str, use_cache: bool = True) -> Tensor:
        """(1, MAX_TEXT_TOKENS, D) UMT5 embeddings of ``text``, zero after the last real token.

        Cached by text (LRU of TEXT_CACHE_SIZE) when ``use_cache``.
        """
        text = _clean_text(text)
        if use_cache and text in self._text_cache:
            self._text_cache.move_to_end(text)
            return self._text_cache[text]
        tokens = self.tokenizer(
            [text],
            padding="max_length",
            max_length=MAX_TEXT_TOKENS,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        with self._on_device(self.text_encoder) as encoder:
            ids = tokens.input_ids.to(self.device)
            mask = tokens.attention_mask.to(self.device)
            # A meta dry run cannot hand the mask over: transformers inspects its values to choose an
            # attention path. The shapes are the same either way.
            encoder_mask = None if mask.is_meta else mask
            hidden = encoder(input_ids=ids, attention_mask=encoder_mask).last_hidden_state
        # Wan's transformer expects padding positions to be exactly zero.
        embeddings = (hidden * mask[..., None]).to(device=self.device, dtype=self.dtype)
        if use_cache:
            self._text_cache[text] = embeddings
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return embeddings

    def make_scheduler(self, settings: GenerationSettings):
        """A fresh UniPC scheduler in flow-matching mode with the settings' flow shift and preset schedule.

        The ``released`` preset builds the scheduler as the official inference does (diffusers defaults +
        flow prediction, flow sigmas, the shift) with diffusers 0.33.1's sigmas; ``ours`` uses the Wan
        pipeline's scheduler config and the installed diffusers' sigmas.
        """
        if settings.preset["sampler_schedule"] == "diffusers-0.33.1":
            return flow_scheduler({}, settings.num_steps, settings.flow_shift, self.device, schedule="diffusers-0.33.1")
        return flow_scheduler(self.scheduler_config, settings.num_steps, settings.flow_shift, self.device)

    def initial_noise(self, settings: GenerationSettings, seed: int) -> Tensor:
        """(1, C, T_lat, h, w) float32 standard normal noise from ``seed``.

        Drawn on the CPU, so that one seed gives the same noise on every device.
        """
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(self.latent_shape(settings), generator=generator, dtype=torch.float32)
        return noise.to(self.device)

    def denormalize_latent(self, latent: Tensor) -> Tensor:
        """Sampler space -> VAE space: latent * latents_std + latents_mean (per channel)."""
        return self.vae_adapter.denormalize(latent)

    def decode_video(self, vae_latent: Tensor) -> Tensor:
        """(B, C, T_lat, h, w) un-normalised latent -> (B, T, 3, H, W) float32 RGB, (VAE output + 1) / 2.

        Differentiable (the reward finetuning backpropagates through it); the VAE must be on the device.
        Not clamped here (the diffusers Wan VAE clamps its output to [-1, 1] itself); the released
        stitched decoder reads these values as they are, as in the official inference.
        """
        return self.vae_adapter.decode_raw(vae_latent.to(self.device, torch.float32))

    @torch.no_grad()
    def decode_frames(self, vae_latent: Tensor) -> Tensor:
        """:meth:`decode_video` without gradients, the VAE brought to the device for the call (CPU offload)."""
        with self._on_device(self.vae):
            return self.decode_video(vae_latent)

    @torch.no_grad()
    def preview(self, x0_estimate: Tensor) -> np.ndarray:
        """Low-resolution RGB of the current estimate of the first frame, (H/2, W/2, 3) uint8.

        The first latent frame is decoded alone (the Wan VAE is causal in time, so it maps to exactly
        the first video frame) after halving its spatial size, which makes the decode about 4 times
        cheaper than a full-resolution frame; it costs one small VAE call.
        """
        first = self.denormalize_latent(x0_estimate[:, :, :1].float())
        if min(first.shape[-2:]) >= 4:
            first = torch.nn.functional.interpolate(first[:, :, 0], scale_factor=0.5, mode="area")[:, :, None]
        return _to_uint8_image(self.decode_frames(first)[0, 0])

    @torch.no_grad()
    def sample_latent(
        self,
        settings: GenerationSettings,
        seed: int,
        *,
        progress: Optional[ProgressCallback] = None,
        cancel: CancelCheck = None,
        preview_every: int = 0,
    ) -> Tensor:
        """Runs text encoding and the denoising loop; returns the final (1, C, T_lat, h, w) latent (float32).

        The latent is in the sampler's normalised space (use ``denormalize_latent`` before the VAE).
        """
        self.check_settings(settings)
        check_cancel(cancel)
        use_cache = settings.reuse_text_embeddings
        prompt_embeds = self.encode_text(settings.full_prompt, use_cache)
        negative_embeds = self.encode_text(settings.negative_text, use_cache) if settings.uses_guidance else None
        if progress:
            progress("encode_prompt", 1, 1, None)

        scheduler = self.make_scheduler(settings)
        total = len(scheduler.timesteps)

        def step_end(index: int, latents: Tensor, velocity: Tensor) -> None:
            image = None
            if preview_every and ((index + 1) % preview_every == 0 or index + 1 == total):
                # Flow matching: x_t = (1 - sigma) x0 + sigma * noise, velocity = noise - x0.
                sigma = scheduler.sigmas[index].to(latents.device)
                image = self.preview(latents - sigma * velocity)
            if progress:
                progress("denoise", index + 1, total, image)

        with self._on_device(self.transformer) as transformer:
            latents = denoise(
                transformer,
                scheduler,
                self.initial_noise(settings, seed),
                prompt_embeds,
                negative_embeds,
                settings.guidance_scale,
                dtype=self.dtype,
                on_step_start=lambda index, with_grad: check_cancel(cancel),
                on_step_end=step_end,
            )
        if not latents.is_meta and not torch.isfinite(latents).all():
            raise FloatingPointError(
                "the denoised latent contains NaN or infinity (try dtype float32 or bfloat16 instead of float16)"
            )
        return latents

    def scene_decoder(self, output_kind: str = "gaussians") -> SceneDecoder:
        """The 3D decoder that makes ``output_kind``: the points decoder for "points" when the model has
        one, else the main decoder."""
        if output_kind == "points" and self.points_decoder is not None:
            return self.points_decoder
        return self.decoder

    @torch.no_grad()
    def decode_scene(
        self, vae_latent: Tensor, frames: Tensor, voxel_merge: Optional[bool] = None, output_kind: str = "gaussians"
    ) -> DecodedScene:
        """Runs the 3D decoder of ``output_kind`` (:meth:`scene_decoder`; the module docstring gives the
        interface).

        ``voxel_merge`` (None: the decoder's default) is handed to decoders that take it; points from the
        points decoder are never merged.
        """
        chosen = self.scene_decoder(output_kind)
        merge = None if chosen is self.points_decoder else voxel_merge
        options = {} if merge is None else {"voxel_merge": merge}
        with self._on_device(chosen) as decoder:
            try:
                decoded = decoder(vae_latent.to(self.device, torch.float32), frames.to(self.device), **options)
            except TypeError as exc:
                if options and "voxel_merge" in str(exc):
                    raise SettingsError(
                        "this model's 3D decoder has no voxel merging; leave voxel_merge unset"
                    ) from exc
                raise
        if not isinstance(decoded, DecodedScene):
            raise TypeError(f"the 3D decoder returned {type(decoded).__name__}, expected DecodedScene")
        if len(decoded.cameras) != frames.shape[1]:
            raise ValueError(f"the 3D decoder returned {len(decoded.cameras)} cameras for {frames.shape[1]} frames")
        return decoded

    def generate(
        self,
        settings: GenerationSettings,
        *,
        progress: Optional[ProgressCallback] = None,
        cancel: CancelCheck = None,
        preview_every: int = 0,
    ) -> GenerationResult:
        """Text -> scene. A seed of None is replaced by a random one (recorded in the result).

        Raises:
            SettingsError: sizes that do not fit this model.
            GenerationCancelled: ``cancel`` was set (checked before every step and between stages).
        """
        if not isinstance(settings, GenerationSettings):
            raise TypeError(f"settings must be GenerationSettings, got {type(settings).__name__}")
        seed = settings.seed if settings.seed is not None else secrets.randbelow(MAX_SEED + 1)
        settings = settings.resolved(self.default_conditioning).replace(seed=seed)
        timings = {"load": round(self.load_seconds, 3)}
        unknown = self.unknown_words(settings.prompt)
        if unknown:  # reported by the front ends (command line, worker, add-on) from the result
            logger.debug("%s", unknown_words_message(unknown))

        start = time.perf_counter()
        latent = self.sample_latent(settings, seed, progress=progress, cancel=cancel, preview_every=preview_every)
        timings["sample"] = time.perf_counter() - start

        check_cancel(cancel)
        start = time.perf_counter()
        vae_latent = self.denormalize_latent(latent)
        frames = self.decode_frames(vae_latent)
        timings["decode_video"] = time.perf_counter() - start
        if progress:
            progress("decode_video", 1, 1, None)

        check_cancel(cancel)
        start = time.perf_counter()
        decoded = self.decode_scene(vae_latent, frames, settings.voxel_merge, settings.output_kind)
        scene = _scene_of_kind(decoded, settings.output_kind)
        timings["decode_scene"] = time.perf_counter() - start
        if progress:
            progress("decode_scene", 1, 1, None)

        return GenerationResult(
            settings=settings,
            runtime=self.runtime,
            full_prompt=_clean_text(settings.full_prompt),
            latent=_to_host(latent),
            frames=_to_host(frames[0].clamp(0, 1)),
            scene=scene.detach().to(device=_host(scene.means if isinstance(scene, GaussianScene) else scene.points)),
            cameras=decoded.cameras.detach().to(device=_host(decoded.cameras.camera_to_world)),
            depth=None if decoded.depth is None else _to_host(decoded.depth.detach().float()),
            model=self.model_identity,
            timings={k: round(v, 3) for k, v in timings.items()},
            device=str(self.device),
            dtype=str(self.dtype),
            memory=None if self.memory_policy is None else self.memory_policy.to_dict(),
            unknown_words=unknown,
        )

    def _models(self) -> list[torch.nn.Module]:
        parts = (self.text_encoder, self.transformer, self.vae, self.decoder, self.points_decoder)
        return [m for m in parts if isinstance(m, torch.nn.Module)]

    def _unpark(self) -> None:
        if self._parked:
            for module in self._models():
                module.to(self.device)
            self._parked = False

    def free_gpu_memory(self) -> None:
        """Takes every model off the GPU and returns the memory to the driver (before the fly-through render).

        With CPU offload the models are already in CPU memory after ``generate``. Resident models are
        moved to CPU memory now and return to the GPU on their next use (``generate`` does it), so the
        render and other programs get the whole card in between.
        """
        if self.device.type in ("cuda", "meta") and not self.runtime.cpu_offload and not self._parked:
            for module in self._models():
                module.to(offload_device(self.device))
            self._parked = True
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of ``prompt`` the tokenizer maps to its unknown token (a closed-vocabulary model, such
        as the default model, cannot know them); see ``engine.generator.text.unknown_words``."""
        return unknown_words(self.tokenizer, prompt)

    def release(self) -> None:
        """Drops the models (and cached embeddings) and returns GPU memory to the driver.

        The pipeline cannot be used afterwards.
        """
        for name in ("tokenizer", "text_encoder", "transformer", "vae", "decoder", "points_decoder"):
            setattr(self, name, None)
        self._text_cache.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _scene_of_kind(decoded: DecodedScene, kind: str) -> Union[GaussianScene, PointScene]:
    """The decoder's output in the requested form; points can be derived from Gaussians, not the reverse."""
    if kind == "gaussians":
        if decoded.gaussians is None:
            raise SettingsError("this model's decoder produces points only; use output_kind 'points'")
        return decoded.gaussians
    if decoded.points is not None:
        return decoded.points
    gaussians = decoded.gaussians
    return PointScene(
        points=gaussians.means, colors=gaussians.base_colors().clamp(0, 1), confidence=gaussians.opacities
    )


def _load_steps(bundle: ModelBundle) -> int:
    """Progress steps of loading ``bundle``: five Wan parts, the LoRA if any, the 3D decoder, the points
    decoder if any."""
    return 5 + 1 + (bundle.lora_path is not None) + bundle.has_points_decoder


def _load_wan_parts(bundle: ModelBundle, dtype: torch.dtype, home: torch.device, progress, cancel) -> dict:
    """Tokenizer, text encoder, transformer (its LoRA merged), VAE and scheduler config of ``bundle``, on ``home``."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    source = resolve_wan_source(bundle)
    hub: dict = {}

    parts: list[tuple[str, Callable]] = [
        ("tokenizer", lambda: AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **hub)),
        (
            "text_encoder",
            lambda: UMT5EncoderModel.from_pretrained(
                source, subfolder="text_encoder", dtype=dtype, use_safetensors=True, **hub
            ),
        ),
        (
            "transformer",
            lambda: WanTransformer3DModel.from_pretrained(
                source, subfolder="transformer", torch_dtype=dtype, use_safetensors=True, **hub
            ),
        ),
        # The Wan VAE is numerically sensitive; it always runs in float32.
        (
            "vae",
            lambda: AutoencoderKLWan.from_pretrained(
                source, subfolder="vae", torch_dtype=torch.float32, use_safetensors=True, **hub
            ),
        ),
        ("scheduler", lambda: UniPCMultistepScheduler.load_config(source, subfolder="scheduler", **hub)),
    ]
    loaded: dict = {}
    total = _load_steps(bundle)
    step = 0
    for name, load in parts:
        check_cancel(cancel)
        loaded[name] = _load_part(name, source, load)
        if isinstance(loaded[name], torch.nn.Module):
            loaded[name] = loaded[name].to(home).eval().requires_grad_(False)
        step += 1
        if progress:
            progress("load", step, total, None)
    if bundle.lora_path is not None:
        check_cancel(cancel)
        loaded["transformer"] = apply_lora_adapter(loaded["transformer"], bundle.lora_path)
        step += 1
        if progress:
            progress("load", step, total, None)
    return loaded


def default_conditioning_for(bundle: ModelBundle) -> str:
    """The conditioning preset a bundle's model was trained with: ``released`` for the released kind."""
    return RELEASED_CONDITIONING if bundle.decoder_kind == "anysplat-stitched" else OWN_CONDITIONING


def _hub_offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def resolve_wan_source(bundle: ModelBundle) -> str:
    """The local folder of the bundle's Wan pipeline: its own folder, or the hub snapshot of its hub id.

    A hub id (with ``wan_revision`` when given) is looked up in the Hugging Face cache first; it is
    downloaded only when missing there and ``HF_HUB_OFFLINE`` is unset. Loading every component from the
    snapshot folder (rather than handing the id to each library) is what makes an offline cache filled
    by ``hf download`` work: transformers' ``AutoTokenizer`` otherwise asks the hub for a
    ``tokenizer/config.json`` that the Wan repository does not have.

    Raises ModelNotFoundError naming the id when it is neither cached nor downloadable.
    """
    if not bundle.wan_is_hub_id:
        return bundle.wan_source
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(bundle.wan, revision=bundle.wan_revision, local_files_only=True)
    except LocalEntryNotFoundError:
        if _hub_offline():
            raise ModelNotFoundError(
                f"bundle {bundle.name!r}: the Wan pipeline {bundle.wan} is not in the Hugging Face cache and "
                "HF_HUB_OFFLINE is set; download it first (hf download " + bundle.wan + ")"
            ) from None
    try:
        return snapshot_download(bundle.wan, revision=bundle.wan_revision)
    except Exception as exc:  # network, authentication or missing repository
        raise ModelNotFoundError(
            f"bundle {bundle.name!r}: cannot download the Wan pipeline {bundle.wan}: {exc}"
        ) from exc


def _load_part(name: str, source: str, load: Callable):
    """Runs one loader, turning library errors into ModelNotFoundError / ModelLoadError naming the part."""
    try:
        return load()
    except (ModelNotFoundError, ModelLoadError, SettingsError):
        raise
    except OSError as exc:  # diffusers/transformers report missing files and folders as OSError
        raise ModelNotFoundError(f"cannot load the {name} from {source}: {exc}") from exc
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"cannot load the {name} from {source}: {exc}") from exc


def apply_lora_adapter(transformer: torch.nn.Module, adapter_dir: Path) -> torch.nn.Module:
    """Loads a PEFT LoRA adapter folder into ``transformer`` and merges it into the weights.

    The folder is what ``PeftModel.save_pretrained`` writes (``adapter_config.json`` and
    ``adapter_model.safetensors``), e.g. the released ``vist3a_1.3b_lora_ema``. Every tensor of the
    adapter must find its place and every LoRA layer must get its weights, otherwise ModelLoadError:
    a half-applied adapter would silently change the results.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    try:
        config = LoraConfig.from_pretrained(str(adapter_dir))
        state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read the LoRA adapter in {adapter_dir}: {exc}") from exc
    config.inference_mode = True
    try:
        peft_model = get_peft_model(transformer, config)
        result = set_peft_model_state_dict(peft_model, state)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"the LoRA adapter in {adapter_dir} does not fit the transformer: {exc}") from exc
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if unexpected or missing:
        detail = f"unexpected tensors {unexpected[:3]}" if unexpected else f"missing tensors {missing[:3]}"
        raise ModelLoadError(f"the LoRA adapter in {adapter_dir} does not fit the transformer: {detail}")
    logger.info("applied LoRA adapter %s (rank %s, %d tensors)", adapter_dir, config.r, len(state))
    return peft_model.merge_and_unload().eval().requires_grad_(False)
