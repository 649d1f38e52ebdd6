"""Video-VAE adapters: one interface over the diffusers VAEs a VIST3A generator can be built on.

Frames are always ``(B, T, 3, H, W)`` in [0, 1]; latents are always ``(B, C, T_lat, h, w)``,
*normalised the way the video model sees them* (what its denoiser produces) unless asked for raw: the
stitching layer reads the raw VAE latent (``encode(..., normalized=False)``), as the released VIST3A
stitch does, and the generator's latent is un-normalised (``denormalize``) before it reaches the
stitched decoder. Each adapter knows its VAE's factors and frame rule:

=============================  ===================  ==================  ====================================
diffusers class                temporal rule        latents (T_lat)     normalisation (from the pipeline)
=============================  ===================  ==================  ====================================
AutoencoderKLWan               T = 4k + 1           (T - 1) / 4 + 1     (z - latents_mean) / latents_std
AutoencoderKLCogVideoX         T = 4k + 1           (T - 1) / 4 + 1     z * scaling_factor
AutoencoderKLHunyuanVideo      T = 4k + 1           (T - 1) / 4 + 1     z * scaling_factor
AutoencoderKLTemporalDecoder   any T (per frame)    T                   z * scaling_factor
=============================  ===================  ==================  ====================================

(4 is the temporal factor of the released models; the adapters read it from the VAE's config.) The
causal video VAEs encode the first frame on its own and every following group of ``temporal_factor``
frames into one latent frame. The directions follow diffusers' pipelines: WanPipeline un-normalises with
``latents / (1 / latents_std) + latents_mean``; the CogVideoX, HunyuanVideo and StableVideoDiffusion
pipelines decode ``latents / scaling_factor``.

Encoding uses the posterior's mode by default (deterministic, as Wan's image-to-video pipeline does);
``sample=True`` draws from it instead. Gradients flow through encode/decode; wrap calls in
``torch.no_grad()`` where none are needed.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLHunyuanVideo,
    AutoencoderKLTemporalDecoder,
    AutoencoderKLWan,
)

from engine.stitching.layer_spec import upsample_time


class VideoVAEAdapter(ABC):
    """Common interface; subclasses give the factors, the normalisation and, where needed, the raw calls."""

    vae_class: ClassVar[type[torch.nn.Module]]

    def __init__(self, vae: torch.nn.Module):
        if not isinstance(vae, self.vae_class):
            raise TypeError(f"{type(self).__name__} wraps {self.vae_class.__name__}, got {type(vae).__name__}")
        self.vae = vae

    # -- save / load ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **from_pretrained_kwargs,
    ) -> VideoVAEAdapter:
        """A diffusers VAE folder (or pipeline folder, or hub id) -> its adapter; see :func:`load_video_vae`.

        Called on ``VideoVAEAdapter`` it picks the adapter from the config's ``_class_name``; called on a
        subclass (e.g. ``WanVAEAdapter``) it also raises TypeError for a VAE of another family.
        """
        adapter = load_video_vae(name_or_path, subfolder, torch_dtype, device, **from_pretrained_kwargs)
        if not isinstance(adapter, cls):
            raise TypeError(
                f"{name_or_path} holds a {type(adapter.vae).__name__}; {cls.__name__} reads {cls.vae_class.__name__}"
            )
        return adapter

    def save_pretrained(self, directory: str | Path, replace: bool = True) -> Path:
        """Writes the VAE in diffusers format (``config.json`` + safetensors weights) atomically; returns the folder.

        :meth:`from_pretrained` reads it back (the config's ``_class_name`` names the adapter).
        """
        from engine.io import atomic_directory

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(directory, replace=replace) as tmp:
            self.vae.save_pretrained(str(tmp), safe_serialization=True)
        return directory

    # -- geometry -------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along H and W."""

    @property
    @abstractmethod
    def temporal_factor(self) -> int:
        """Frames per latent frame (after the first one, for causal video VAEs)."""

    @property
    @abstractmethod
    def latent_channels(self) -> int:
        """Channels C of the latent."""

    def latent_frames(self, num_frames: int) -> int:
        """T_lat for a clip of T frames; a T the VAE cannot encode raises ValueError."""
        factor = self.temporal_factor
        if num_frames < 1 or (num_frames - 1) % factor:
            valid = ", ".join(str(factor * k + 1) for k in range(4))
            raise ValueError(
                f"{self.vae_class.__name__} encodes T = {factor}k+1 frames ({valid}, ...); got T={num_frames}"
            )
        return (num_frames - 1) // factor + 1

    def frame_count(self, latent_frames: int) -> int:
        """T that a latent with T_lat frames stands for (the inverse of :meth:`latent_frames`)."""
        if latent_frames < 1:
            raise ValueError(f"a latent needs at least one frame, got T_lat={latent_frames}")
        return (latent_frames - 1) * self.temporal_factor + 1

    def upsample_time(self, latent: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Trilinear (align_corners) upsampling in time only, (B, C, T_lat, h, w) -> (B, C, T, h, w);
        T defaults to :meth:`frame_count` of the latent (Wan: 4 -> 13)."""
        if num_frames is None:
            num_frames = self.frame_count(latent.shape[2])
        return upsample_time(latent, num_frames)

    # -- normalisation --------------------------------------------------------------------------------
    @abstractmethod
    def normalize(self, raw_latent: torch.Tensor) -> torch.Tensor:
        """VAE posterior latent -> the latent the video model sees."""

    @abstractmethod
    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: the video model's latent -> what the VAE decoder takes."""

    # -- encode / decode ------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def _check_frames(self, frames: torch.Tensor) -> None:
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, H, W) in [0, 1], got shape {tuple(frames.shape)}")
        height, width = frames.shape[-2:]
        if height % self.spatial_factor or width % self.spatial_factor:
            raise ValueError(
                f"frame size {height}x{width} is not a multiple of the VAE's spatial factor {self.spatial_factor}"
            )
        self.latent_frames(frames.shape[1])

    def _check_latent(self, latent: torch.Tensor) -> None:
        if latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            raise ValueError(
                f"latent must be (B, {self.latent_channels}, T_lat, h, w), got shape {tuple(latent.shape)}"
            )

    def encode(
        self,
        frames: torch.Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
        normalized: bool = True,
    ) -> torch.Tensor:
        """(B, T, 3, H, W) in [0, 1] -> latent (B, C, T_lat, H/s, W/s), float32.

        ``normalized=True`` gives the video model's latent space (what its denoiser produces);
        ``normalized=False`` the raw VAE posterior latent, which is what stitching reads (the released
        VIST3A stitch feeds the VAE encoder's output, and at generation time the un-normalised latent).
        """
        self._check_frames(frames)
        pixels = frames.to(device=self.device, dtype=self.dtype) * 2 - 1  # the VAEs take [-1, 1]
        posterior = self._encode_raw(pixels)
        raw = posterior.sample(generator=generator) if sample else posterior.mode()
        return self.normalize(raw.float()) if normalized else raw.float()

    def decode(self, latent: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Normalised latent (B, C, T_lat, h, w) -> frames (B, T, 3, h*s, w*s) in [0, 1], float32."""
        self._check_latent(latent)
        frames = self.decode_raw(self.denormalize(latent.float()))
        expected = self.frame_count(latent.shape[2])
        if frames.shape[1] != expected:
            raise RuntimeError(
                f"{self.vae_class.__name__} decoded {frames.shape[1]} frames from {latent.shape[2]} latent frames, "
                f"expected {expected}"
            )
        return frames.clamp(0, 1) if clamp else frames

    def decode_raw(self, raw_latent: torch.Tensor) -> torch.Tensor:
        """Un-normalised latent (B, C, T_lat, h, w) -> frames (B, T, 3, H, W), (VAE output + 1) / 2, float32.

        Differentiable, not clamped, no shape checks (what a pipeline decodes its latent with).
        """
        raw = raw_latent.to(device=self.device, dtype=self.dtype)
        return (self._decode_raw(raw).float() + 1) / 2

    def _encode_raw(self, pixels: torch.Tensor):
        """(B, T, 3, H, W) in [-1, 1] -> the VAE's posterior (has .mode() and .sample(generator))."""
        return self.vae.encode(pixels.permute(0, 2, 1, 3, 4)).latent_dist

    def _decode_raw(self, raw_latent: torch.Tensor) -> torch.Tensor:
        """Un-normalised latent (B, C, T_lat, h, w) -> (B, T, 3, H, W) in about [-1, 1]."""
        return self.vae.decode(raw_latent).sample.permute(0, 2, 1, 3, 4)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(channels={self.latent_channels}, spatial={self.spatial_factor}, "
            f"temporal={self.temporal_factor})"
        )


class _ScaledLatents:
    """Mixin: the video model sees ``z * scaling_factor``."""

    def normalize(self, raw_latent: torch.Tensor) -> torch.Tensor:
        return raw_latent * self.vae.config.scaling_factor

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.vae.config.scaling_factor


class WanVAEAdapter(VideoVAEAdapter):
    """Wan 2.1 / 2.2 VAE: per-channel ``(z - latents_mean) / latents_std``."""

    vae_class = AutoencoderKLWan

    @property
    def spatial_factor(self) -> int:
        # one 2x downsampling per stage after the first, times the optional pixel patchify (Wan 2.2)
        config = self.vae.config
        return 2 ** (len(config.dim_mult) - 1) * (config.patch_size or 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(bool(flag) for flag in self.vae.config.temperal_downsample)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim

    def _statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.latent_channels, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.vae.config.latents_std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def normalize(self, raw_latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._statistics(raw_latent)
        return (raw_latent - mean) / std

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._statistics(latent)
        return latent * std + mean


class CogVideoXVAEAdapter(_ScaledLatents, VideoVAEAdapter):
    """CogVideoX VAE. Its decoder turns an *odd* T_lat into (T_lat - 1)*4 + 1 frames but an even one into
    4*T_lat frames (diffusers decodes latent frames in pairs), so :meth:`decode` accepts odd T_lat only
    (T = 8k + 1, e.g. CogVideoX's own 49 frames -> 13 latent frames)."""

    vae_class = AutoencoderKLCogVideoX

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    def decode(self, latent: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        self._check_latent(latent)
        if latent.shape[2] > 1 and latent.shape[2] % 2 == 0:
            raise ValueError(
                f"CogVideoX's decoder needs an odd number of latent frames (T = 8k+1 frames), got T_lat={latent.shape[2]}"
            )
        return super().decode(latent, clamp)


class HunyuanVideoVAEAdapter(_ScaledLatents, VideoVAEAdapter):
    """HunyuanVideo VAE: ``z * scaling_factor`` (0.476986 for the released model)."""

    vae_class = AutoencoderKLHunyuanVideo

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.config.spatial_compression_ratio)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels


class SVDVAEAdapter(_ScaledLatents, VideoVAEAdapter):
    """Stable Video Diffusion VAE: an image encoder applied per frame (no temporal compression) and a
    temporal decoder that sees all frames of a clip together."""

    vae_class = AutoencoderKLTemporalDecoder

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def temporal_factor(self) -> int:
        return 1

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    def decode_raw(self, raw_latent: torch.Tensor) -> torch.Tensor:
        """Un-normalised latent (B, C, T_lat, h, w) -> frames (B, T, 3, H, W), (VAE output + 1) / 2, float32.

        Differentiable, not clamped, no shape checks (what a pipeline decodes its latent with).
        """
        raw = raw_latent.to(device=self.device, dtype=self.dtype)
        return (self._decode_raw(raw).float() + 1) / 2

    def _encode_raw(self, pixels: torch.Tensor):
        batch, frames = pixels.shape[:2]
        posterior = self.vae.encode(pixels.flatten(0, 1)).latent_dist
        return _PerFramePosterior(posterior, batch, frames)

    def _decode_raw(self, raw_latent: torch.Tensor) -> torch.Tensor:
        batch, _, frames = raw_latent.shape[:3]
        per_frame = raw_latent.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*T, C, h, w), frames of a clip together
        decoded = self.vae.decode(per_frame, num_frames=frames).sample
        return decoded.unflatten(0, (batch, frames))


class _PerFramePosterior:
    """An image posterior over B*T frames, seen as a (B, C, T, h, w) video posterior."""

    def __init__(self, posterior, batch: int, frames: int):
        self.posterior, self.batch, self.frames = posterior, batch, frames

    def _as_video(self, latent: torch.Tensor) -> torch.Tensor:
        return latent.unflatten(0, (self.batch, self.frames)).permute(0, 2, 1, 3, 4)

    def mode(self) -> torch.Tensor:
        return self._as_video(self.posterior.mode())

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._as_video(self.posterior.sample(generator=generator))


ADAPTERS: dict[str, type[VideoVAEAdapter]] = {
    adapter.vae_class.__name__: adapter
    for adapter in (WanVAEAdapter, CogVideoXVAEAdapter, HunyuanVideoVAEAdapter, SVDVAEAdapter)
}


def adapt_video_vae(vae: torch.nn.Module) -> VideoVAEAdapter:
    """Wrap an already-built diffusers VAE in its adapter."""
    for adapter in ADAPTERS.values():
        if isinstance(vae, adapter.vae_class):
            return adapter(vae)
    raise TypeError(f"no video-VAE adapter for {type(vae).__name__}; supported: {', '.join(ADAPTERS)}")


def load_video_vae(
    name_or_path: str | Path,
    subfolder: str | None = None,
    torch_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **from_pretrained_kwargs,
) -> VideoVAEAdapter:
    """Load a diffusers video VAE and wrap it in the adapter named by its config's ``_class_name``.

    The body of ``VideoVAEAdapter.from_pretrained`` (the save/load contract; ``save_pretrained`` writes
    what this reads).

    ``name_or_path`` is a VAE folder (config.json + weights) or a diffusers pipeline folder (then the
    ``vae`` subfolder is used unless ``subfolder`` says otherwise), or a hub id (with ``subfolder``).
    """
    path = Path(name_or_path)
    if subfolder is None and (path / "model_index.json").is_file():
        subfolder = "vae"
    config_dir = path / subfolder if subfolder else path
    if (config_dir / "config.json").is_file():
        class_name = json.loads((config_dir / "config.json").read_text(encoding="utf-8")).get("_class_name")
    elif path.exists():
        raise FileNotFoundError(f"no config.json in {config_dir}: not a diffusers VAE folder")
    else:  # not local: let diffusers resolve it (hub id, cache)
        class_name = AutoencoderKLWan.load_config(str(name_or_path), subfolder=subfolder).get("_class_name")
    if class_name not in ADAPTERS:
        raise ValueError(
            f"{config_dir} holds a '{class_name}', which is not a supported video VAE; supported: {', '.join(ADAPTERS)}"
        )
    adapter = ADAPTERS[class_name]
    kwargs = dict(from_pretrained_kwargs)
    if subfolder:
        kwargs["subfolder"] = subfolder
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    vae = adapter.vae_class.from_pretrained(str(name_or_path), **kwargs)
    if device is not None:
        vae = vae.to(device)
    return adapter(vae.eval())
