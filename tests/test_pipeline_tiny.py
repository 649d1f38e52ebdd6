"""Shared helpers for the pipeline, worker and add-on tests: tiny settings over ``engine.testing.tiny`` bundles.

The bundles are built from the real classes (UMT5 + tokenizer, Wan transformer, Wan VAE, UniPC, PEFT
LoRA, and the real stitched decoder: a tiny AnySplat cut after DINOv2 block 1). The tests at the
bottom check the builders themselves.
"""

from __future__ import annotations

import functools
from pathlib import Path

from engine.pipeline.settings import BUNDLE_MANIFEST, GenerationSettings, ModelBundle
from engine.testing.tiny import TINY_DECODER_KIND, build_lora_adapter, build_tokenizer  # noqa: F401  (re-exported)
from engine.testing.tiny import build_tiny_bundle as _build_tiny_bundle

# 5 frames at 32 x 32: the latent is 2 x 4 x 4, the stitching conv gives 2 x 2 tokens per frame, so the
# decoder reads 28 x 28 frames (patch 14) and predicts one Gaussian per pixel.
DECODER_SIZE = 28
GAUSSIANS_PER_RUN = 5 * DECODER_SIZE * DECODER_SIZE


def tiny_settings(**changes) -> GenerationSettings:
    """Fast settings for the tiny models: 5 frames at 32 x 32, 3 steps."""
    values = dict(prompt="a red house", num_frames=5, height=32, width=32, num_steps=3, seed=7)
    values.update(changes)
    return GenerationSettings(**values)


@functools.cache
def build_tiny_bundle(root: Path, with_lora: bool = False, with_points_decoder: bool = False) -> Path:
    """``engine.testing.tiny.build_tiny_bundle``, once per folder."""
    return _build_tiny_bundle(root, with_lora=with_lora, with_points_decoder=with_points_decoder)


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
    assert bundle.lora_path == root / "lora" and bundle.decoder_kind == TINY_DECODER_KIND
    assert (root / "decoder" / "model.safetensors").is_file() and (root / "decoder" / "stitched_config.json").is_file()
