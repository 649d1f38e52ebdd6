"""Full-size dry runs on the ``meta`` device: the real model configurations through the real pipeline.

``write_dry_run_bundle`` writes a model bundle whose parts carry the *published* configurations but no
weights; ``meta_weight_loading()`` replaces only the reading of weights (every ``from_pretrained`` and
checkpoint reader builds its model from the config on the meta device instead); then the ordinary
``Vist3aPipeline.from_pretrained(bundle, runtime=RuntimeOptions(device="meta", ...))`` and ``generate``
run every stage at full size, with shapes and dtypes only: no memory is allocated and nothing is
computed, so a run costs seconds. A shape or dtype fault anywhere at real size fails the run;
``DtypeCheck`` adds the dtype rules the meta kernels do not enforce (mixed input/weight dtypes outside
an autocast region, as CUDA would refuse them).

Configurations (public, cited):

* text encoder: UMT5-XXL encoder, ``google/umt5-xxl`` ``config.json`` (the Wan pipeline's
  ``text_encoder``): d_model 4096, d_ff 10240 (gated GELU), 24 layers, 64 heads of 64, 32 relative
  buckets (max distance 128), vocabulary 256384;
* transformer: Wan 2.1 T2V, ``Wan-Video/Wan2.1`` ``wan/configs/wan_t2v_1_3B.py`` / ``wan_t2v_14B.py``
  (= the ``transformer/config.json`` of ``Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers``): patch (1, 2, 2),
  1.3B: dim 1536 = 12 heads x 128, FFN 8960, 30 layers; 14B: dim 5120 = 40 heads x 128, FFN 13824,
  40 layers; text dim 4096, frequency dim 256, QK RMS norm, cross-attention norm, eps 1e-6;
* VAE: the Wan 2.1 VAE, ``vae/config.json`` of the same repositories (= diffusers' ``AutoencoderKLWan``
  defaults): base dim 96, multipliers [1, 2, 4, 4], 2 residual blocks, z 16, temporal downsampling
  [False, True, True], with its latents mean/std;
* 3D decoder: the full AnySplat (``AnySplatConfig()``, NOTES.md: VGGT-1B aggregator + DPT heads, SH
  degree 4) cut after DINOv2 block 1 behind the released stitching conv (``conv3d_k5x3x3_o1024_s1x2x2_p2x1x1``),
  either as our ``stitched`` checkpoint folder or as the released ``anysplat_stitched.pth`` on
  ``lhjiang/anysplat`` (LoRA rank 64 on every Linear/Conv2d, merged).

The tokenizer is the tiny one of ``engine.testing.tiny`` (the UMT5 tokenizer is data, not shape: on meta only
the padded length, 512, matters). The meta run skips voxel merging (its output size depends on values),
so the Gaussian count is the upper bound, one per pixel.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Optional
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from engine.pipeline.settings import ModelBundle

UMT5_XXL = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.0,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
_WAN_COMMON = {
    "patch_size": [1, 2, 2],
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}
WAN_TRANSFORMERS = {
    "1.3B": {**_WAN_COMMON, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
    "14B": {**_WAN_COMMON, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40},
}
WAN_VAE = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571,
        -0.7089,
        -0.9113,
        0.1075,
        -0.1745,
        0.9653,
        -0.1517,
        1.5508,
        0.4134,
        -0.0715,
        0.5517,
        -0.3632,
        -0.1922,
        -0.9497,
        0.2503,
        -0.2921,
    ],  # fmt: skip
    "latents_std": [
        2.8184,
        1.4541,
        2.3275,
        2.6558,
        1.2196,
        1.7708,
        2.6052,
        2.0743,
        3.2687,
        2.1526,
        2.8652,
        1.5579,
        1.6382,
        1.1253,
        2.8251,
        1.916,
    ],  # fmt: skip
}
# The Wan pipeline's scheduler_config.json (UniPC; the pipeline sets its own flow shift per run).
WAN_SCHEDULER = {
    "_class_name": "UniPCMultistepScheduler",
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "solver_order": 2,
    "solver_type": "bh2",
    "lower_order_final": True,
    "final_sigmas_type": "zero",
    "timestep_spacing": "linspace",
}
DECODER_KINDS = ("anysplat-stitched", "stitched")
_PLACEHOLDER = "no weights: a meta-device dry-run bundle (engine.testing.dry_run)\n"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def write_dry_run_bundle(root: str | Path, kind: str = "anysplat-stitched", transformer: str = "1.3B") -> Path:
    """A bundle folder with the full-size configurations and placeholder weight files; returns it.

    ``kind``: ``anysplat-stitched`` (the released checkpoint on ``lhjiang/anysplat``) or ``stitched``
    (our checkpoint folder); ``transformer``: ``1.3B`` or ``14B``. Load it inside ``meta_weight_loading()``.
    """
    from engine.models.config import AnySplatConfig
    from engine.stitching.decoder import RELEASED_CUT_STAGE, RELEASED_SPEC
    from engine.stitching.decoder import WAN_VAE as WAN_VAE_REF
    from engine.testing.tiny import build_tokenizer

    if kind not in DECODER_KINDS or transformer not in WAN_TRANSFORMERS:
        raise ValueError(f"kind must be one of {DECODER_KINDS} and transformer one of {sorted(WAN_TRANSFORMERS)}")
    root = Path(root)
    wan = root / "wan"
    _write_json(
        wan / "model_index.json",
        {
            "_class_name": "WanPipeline",
            "tokenizer": ["transformers", "T5TokenizerFast"],
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "vae": ["diffusers", "AutoencoderKLWan"],
            "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        },
    )
    build_tokenizer().save_pretrained(str(wan / "tokenizer"))
    _write_json(wan / "text_encoder" / "config.json", {"architectures": ["UMT5EncoderModel"], **UMT5_XXL})
    _write_json(
        wan / "transformer" / "config.json", {"_class_name": "WanTransformer3DModel", **WAN_TRANSFORMERS[transformer]}
    )
    _write_json(wan / "vae" / "config.json", {"_class_name": "AutoencoderKLWan", **WAN_VAE})
    _write_json(wan / "scheduler" / "scheduler_config.json", WAN_SCHEDULER)
    extra: dict = {"note": "meta-device dry run: configurations only"}
    if kind == "stitched":
        decoder = root / "decoder"
        _write_json(
            decoder / "stitched_config.json",
            {
                "format": "vist3a-stitched-decoder",
                "format_version": 1,
                "model": {"model_type": "anysplat", "config": AnySplatConfig().to_dict()},
                "cut_stage": RELEASED_CUT_STAGE,
                "stitching_spec": RELEASED_SPEC,
                "vae": WAN_VAE_REF.to_dict(),
                "lora": None,
                "dtype": "float32",
            },
        )
        (decoder / "model.safetensors").write_text(_PLACEHOLDER)
        checkpoint = "decoder"
    else:
        base = root / "anysplat"
        _write_json(base / "config.json", {"model_type": "anysplat", **AnySplatConfig().to_dict()})
        (base / "model.safetensors").write_text(_PLACEHOLDER)
        (root / "anysplat_stitched.pth").write_text(_PLACEHOLDER)
        checkpoint = "anysplat_stitched.pth"
        extra["anysplat"] = "anysplat"
    ModelBundle(
        root=root,
        name=f"dry-run-{transformer}-{kind}",
        wan="wan",
        decoder_kind=kind,
        decoder_checkpoint=checkpoint,
        extra=extra,
    ).save()
    return root


# ----------------------------------------------------------------------------- patched weight reading


def _meta_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in module.state_dict().items()}


def meta_released_checkpoint(decoder) -> dict:
    """The released ``anysplat_stitched.pth`` layout for ``decoder`` as meta tensors (shapes and dtypes)."""
    from torch import nn

    from engine.stitching.released import RELEASED_RANK, lora_target_names, ours_to_released

    def empty(shape, dtype=torch.float32):
        return torch.empty(shape, dtype=dtype, device="meta")

    lora = {}
    for name in lora_target_names(decoder):
        module = decoder.get_submodule(name)
        released = ours_to_released(name, decoder.removed_dino_blocks)
        if isinstance(module, nn.Linear):
            a, b = (RELEASED_RANK, module.in_features), (module.out_features, RELEASED_RANK)
        else:
            k = module.kernel_size[0]
            a, b = (RELEASED_RANK * k, module.in_channels * k), (module.out_channels * k, RELEASED_RANK * k)
        lora[f"{released}.lora_A"] = empty(a)
        if module.bias is not None:
            lora[f"{released}.bias"] = empty(module.bias.shape, torch.bfloat16 if ".aggregator." in name else None)
        lora[f"{released}.lora_B"] = empty(b)
    dino = decoder.network.aggregator.patch_embed
    layer = decoder.stitching_layer
    return {
        "lora": lora,
        "stitching_layer": {"weight": empty(layer.weight.shape), "bias": empty(layer.bias.shape)},
        **{k: empty(getattr(dino, k).shape, torch.bfloat16) for k in ("cls_token", "register_tokens", "mask_token")},
    }


def _keep_in_float32(model: torch.nn.Module) -> None:
    """As ``from_pretrained`` with a dtype: the model's ``_keep_in_fp32_modules`` go back to float32."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if any(part in keep for part in name.split(".")):
            module.float()


def _meta_text_encoder(cls, source, subfolder=None, dtype=None, **kwargs):
    """``UMT5EncoderModel.from_pretrained`` on the meta device (config read from the bundle)."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config.from_pretrained(str(Path(source) / (subfolder or "")))
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    model = model.to(dtype or torch.float32)
    if dtype == torch.float16:  # as transformers' from_pretrained: T5 feed-forward outputs stay float32
        _keep_in_float32(model)
    return model


def _meta_diffusers_loader(model_cls):
    """``model_cls.from_pretrained`` (a diffusers model) on the meta device."""

    def load(cls, source, subfolder=None, torch_dtype=None, **kwargs):
        config = model_cls.load_config(str(source), subfolder=subfolder)
        with torch.device("meta"):
            model = model_cls.from_config(config)
        model = model.to(torch_dtype or torch.float32)
        _keep_in_float32(model)  # as diffusers' from_pretrained(torch_dtype=...)
        return model

    return load


def _meta_decoder_readers():
    """(load_file, read_state_dict, torch_load) stand-ins giving meta state dicts of the 3D decoders."""
    from engine.models.config import AnySplatConfig, config_from_dict
    from engine.models.loading import build_model
    from engine.stitching.decoder import RELEASED_CUT_STAGE, RELEASED_SPEC, WAN_VAE, StitchedDecoder

    real_load_file = __import__("safetensors.torch", fromlist=["load_file"]).load_file
    real_torch_load = torch.load

    def load_file(path, device="cpu"):
        folder = Path(path).parent
        if (folder / "stitched_config.json").is_file():
            data = json.loads((folder / "stitched_config.json").read_text())
            decoder = StitchedDecoder.from_config(
                config_from_dict(data["model"]["config"]),
                data["cut_stage"],
                data["stitching_spec"],
                WAN_VAE,
                "meta",
            )
            return _meta_state(decoder)
        return real_load_file(path, device=device)

    def read_state_dict(path):
        folder = Path(path).parent
        data = json.loads((folder / "config.json").read_text())
        return _meta_state(build_model(config_from_dict(data), device="meta"))

    def load_checkpoint(path, *args, **kwargs):
        if Path(str(path)).name.endswith("anysplat_stitched.pth"):
            decoder = StitchedDecoder.from_config(AnySplatConfig(), RELEASED_CUT_STAGE, RELEASED_SPEC, WAN_VAE, "meta")
            return meta_released_checkpoint(decoder)
        return real_torch_load(path, *args, **kwargs)

    return load_file, read_state_dict, load_checkpoint


@contextlib.contextmanager
def meta_weight_loading() -> Iterator[None]:
    """Within the block, reading weights builds the models from their configs on the meta device.

    Patched (and nothing else): the ``from_pretrained`` of ``UMT5EncoderModel``, ``WanTransformer3DModel``
    and ``AutoencoderKLWan``; ``safetensors.torch.load_file`` for stitched-decoder folders;
    ``engine.models.checkpoint.read_state_dict`` for AnySplat weights; ``torch.load`` for the released
    stitched checkpoint. Every config is still read from the bundle's files.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    load_file, read_state_dict, load_checkpoint = _meta_decoder_readers()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(UMT5EncoderModel, "from_pretrained", classmethod(_meta_text_encoder)))
        for model_cls in (WanTransformer3DModel, AutoencoderKLWan):
            stack.enter_context(
                mock.patch.object(model_cls, "from_pretrained", classmethod(_meta_diffusers_loader(model_cls)))
            )
        stack.enter_context(mock.patch("safetensors.torch.load_file", load_file))
        stack.enter_context(mock.patch("engine.models.checkpoint.read_state_dict", read_state_dict))
        stack.enter_context(mock.patch("torch.load", load_checkpoint))
        yield


# ----------------------------------------------------------------------------- dtype rules


class DtypeCheck(TorchFunctionMode):
    """Fails matmul-like calls whose floating inputs and weights disagree in dtype outside autocast.

    Meta kernels accept such calls; CUDA refuses them (``expected both ... to have the same dtype``)
    unless an autocast region casts them, which a meta run records (``meta_autocast_dtype``). Inside an
    emulated autocast region the calls are allowed, as autocast would cast them.
    """

    CHECKED = {
        torch.nn.functional.linear: "linear",
        torch.nn.functional.conv1d: "conv1d",
        torch.nn.functional.conv2d: "conv2d",
        torch.nn.functional.conv3d: "conv3d",
        torch.nn.functional.conv_transpose2d: "conv_transpose2d",
        torch.matmul: "matmul",
        torch.bmm: "bmm",
        torch.Tensor.matmul: "matmul",
        torch.Tensor.__matmul__: "matmul",
    }

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = self.CHECKED.get(func)
        if name is not None:
            from engine.models.reconstruction import meta_autocast_dtype

            self.calls += 1
            tensors = [a for a in (*args[:2], kwargs.get("weight")) if isinstance(a, torch.Tensor)]
            dtypes = {t.dtype for t in tensors if t.is_floating_point()}
            if len(dtypes) > 1 and meta_autocast_dtype() is None:
                shapes = [tuple(t.shape) for t in tensors]
                raise TypeError(
                    f"{name} with mixed dtypes {sorted(map(str, dtypes))} outside autocast: shapes {shapes}"
                )
        return func(*args, **kwargs)


CARD_12GB = (int(11.6 * 1024**3), 12 * 1024**3)  # (free, total) bytes of a 12 GB card with a desktop on it
CARD_24GB = (int(23.2 * 1024**3), 24 * 1024**3)


def dry_run(
    bundle: str | Path,
    settings=None,
    runtime=None,
    check_dtypes: bool = True,
    progress: Optional[callable] = None,
    device_memory: tuple[int, Optional[int]] = CARD_12GB,
):
    """Loads ``bundle`` inside ``meta_weight_loading`` on the meta device and generates; returns
    (pipeline, result). Defaults: the released recipe's 13 frames at 512², 1 step, the CUDA default
    dtype and the automatic memory policy for a 12 GB card (``device_memory``).
    """
    from engine.pipeline.settings import GenerationSettings, RuntimeOptions
    from engine.pipeline.vist3a import Vist3aPipeline

    settings = settings or GenerationSettings(prompt="a red chair in a sunny garden", num_steps=1, seed=0)
    runtime = runtime or RuntimeOptions(device="meta")
    if runtime.device != "meta":
        raise ValueError(f"a dry run needs runtime.device 'meta', got {runtime.device!r}")
    with meta_weight_loading():
        pipeline = Vist3aPipeline.from_pretrained(bundle, runtime=runtime, device_memory=device_memory)
    mode = DtypeCheck() if check_dtypes else contextlib.nullcontext()
    with mode:
        result = pipeline.generate(settings, progress=progress)
    return pipeline, result


# ----------------------------------------------------------------------------- activation memory on meta


class MetaMemoryTracker(TorchDispatchMode):
    """Live and peak bytes of the tensors created inside the block (meta or not), by op outputs.

    Every non-view output tensor counts with its storage size from its creation until it is garbage
    collected; views and in-place results add nothing. Parameters created before the block are not
    counted (add the resident model bytes). Use it with ``EfficientAttention`` so that attention counts
    what the memory-efficient CUDA kernels allocate, not the math path's score matrices.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._alive: set[int] = set()

    def reset_peak(self) -> None:
        self.peak = self.live

    def _release(self, key: int, size: int) -> None:
        if key in self._alive:
            self._alive.discard(key)
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor._is_view() or id(tensor) in self._alive:
                continue
            size = tensor.untyped_storage().nbytes()
            key = id(tensor)
            self._alive.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(tensor, self._release, key, size)
        return out


class EfficientAttention(TorchFunctionMode):
    """Meta attention as the CUDA memory-efficient kernels allocate it: the output and the row
    log-sum-exp only (on meta, SDPA otherwise decomposes into the math path with its score matrices)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and args and args[0].is_meta:
            query, value = args[0], args[2] if len(args) > 2 else kwargs["value"]
            torch.empty(query.shape[:-1], dtype=torch.float32, device="meta")  # log-sum-exp
            return torch.empty((*query.shape[:-1], value.shape[-1]), dtype=query.dtype, device="meta")
        return func(*args, **kwargs)


def stage_memory(pipeline, settings) -> list[dict]:
    """Per stage of one full-size meta generation: resident model bytes and the activation peak.

    Stages: text encoder (prompt + negative), denoising (transformer loop), video decode (VAE),
    scene decode (stitched decoder + post-processing). Resident = the models on the GPU during the
    stage under the pipeline's memory policy (all of them, or only the stage's own with CPU offload);
    the cached text embeddings are part of the activations. Returns dicts with bytes.
    """
    policy = pipeline.memory_policy
    sizes = dict(policy.model_bytes)
    settings = settings.resolved(pipeline.default_conditioning)
    own = {"encode_prompt": "text_encoder", "denoise": "transformer", "decode_video": "vae", "decode_scene": "decoder"}
    rows = []
    tracker = MetaMemoryTracker()
    with EfficientAttention(), tracker:
        tracker.reset_peak()
        pipeline.encode_text(settings.full_prompt, use_cache=True)
        pipeline.encode_text(settings.negative_text, use_cache=True)
        rows.append(("encode_prompt", tracker.peak))
        pipeline._text_cache.clear()
        tracker.reset_peak()
        latent = pipeline.sample_latent(settings, 0)
        rows.append(("denoise", tracker.peak))
        tracker.reset_peak()
        vae_latent = pipeline.denormalize_latent(latent)
        frames = pipeline.decode_frames(vae_latent)
        rows.append(("decode_video", tracker.peak))
        tracker.reset_peak()
        pipeline.decode_scene(vae_latent, frames, settings.voxel_merge)
        rows.append(("decode_scene", tracker.peak))
    result = []
    for stage, activation in rows:
        resident = sizes[own[stage]] if policy.cpu_offload else sum(sizes.values())
        result.append(
            {
                "stage": stage,
                "model": own[stage],
                "params": sum(p.numel() for p in _module_of(pipeline, own[stage]).parameters()),
                "model_bytes": sizes[own[stage]],
                "resident_bytes": resident,
                "activation_peak_bytes": activation,
                "total_peak_bytes": resident + activation,
            }
        )
    return result


def _module_of(pipeline, name: str) -> torch.nn.Module:
    return getattr(pipeline, name)
