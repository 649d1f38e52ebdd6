"""Tiny, randomly initialised models built from the *real* model classes, for tests and benchmarks.

Everything tiny lives here: the bundle of the pipeline (below), the VGGT / AnySplat configurations
(``tiny_vggt_config``, ``tiny_anysplat_config``), the stitch-finetuning set-up (``tiny_trainer``), tiny video
VAEs (``tiny_wan_vae``, ``tiny_cogvideox_vae``, ``tiny_hunyuan_vae``, ``tiny_svd_vae``) and a tiny CLIP scorer
with its tokenizer (``build_tiny_clip_scorer``).

``build_tiny_bundle(folder)`` writes a complete bundle that the pipeline, the worker and the add-on
load exactly like a real one: a diffusers ``WanPipeline`` folder (UMT5 text encoder with a small
tokenizer built here, Wan transformer, Wan VAE, UniPC scheduler), optionally a PEFT LoRA adapter for the
transformer, and a stitched decoder checkpoint (a tiny AnySplat cut after DINOv2 block 1, fed by a
Wan-shaped Conv3D stitching layer, as the released VIST3A stitch). Every size is tiny, so a whole
generation runs in seconds on a CPU.

The weights are random: the scenes it produces are noise. It exists so that the tests exercise the full
chain (text -> latent -> stitched decoder -> files -> Blender) on any machine; no user path falls back to
it (the demo uses a trained model or stops with a message). The one deliberate choice in the weights: the camera
head's last layer is set so that the predicted cameras are valid (unit quaternion, 60 degree field of
view, small translations), since a random camera head predicts degenerate fields of view.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import torch

from engine.alignment.scorers import CLIPScorer
from engine.models.config import (
    AggregatorConfig,
    AnySplatConfig,
    CameraHeadConfig,
    DPTHeadConfig,
    GaussianHeadConfig,
    PatchEmbedConfig,
    VGGTConfig,
)
from engine.pipeline.settings import ModelBundle

TEXT_DIM = 32
TINY_DECODER_KIND = "stitched"
TINY_CUT_STAGE = "patch_embed.blocks.1"
TINY_SPEC_TEMPLATE = "conv3d_k5x3x3_o{dim}_s1x2x2_p2x1x1"
# the stitching layer for embed_dim 32; on the tiny Wan VAE of the tests (spatial factor 4) 16 px frames give a
# 4x4 latent, stride 2 -> 2x2 tokens -> 28 px model input
TINY_SPEC = TINY_SPEC_TEMPLATE.format(dim=32)
WORDS = (
    "a the of on in with and red blue green yellow white black grey cat dog house tree car chair table "
    "room garden street scene camera orbit around slowly blurry low quality distorted"
).split()


def build_tokenizer(closed_vocabulary: bool = False):
    """A UMT5-style tokenizer (unigram over a few words plus single letters) as ``T5TokenizerFast``.

    ``closed_vocabulary``: the words only, no single letters, so a word outside ``WORDS`` becomes ``<unk>``
    (as with the default model's tokenizer: ``engine.generator.text.unknown_words`` reports it).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + word, -1.0) for word in WORDS]
    if not closed_vocabulary:
        vocab += [(char, -5.0) for char in "abcdefghijklmnopqrstuvwxyz0123456789,.:;'-"] + [("\u2581", -6.0)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def build_wan_pipeline(seed: int = 0, closed_vocabulary: bool = False):
    """A diffusers ``WanPipeline`` of tiny real components (16 latent channels, 8x spatial, 4x temporal);
    ``closed_vocabulary`` as in :func:`build_tokenizer`."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer(closed_vocabulary)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    # Not configured for flow matching on purpose: the pipeline sets its own sampler up.
    scheduler = UniPCMultistepScheduler(num_train_timesteps=1000, flow_shift=3.0)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler
    )


def build_lora_adapter(transformer, out_dir: Path, seed: int = 1, rank: int = 4) -> Path:
    """A PEFT LoRA adapter on the attention projections (VIST3A's targets) with non-zero weights."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    peft_model = get_peft_model(copy.deepcopy(transformer), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # zero at initialisation; make the adapter change something
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def build_stitched_decoder(seed: int = 0, embed_dim: int = 32, visible: bool = False, model_type: str = "anysplat"):
    """A tiny AnySplat (or, with ``model_type`` "vggt", VGGT) stitched after DINOv2 block 1 to a
    Wan-shaped latent (16 channels, 8x, 4x).

    ``visible``: the network of :func:`build_visible_anysplat` (textured, opaque renders) instead of a
    plain random one (nearly transparent Gaussians); AnySplat only.
    """
    from engine.models.anysplat import AnySplat
    from engine.models.vggt import VGGT
    from engine.stitching.decoder import StitchedDecoder, VAEReference

    if model_type not in ("anysplat", "vggt") or (visible and model_type != "anysplat"):
        raise ValueError(f"no tiny {'visible ' if visible else ''}{model_type} decoder")
    if visible:
        network = build_visible_anysplat(seed, embed_dim=embed_dim)
    elif model_type == "vggt":
        torch.manual_seed(seed)
        network = VGGT(tiny_vggt_config(embed_dim=embed_dim))
        _make_cameras_valid(network.camera_head, seed)
    else:
        torch.manual_seed(seed)
        network = AnySplat(tiny_anysplat_config(embed_dim=embed_dim))
        _make_cameras_valid(network.encoder.camera_head, seed)
    vae = VAEReference(
        class_name="AutoencoderKLWan", latent_channels=16, spatial_factor=8, temporal_factor=4, name_or_path="wan"
    )
    spec = TINY_SPEC_TEMPLATE.format(dim=embed_dim)
    return StitchedDecoder.from_network(network, TINY_CUT_STAGE, spec, vae).eval()


def _make_cameras_valid(camera_head: torch.nn.Module, seed: int) -> None:
    """Sets the pose branch's last layer so the accumulated pose encoding is a valid camera.

    The pose encoding is [translation (3), quaternion xyzw (4), fov_h, fov_w], summed over the refinement
    iterations; a small random weight keeps the cameras different per view.
    """
    last = camera_head.pose_branch.fc2
    iterations = camera_head.config.num_iterations
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * 1e-3)
        target = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, math.radians(60), math.radians(60)])
        last.bias.copy_(target / iterations)


def build_tiny_bundle(
    root: str | Path,
    with_lora: bool = False,
    seed: int = 0,
    visible: bool = False,
    defaults: Optional[dict] = None,
    closed_vocabulary: bool = False,
    with_points_decoder: bool = False,
) -> Path:
    """Writes a complete tiny bundle into ``root`` (created; must not hold a bundle yet); returns it.

    ``visible``: use the visible tiny AnySplat as the decoder's network (see :func:`build_stitched_decoder`).
    ``defaults``: the manifest's generation defaults (``ModelBundle.defaults``), e.g. small sizes.
    ``closed_vocabulary``: a tokenizer without single letters, so unknown words are reported.
    ``with_points_decoder``: add a tiny stitched VGGT as the bundle's points decoder (``points_decoder/``).
    """
    root = Path(root)
    pipe = build_wan_pipeline(seed, closed_vocabulary)
    pipe.save_pretrained(str(root / "wan"))
    lora = None
    if with_lora:
        build_lora_adapter(pipe.transformer, root / "lora", seed=seed + 1)
        lora = "lora"
    build_stitched_decoder(seed, visible=visible).save_pretrained(root / "decoder")
    if with_points_decoder:
        build_stitched_decoder(seed + 2, model_type="vggt").save_pretrained(root / "points_decoder")
    bundle = ModelBundle(
        root=root,
        name="tiny-random-lora" if with_lora else "tiny-random",
        wan="wan",
        decoder_kind=TINY_DECODER_KIND,
        decoder_checkpoint="decoder",
        lora=lora,
        extra={"note": "randomly initialised tiny model for tests; its scenes are noise"},
        defaults=defaults or {},
        points_decoder_kind=TINY_DECODER_KIND if with_points_decoder else None,
        points_decoder_checkpoint="points_decoder" if with_points_decoder else None,
    )
    bundle.save()
    return root


def build_visible_anysplat(seed: int = 0, embed_dim: int = 32, colour_gain: float = 20.0, **config_overrides):
    """A tiny random AnySplat whose output renders as a visible, textured scene (a finetuning teacher).

    A random tiny AnySplat predicts degenerate cameras and Gaussians that are nearly transparent, a few
    micrometres wide and uniformly grey, so its renders are blank and comparisons of renders say nothing.
    Here, on top of ``tiny_anysplat_config(embed_dim, **config_overrides)`` with random weights:

    * the camera head predicts valid cameras (as in :func:`build_stitched_decoder`);
    * the Gaussian head's last conv has opacity bias 1 (opacity ~0.73) and scale bias 30 (scales
      0.001·softplus(30) = 0.03 network units, a pixel or two at the ~unit depths and 60° field of view
      predicted here, for images of a few dozen pixels);
    * the weights of the three SH DC channels are multiplied by ``colour_gain``, so the colours vary
      over the image (render std ~0.1-0.15 instead of ~0.02).
    """
    from engine.models.anysplat import AnySplat
    from engine.models.gaussian_adapter import num_sh_coeffs

    torch.manual_seed(seed)
    network = AnySplat(tiny_anysplat_config(embed_dim=embed_dim, **config_overrides)).eval()
    encoder = network.encoder
    _make_cameras_valid(encoder.camera_head, seed)
    head = encoder.gaussian_param_head
    last = head.scratch.output_conv2[2]
    coeffs = num_sh_coeffs(head.sh_degree)
    with torch.no_grad():
        last.bias[0] = 1.0  # opacity logit
        last.bias[1:4] = 30.0  # scale pre-activation
        for channel in range(3):  # SH coefficients are RGB-major: DC of channel c at 8 + c·coeffs
            last.weight[8 + channel * coeffs] *= colour_gain
    return network


# ----------------------------------------------------------------------------- the released layout, tiny

RELEASED_WAN_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
RELEASED_ANYSPLAT_ID = "lhjiang/anysplat"
RELEASED_VIST3A_ID = "HJGO/VIST3A"
RELEASED_CHECKPOINT = "anysplat_stitched.pth"
RELEASED_LORA_DIR = "vist3a_1.3b_lora_ema"


def released_checkpoint_for(decoder, seed: int = 3, scale: float = 0.02) -> dict:
    """A checkpoint in the released ``anysplat_stitched.pth`` layout (NOTES.md §8) for a stitched AnySplat.

    LoRA (rank 64, alpha 32, loralib names, kept DINOv2 blocks re-indexed from 0) with small random
    factors on every Linear/Conv2d, the layers' current biases, the tokens (bf16, as released) and the
    stitching conv. Merged onto the decoder's original network it gives a slightly changed decoder.
    """
    from torch import nn

    from engine.stitching.released import RELEASED_RANK, lora_target_names, ours_to_released

    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for name in lora_target_names(decoder):
        module = decoder.get_submodule(name)
        released = ours_to_released(name, decoder.removed_dino_blocks)
        if isinstance(module, nn.Linear):
            a_shape, b_shape = (RELEASED_RANK, module.in_features), (module.out_features, RELEASED_RANK)
        else:
            k = module.kernel_size[0]
            a_shape = (RELEASED_RANK * k, module.in_channels * k)
            b_shape = (module.out_channels * k, RELEASED_RANK * k)
        lora[f"{released}.lora_A"] = torch.randn(a_shape, generator=generator) * scale
        if module.bias is not None:
            bias = module.bias.detach().clone()
            lora[f"{released}.bias"] = bias.to(torch.bfloat16) if ".aggregator." in name else bias
        lora[f"{released}.lora_B"] = torch.randn(b_shape, generator=generator) * scale
    dino = decoder.network.aggregator.patch_embed
    layer = decoder.stitching_layer
    return {
        "lora": lora,
        "stitching_layer": {"weight": layer.weight.detach().clone(), "bias": layer.bias.detach().clone()},
        "mask_token": dino.mask_token.detach().to(torch.bfloat16),
        "cls_token": dino.cls_token.detach().to(torch.bfloat16),
        "register_tokens": dino.register_tokens.detach().to(torch.bfloat16),
    }


def _hub_snapshot(cache: Path, repo_id: str, revision: str) -> Path:
    """``<cache>/models--owner--name/snapshots/<revision>/`` with ``refs/main`` pointing at it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def build_tiny_released_layout(cache: str | Path, bundle: str | Path, seed: int = 0) -> Path:
    """Tiny stand-ins of the released downloads, laid out as the Hugging Face hub client writes them.

    * ``cache`` becomes a hub cache (``HF_HUB_CACHE``) holding ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (a
      diffusers WanPipeline folder) and ``lhjiang/anysplat`` (``config.json`` + ``model.safetensors``),
      so that their hub ids resolve offline (``HF_HUB_OFFLINE=1``);
    * ``bundle`` becomes what ``hf download HJGO/VIST3A --local-dir bundle`` gives (``anysplat_stitched.pth``,
      ``vist3a_1.3b_lora_ema/``) plus the ``vist3a.json`` manifest of the README, naming the two base
      models by hub id and the decoder kind ``anysplat-stitched``.

    Returns the bundle folder.
    """
    from engine.models.anysplat import AnySplat
    from engine.models.checkpoint import save_checkpoint
    from engine.stitching.decoder import RELEASED_CUT_STAGE, WAN_VAE, StitchedDecoder

    cache, bundle = Path(cache), Path(bundle)
    pipe = build_wan_pipeline(seed)
    pipe.save_pretrained(str(_hub_snapshot(cache, RELEASED_WAN_ID, "0" * 39 + "1")))

    torch.manual_seed(seed)
    network = AnySplat(tiny_anysplat_config(embed_dim=32)).eval()
    _make_cameras_valid(network.encoder.camera_head, seed)
    save_checkpoint(network, _hub_snapshot(cache, RELEASED_ANYSPLAT_ID, "0" * 39 + "2"))

    decoder = StitchedDecoder.from_network(copy.deepcopy(network), RELEASED_CUT_STAGE, TINY_SPEC, WAN_VAE)
    bundle.mkdir(parents=True, exist_ok=True)
    torch.save(released_checkpoint_for(decoder, seed + 3), bundle / RELEASED_CHECKPOINT)
    build_lora_adapter(pipe.transformer, bundle / RELEASED_LORA_DIR, seed=seed + 1)
    ModelBundle(
        root=bundle,
        name="vist3a-wan2.1-1.3b-anysplat",
        wan=RELEASED_WAN_ID,
        decoder_kind="anysplat-stitched",
        decoder_checkpoint=RELEASED_CHECKPOINT,
        lora=RELEASED_LORA_DIR,
        extra={"anysplat": RELEASED_ANYSPLAT_ID},
    ).save()
    return bundle


# ------------------------------------------------------------------------------------------ backbones


def _tiny_backbone(embed_dim: int, depth: int, heads: int) -> tuple[AggregatorConfig, CameraHeadConfig]:
    patch_embed = PatchEmbedConfig(
        img_size=56, patch_size=14, embed_dim=embed_dim, depth=3, num_heads=heads, num_register_tokens=2
    )
    aggregator = AggregatorConfig(
        embed_dim=embed_dim, depth=depth, num_heads=heads, num_register_tokens=2, patch_embed=patch_embed
    )
    camera = CameraHeadConfig(dim_in=2 * embed_dim, trunk_depth=1, num_heads=heads, num_iterations=2)
    return aggregator, camera


def tiny_vggt_config(embed_dim: int = 32, depth: int = 4, heads: int = 2) -> VGGTConfig:
    """A VGGT of a few hundred thousand parameters for tests (same code as the full model)."""
    aggregator, camera = _tiny_backbone(embed_dim, depth, heads)
    taps = (0, 1, 2, depth - 1)
    return VGGTConfig(
        aggregator=aggregator,
        camera_head=camera,
        depth_head=DPTHeadConfig(
            dim_in=2 * embed_dim, features=16, out_channels=(8, 16, 24, 24), intermediate_layer_idx=taps
        ),
        point_head=DPTHeadConfig(
            dim_in=2 * embed_dim,
            output_dim=4,
            activation="inv_log",
            features=16,
            out_channels=(8, 16, 16, 32),
            intermediate_layer_idx=taps,
        ),
    )


def tiny_anysplat_config(embed_dim: int = 32, depth: int = 4, heads: int = 2, sh_degree: int = 4) -> AnySplatConfig:
    """An AnySplat of a few hundred thousand parameters for tests (same code as the full model)."""
    aggregator, camera = _tiny_backbone(embed_dim, depth, heads)
    taps = (0, 1, 2, depth - 1)
    return AnySplatConfig(
        aggregator=aggregator,
        camera_head=camera,
        depth_head=DPTHeadConfig(
            dim_in=2 * embed_dim, features=16, out_channels=(8, 16, 24, 24), intermediate_layer_idx=taps
        ),
        gaussian_head=GaussianHeadConfig(
            dim_in=2 * embed_dim,
            features=16,
            out_channels=(8, 16, 16, 32),
            intermediate_layer_idx=taps,
            sh_degree=sh_degree,
        ),
    )


# ------------------------------------------------------------------------------------------ stitch finetuning


# cut one block earlier than the bundle decoder (TINY_CUT_STAGE): the trainer also runs the teacher, so less to run
FINETUNE_CUT_STAGE = "patch_embed.blocks.0"
FINETUNE_SPEC = "conv3d_k3_o32_s1x2x2_p1"  # tiny Wan latent 8x8 (32 px, factor 4) -> 4x4 tokens (56 px, patch 14)
FINETUNE_SETTINGS = dict(
    cut_stage=FINETUNE_CUT_STAGE,
    spec=FINETUNE_SPEC,
    steps=20,
    lr=2e-3,
    warmup_steps=0,
    views=(5, 5),
    vae_size=32,
    model_size=56,
    lora_rank=4,
    lora_alpha=2,
    save_every=1000,
)


# latents statistics of the tiny Wan VAE (non-trivial, so that normalisation is exercised): the default
# ones (stitch finetuning, save/load) and the ones of the adapter and stitch-search tests, whose numbers rely on them
TINY_WAN_LATENTS_MEAN = (0.1, -0.2, 0.0, 0.3)
TINY_WAN_LATENTS_STD = (1.5, 0.8, 1.0, 1.2)
ADAPTER_WAN_LATENTS_MEAN = (0.1, 0.2, -0.3, 0.4)
ADAPTER_WAN_LATENTS_STD = (1.5, 2.0, 0.5, 1.0)


def tiny_wan_vae(
    seed: int = 0,
    latents_mean: Sequence[float] = TINY_WAN_LATENTS_MEAN,
    latents_std: Sequence[float] = TINY_WAN_LATENTS_STD,
):
    """A randomly initialised diffusers ``AutoencoderKLWan`` of 4 latent channels: spatial factor 4 (two
    stages), temporal factor 4 (two downsamplings); ``latents_mean`` / ``latents_std``: its per-channel
    latents statistics (4 values each)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=list(latents_mean),
        latents_std=list(latents_std),
    ).eval()


def tiny_cogvideox_vae(seed: int = 0):
    """A randomly initialised diffusers ``AutoencoderKLCogVideoX`` of 4 latent channels (spatial 4x, temporal 4x)."""
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(seed)
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 16, 16),
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=4,
        scaling_factor=0.7,
    ).eval()


def tiny_hunyuan_vae(seed: int = 0):
    """A randomly initialised diffusers ``AutoencoderKLHunyuanVideo`` of 4 latent channels (spatial 4x, temporal 4x)."""
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo(
        latent_channels=4,
        block_out_channels=(8, 16, 16),
        down_block_types=("HunyuanVideoDownBlock3D",) * 3,
        up_block_types=("HunyuanVideoUpBlock3D",) * 3,
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=4,
        temporal_compression_ratio=4,
        scaling_factor=0.476986,
    ).eval()


def tiny_svd_vae(seed: int = 0):
    """A randomly initialised diffusers ``AutoencoderKLTemporalDecoder`` (SVD) of 4 latent channels (spatial 2x,
    per-frame)."""
    from diffusers import AutoencoderKLTemporalDecoder

    torch.manual_seed(seed)
    return AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        scaling_factor=0.18215,
    ).eval()


def tiny_wan_adapter(seed: int = 0):
    """:func:`tiny_wan_vae` wrapped in ``WanVAEAdapter``."""
    from engine.stitching.vae import WanVAEAdapter

    return WanVAEAdapter(tiny_wan_vae(seed))


def tiny_trainer(out_dir: Optional[Union[str, Path]] = None, seed: int = 0, **overrides):
    """A ``DistillationTrainer`` on tiny random models and synthetic clips (a step in about a second on a CPU):
    :func:`tiny_wan_adapter`, the teacher :func:`build_visible_anysplat`, 5 views at 32 px for the VAE and 56 px
    (4x4 tokens) for the network. ``overrides`` replace ``TrainConfig`` fields."""
    from engine.stitching.clips import SyntheticClips
    from engine.stitching.decoder import VAEReference
    from engine.stitching.train import DistillationTrainer, TrainConfig

    teacher = build_visible_anysplat(seed)
    vae = tiny_wan_adapter(seed)
    settings = {**FINETUNE_SETTINGS, "seed": seed, **overrides}
    return DistillationTrainer(
        TrainConfig(**settings), teacher, vae, VAEReference.from_adapter(vae), SyntheticClips(), out_dir=out_dir
    )


# ------------------------------------------------------------------------------------------ CLIP scorer


_TINY_WORDS = (
    "a the of on in with and red blue green yellow white black grey cat dog house tree car chair table room "
    "garden street scene camera orbit sphere cube cone torus cylinder floor small large near"
).split()


def _tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a byte-level BPE that spells a few words whole and anything else by letters."""
    # CLIP's byte-level alphabet maps printable ASCII to the characters themselves
    letters = sorted(set("".join(_TINY_WORDS)) | set("abcdefghijklmnopqrstuvwxyz0123456789,.'-"))
    vocab = {char: i for i, char in enumerate(letters)}
    for char in letters:
        vocab[char + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in _TINY_WORDS:  # left-to-right merges building each whole word
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the last id, as in CLIP (49407)
    return vocab, merges


def build_tiny_tokenizer(folder: Optional[Union[str, Path]] = None):
    """A small real ``CLIPTokenizer`` (byte-level BPE over a few words).

    Args:
        folder: where its files (``vocab.json``, ``merges.txt``, tokenizer config) are saved, so that
            ``load_tokenizer(folder)`` reads it back; None builds it in a temporary folder removed after.
    """
    import tempfile

    from transformers import CLIPTokenizer

    vocab, merges = _tiny_vocab()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(folder) if folder is not None else Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        (base / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (base / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        tokenizer = CLIPTokenizer(str(base / "vocab.json"), str(base / "merges.txt"), pad_token="<|endoftext|>")
        if folder is not None:
            tokenizer.save_pretrained(str(base))
    return tokenizer


def tiny_clip_config(
    vocab_size: Optional[int] = None, image_size: int = 32, hidden: int = 32, act: str = "gelu", patch_size: int = 8
):
    """A tiny ``CLIPConfig`` (2 layers, 2 heads, projection 16) for tests.

    Args:
        vocab_size: default: the size of :func:`build_tiny_tokenizer`'s vocabulary.
        image_size, hidden, act, patch_size: the vision input size, the width of both towers, the
            activation ("gelu" or "quick_gelu") and the patch size.
    """
    from transformers import CLIPConfig

    vocab_size = vocab_size or len(_tiny_vocab()[0])
    eos = vocab_size - 1
    return CLIPConfig(
        projection_dim=16,
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act=act,
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=eos - 1,
        ),
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            hidden_act=act,
        ),
    )


def build_tiny_clip_scorer(
    name: str = "tiny-clip",
    output: str = "cosine",
    seed: int = 0,
    image_size: int = 32,
    crop: bool = False,
    *,
    folder: Optional[Union[str, Path]] = None,
) -> CLIPScorer:
    """A randomly initialised tiny real ``CLIPModel`` + tiny tokenizer as a scorer (fast on CPU).

    Args:
        name, output, image_size, crop: as for :class:`CLIPScorer`.
        seed: the model's initialisation seed (the global RNG state is left as it was).
        folder: where the tokenizer files are saved (``folder/tokenizer``); None keeps them in memory.
    """
    from transformers import CLIPModel

    tokenizer = build_tiny_tokenizer(None if folder is None else Path(folder) / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(tiny_clip_config(len(tokenizer), image_size))
    return CLIPScorer(model, tokenizer, name=name, image_size=image_size, crop=crop, output=output)
