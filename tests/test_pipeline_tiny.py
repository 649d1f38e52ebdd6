"""Tiny configurations of the real model classes, shared by the pipeline and worker tests.

``build_tiny_bundle`` writes a complete model bundle: a diffusers WanPipeline folder (UMT5 encoder
with a tokenizer built here, Wan transformer, Wan VAE, UniPC scheduler), optionally a PEFT LoRA
adapter for the transformer, and a checkpoint for ``TinyTestDecoder`` - a test double standing in for
the stitched 3D decoder until the real one is wired in. The double is registered as decoder kind
``tiny-test`` by ``register_test_decoder`` (only ever from tests).

The tests at the bottom check the builders themselves.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.pipeline import DecodedScene, register_decoder_loader
from engine.pipeline_settings import BUNDLE_MANIFEST, GenerationSettings, ModelBundle
from engine.scene import Cameras, GaussianScene, look_at, rgb_to_sh_dc

TEST_DECODER_KIND = "tiny-test"
TEXT_DIM = 32
WORDS = "a the red blue green cat dog house tree scene camera orbit around slowly blurry low quality".split()


def tiny_settings(**changes) -> GenerationSettings:
    """Fast settings for the tiny models: 5 frames at 32 x 32, 3 steps."""
    values = dict(prompt="a red house", num_frames=5, height=32, width=32, num_steps=3, seed=7)
    values.update(changes)
    return GenerationSettings(**values)


def build_tokenizer():
    """A UMT5-style tokenizer (unigram over a few words plus single letters), as T5Tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz,.:'"]
    vocab += [("\u2581", -6.0)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def build_wan_pipeline(seed: int = 0):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer()
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
    # Deliberately not flow-matching: the pipeline must set that up itself.
    scheduler = UniPCMultistepScheduler(num_train_timesteps=1000, flow_shift=3.0)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler
    )


def build_lora_adapter(transformer, out_dir: Path, seed: int = 1) -> Path:
    """A PEFT LoRA adapter (rank 4 on attention q/k/v/out, as VIST3A's) with non-zero weights."""
    import copy

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    peft_model = get_peft_model(copy.deepcopy(transformer), config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # zero at init; make the adapter actually change something
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


class TinyTestDecoder(torch.nn.Module):
    """Test double for the stitched 3D decoder (same call interface): a 1x1x1 conv on the latent gives
    a depth per pixel, the frames give colours, cameras orbit the origin.

    latent (1, C, T_lat, h, w), frames (1, T, 3, H, W) -> DecodedScene with T cameras of H x W,
    (T * H/4 * W/4) Gaussians and (T, H, W) depth.
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        self.depth_head = torch.nn.Conv3d(channels, 1, kernel_size=1)

    def forward(self, latent: torch.Tensor, frames: torch.Tensor) -> DecodedScene:
        _, num_frames, _, height, width = frames.shape
        logits = F.interpolate(self.depth_head(latent), size=(num_frames, height, width), mode="trilinear")
        depth = 2.0 + torch.sigmoid(logits[0, 0])  # (T, H, W)
        angles = torch.linspace(0, math.pi / 2, num_frames)
        eyes = torch.stack([3 * torch.sin(angles), torch.zeros_like(angles), -3 * torch.cos(angles)], dim=-1)
        c2w = look_at(eyes, torch.zeros(3), torch.tensor([0.0, -1.0, 0.0]))
        intrinsics = Cameras.intrinsics_from_fov(math.radians(60), width, height).expand(num_frames, 3, 3)
        cameras = Cameras(c2w.to(latent), intrinsics.to(latent).contiguous(), width, height)
        points = cameras.unproject_depth(depth)[:, ::4, ::4].reshape(-1, 3)
        colors = frames[0].permute(0, 2, 3, 1)[:, ::4, ::4].reshape(-1, 3)
        count = points.shape[0]
        gaussians = GaussianScene(
            means=points,
            rotations=torch.tensor([1.0, 0, 0, 0]).to(points).expand(count, 4).contiguous(),
            log_scales=torch.full((count, 3), math.log(0.08)).to(points),
            opacity_logits=torch.full((count,), 2.0).to(points),
            sh=rgb_to_sh_dc(colors)[:, None, :],
        )
        return DecodedScene(cameras=cameras, gaussians=gaussians, depth=depth)


def load_test_decoder(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> TinyTestDecoder:
    from safetensors.torch import load_file

    decoder = TinyTestDecoder()
    decoder.load_state_dict(load_file(str(checkpoint)))
    return decoder.to(device)


def register_test_decoder() -> None:
    register_decoder_loader(TEST_DECODER_KIND, load_test_decoder)


@functools.cache
def build_tiny_bundle(root: Path, with_lora: bool = False) -> Path:
    """Writes a complete tiny bundle into ``root`` (once per root) and returns ``root``."""
    from safetensors.torch import save_file

    pipe = build_wan_pipeline()
    pipe.save_pretrained(str(root / "wan"))
    lora = None
    if with_lora:
        build_lora_adapter(pipe.transformer, root / "lora")
        lora = "lora"
    torch.manual_seed(2)
    save_file(TinyTestDecoder().state_dict(), str(root / "decoder.safetensors"))
    bundle = ModelBundle(
        root=root,
        name="tiny-lora" if with_lora else "tiny",
        wan="wan",
        decoder_kind=TEST_DECODER_KIND,
        decoder_checkpoint="decoder.safetensors",
        lora=lora,
    )
    bundle.save()
    return root


# ----------------------------------------------------------------------------- tests of the builders


def test_tiny_tokenizer_pads_and_ends_with_eos():
    tokenizer = build_tokenizer()
    out = tokenizer(["a red house"], padding="max_length", max_length=8, return_attention_mask=True)
    ids, mask = out.input_ids[0], out.attention_mask[0]
    assert sum(mask) == 4 and ids[3] == tokenizer.eos_token_id and ids[4:] == [0] * 4


def test_tiny_bundle_has_every_part(tmp_path):
    root = build_tiny_bundle(tmp_path / "bundle", with_lora=True)
    assert (root / BUNDLE_MANIFEST).is_file()
    bundle = ModelBundle.load(root)
    bundle.check_files()
    assert bundle.lora_path == root / "lora" and bundle.decoder_kind == TEST_DECODER_KIND
