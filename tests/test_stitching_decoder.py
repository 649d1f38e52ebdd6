"""StitchedDecoder wiring, our checkpoint format and the released-checkpoint loader, on tiny models."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.anysplat import AnySplat
from engine.models.vggt import VGGT
from engine.stitching.checkpoint import (
    CONFIG_FILE,
    StitchedCheckpointError,
)
from engine.stitching.decoder import StitchedDecoder, VAEReference
from engine.stitching.released import (
    ReleasedCheckpointError,
    load_released_stitched,
    lora_target_names,
    ours_to_released,
    released_to_ours,
)
from engine.testing.tiny import tiny_anysplat_config, tiny_vggt_config

VIEWS, SIZE, DIM = 3, 56, 32
# stand-in "VAE" whose latent is the token grid itself: one latent frame per frame, 14 px per latent pixel
IDENTITY_VAE = VAEReference("TokenGrid", latent_channels=DIM, spatial_factor=14, temporal_factor=1)
IDENTITY_SPEC = f"conv3d_k1_o{DIM}"


def tiny_network(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    return (AnySplat(tiny_anysplat_config()) if kind == "anysplat" else VGGT(tiny_vggt_config())).eval()


def frames(seed: int = 1) -> torch.Tensor:
    return torch.rand(1, VIEWS, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def identity_decoder(network, cut_stage: str) -> StitchedDecoder:
    """A decoder whose stitching conv passes the latent's channels through unchanged."""
    decoder = StitchedDecoder.from_network(network, cut_stage, IDENTITY_SPEC, IDENTITY_VAE)
    with torch.no_grad():
        decoder.stitching_layer.weight.copy_(torch.eye(DIM).view(DIM, DIM, 1, 1, 1))
        decoder.stitching_layer.bias.zero_()
    return decoder


def tokens_as_latent(patch_tokens: torch.Tensor) -> torch.Tensor:
    """(B*T, h*w, C) patch tokens -> (B, C, T, h, w) latent of the identity stand-in."""
    grid = SIZE // 14
    return patch_tokens.reshape(1, VIEWS, grid, grid, DIM).permute(0, 4, 1, 2, 3).contiguous()


def prediction_tensors(prediction) -> dict[str, torch.Tensor]:
    skip = {"images", "pose_enc_list", "sh_degree"}
    out = {k: v for k, v in vars(prediction).items() if k not in skip}
    out.update({f"pose_enc_{i}": p for i, p in enumerate(prediction.pose_enc_list)})
    return out


def assert_same_prediction(a, b, atol=1e-5):
    ta, tb = prediction_tensors(a), prediction_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], atol=atol, rtol=1e-4, msg=key)


@pytest.mark.parametrize("kind", ["anysplat", "vggt"])
def test_patch_embed_cut_reproduces_the_original_network(kind):
    original = tiny_network(kind)
    images = frames()
    with torch.no_grad():
        reference = original(images)
        patch_tokens = original.trace(images, ["patch_embed.patch_embed"])["patch_embed.patch_embed"]
    decoder = identity_decoder(copy.deepcopy(original), "patch_embed.patch_embed")
    result = decoder.predict(tokens_as_latent(patch_tokens), images)
    assert type(result) is type(reference)
    assert_same_prediction(result, reference)
    if kind == "anysplat":  # the outputs convert like the 3D decoder's (a random tiny VGGT has degenerate FOVs)
        assert len(result.cameras()) == VIEWS
        assert result.gaussian_scene().means.shape[0] == VIEWS * SIZE * SIZE


@pytest.mark.parametrize("kind", ["anysplat", "vggt"])
def test_dino_block_cut_matches_the_network_run_from_that_stage(kind):
    """Cut after DINOv2 block 1: tokens replace the patch projections, cls/pos/registers are added again,
    blocks 2.. run - exactly the network's forward_from with add_prefix_tokens (the released wiring)."""
    original = tiny_network(kind)
    images = frames()
    stage = "patch_embed.blocks.1"
    dino = original.aggregator.patch_embed
    with torch.no_grad():
        block_out = original.trace(images, [stage])[stage]
        patch_tokens = block_out[:, dino.num_prefix_tokens :]
        reference = original.forward_from(stage, dino.add_prefix_tokens(patch_tokens, SIZE, SIZE), images)
    decoder = identity_decoder(copy.deepcopy(original), stage)
    assert_same_prediction(decoder.predict(tokens_as_latent(patch_tokens), images), reference)


def test_cut_away_modules_are_removed():
    network = tiny_network("anysplat")
    before = sum(p.numel() for p in network.parameters())
    decoder = identity_decoder(network, "patch_embed.blocks.1")
    keys = list(decoder.state_dict())
    prefix = "network.encoder.aggregator.patch_embed."
    assert not any(k.startswith(prefix + "patch_embed.") for k in keys)
    assert not any(k.startswith((prefix + "blocks.0.", prefix + "blocks.1.")) for k in keys)
    assert any(k.startswith(prefix + "blocks.2.") for k in keys)  # kept blocks keep their index
    for kept in ("cls_token", "register_tokens", "mask_token", "pos_embed", "norm.weight"):
        assert prefix + kept in keys
    assert decoder.removed_modules == [prefix[8:] + "patch_embed", prefix[8:] + "blocks.0", prefix[8:] + "blocks.1"]
    dropped = sum(p.numel() for p in network.parameters()) - before
    assert dropped < 0
    with pytest.raises(RuntimeError, match="removed by stitching"):
        decoder.network.aggregator.patch_embed.blocks[0](torch.zeros(1, 3, DIM))


def test_bad_inputs_and_cuts_are_rejected():
    with pytest.raises(ValueError, match="cuts inside the aggregator are not supported"):
        StitchedDecoder.from_network(tiny_network("vggt"), "frame_blocks.0", IDENTITY_SPEC, IDENTITY_VAE)
    with pytest.raises(ValueError, match="gives 16-d tokens"):
        StitchedDecoder.from_network(tiny_network("vggt"), "patch_embed.blocks.0", "conv3d_k1_o16", IDENTITY_VAE)
    decoder = identity_decoder(tiny_network("vggt"), "patch_embed.blocks.0")
    latent = torch.zeros(1, DIM, VIEWS, 4, 4)
    with pytest.raises(ValueError, match="70x70 frames need 3 frames of 5x5 tokens"):
        decoder(latent, torch.rand(1, VIEWS, 3, 70, 70))
    with pytest.raises(ValueError, match="latent must be"):
        decoder(torch.zeros(1, 3, VIEWS, 4, 4), frames())


# ------------------------------------------------------------------------------------------------------
# Our checkpoint format


def test_checkpoint_round_trip_is_exact_and_strict(tmp_path):
    torch.manual_seed(3)
    decoder = StitchedDecoder.from_network(
        tiny_network("anysplat"),
        "patch_embed.blocks.0",
        "conv3d_k3_o32_s1x2x2_p1",
        VAEReference("Fake", 4, 8, 2, "x/y"),
    ).eval()
    decoder.lora_info = {"rank": 4, "alpha": 2, "dropout": 0.0, "merged": True}
    latent = torch.randn(1, 4, 2, 8, 8)
    images = frames()
    reference = decoder.predict(latent, images)
    folder = decoder.save_pretrained(tmp_path / "ckpt")
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["cut_stage"] == "patch_embed.blocks.0"
    assert config["stitching_spec"] == "conv3d_k3_o32_s1x2x2_p1"
    assert config["vae"]["class_name"] == "Fake" and config["lora"]["rank"] == 4
    loaded = StitchedDecoder.from_pretrained(folder)
    assert not loaded.training
    assert_same_prediction(loaded.predict(latent, images), reference, atol=0)

    # strict: an extra tensor, a missing tensor and a wrong config each fail with a clear message
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    save_file({**state, "network.extra": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(StitchedCheckpointError, match="unexpected keys: 1 \\(network.extra\\)"):
        StitchedDecoder.from_pretrained(folder)
    state.pop("stitching_layer.bias")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(StitchedCheckpointError, match="missing keys: 1 \\(stitching_layer.bias\\)"):
        StitchedDecoder.from_pretrained(folder)
    config["stitching_spec"] = "conv3d_k1_o32"
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(StitchedCheckpointError):
        StitchedDecoder.from_pretrained(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(StitchedCheckpointError, match="'format' must be"):
        StitchedDecoder.from_pretrained(folder)
    with pytest.raises(StitchedCheckpointError, match="not found"):
        StitchedDecoder.from_pretrained(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------------
# The released anysplat_stitched.pth layout

RANK, ALPHA = 4, 2  # scaling 0.5, as the released rank 64 / alpha 32


def fake_released_checkpoint(decoder: StitchedDecoder, seed: int = 7) -> dict:
    """A checkpoint in the released key layout for the (tiny) decoder: loralib names, re-indexed blocks."""
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for name in lora_target_names(decoder):
        module = decoder.get_submodule(name)
        released = ours_to_released(name, decoder.removed_dino_blocks)
        if isinstance(module, nn.Linear):
            a_shape, b_shape = (RANK, module.in_features), (module.out_features, RANK)
        else:
            k = module.kernel_size[0]
            a_shape, b_shape = (RANK * k, module.in_channels * k), (module.out_channels * k, RANK * k)
        lora[f"{released}.lora_A"] = torch.randn(a_shape, generator=g) * 0.1
        if module.bias is not None:
            lora[f"{released}.bias"] = torch.randn(module.bias.shape, generator=g).to(torch.bfloat16)
        lora[f"{released}.lora_B"] = torch.randn(b_shape, generator=g) * 0.1
    lora["encoder.distill_camera_head.embed_pose.lora_A"] = torch.zeros(RANK, 9)
    dino = decoder.network.aggregator.patch_embed
    return {
        "lora": lora,
        "stitching_layer": {
            "weight": torch.randn(decoder.stitching_layer.weight.shape, generator=g) * 0.1,
            "bias": torch.randn(DIM, generator=g) * 0.1,
        },
        "mask_token": torch.randn(dino.mask_token.shape, generator=g).to(torch.bfloat16),
        "cls_token": torch.randn(dino.cls_token.shape, generator=g).to(torch.bfloat16),
        "register_tokens": torch.randn(dino.register_tokens.shape, generator=g).to(torch.bfloat16),
    }


class LoraLinearReference(nn.Module):
    """loralib Linear, unmerged: base(x) + (x @ A^T @ B^T) * scaling."""

    def __init__(self, base: nn.Linear, a, b, bias):
        super().__init__()
        self.base, self.a, self.b = base, a, b
        if bias is not None:
            base.bias.data = bias.float()

    def forward(self, x):
        return self.base(x) + (x @ self.a.T @ self.b.T) * (ALPHA / RANK)


class ConvLoraReference(nn.Module):
    """loralib ConvLoRA, unmerged: conv with weight W + (B @ A).view(W.shape) * scaling."""

    def __init__(self, base: nn.Conv2d, a, b, bias):
        super().__init__()
        self.base, self.a, self.b = base, a, b
        if bias is not None:
            base.bias.data = bias.float()

    def forward(self, x):
        weight = self.base.weight + (self.b @ self.a).view(self.base.weight.shape) * (ALPHA / RANK)
        return self.base._conv_forward(x, weight, self.base.bias)


def unmerged_reference(network: AnySplat, checkpoint: dict) -> nn.Module:
    """The official stitched model built independently: cut network + loralib-style wrappers + tokens."""
    dino = network.aggregator.patch_embed
    lora = checkpoint["lora"]
    for name, module in list(network.named_modules()):
        if type(module) not in (nn.Linear, nn.Conv2d) or name.startswith("encoder.aggregator.patch_embed.patch_embed"):
            continue
        parts = name.split(".")
        if name.startswith("encoder.aggregator.patch_embed.blocks."):
            index = int(parts[4]) - 2  # released re-indexing for the cut after block 1
            if index < 0:
                continue
            parts[4] = str(index)
        released = ".".join(parts)
        wrapper = LoraLinearReference if isinstance(module, nn.Linear) else ConvLoraReference
        new = wrapper(module, lora[released + ".lora_A"], lora[released + ".lora_B"], lora.get(released + ".bias"))
        parent = network.get_submodule(name.rsplit(".", 1)[0])
        setattr(parent, name.rsplit(".", 1)[1], new)
    for key in ("cls_token", "register_tokens", "mask_token"):
        getattr(dino, key).data = checkpoint[key].float()
    return network


def test_released_checkpoint_merge_matches_unmerged_lora(tmp_path):
    base = tiny_network("anysplat", seed=5)
    layout = StitchedDecoder.from_network(
        copy.deepcopy(base), "patch_embed.blocks.1", "conv3d_k3_o32_s1x2x2_p1", IDENTITY_VAE
    )
    checkpoint = fake_released_checkpoint(layout)
    # released names: kept blocks re-indexed from 0, heads unchanged
    assert "encoder.aggregator.patch_embed.blocks.0.attn.qkv.lora_A" in checkpoint["lora"]
    assert "encoder.depth_head.scratch.layer1_rn.lora_A" in checkpoint["lora"]
    assert released_to_ours("encoder.aggregator.patch_embed.blocks.0.mlp.fc1", 2) == (
        "network.encoder.aggregator.patch_embed.blocks.2.mlp.fc1"
    )
    path = tmp_path / "anysplat_stitched.pth"
    torch.save(checkpoint, path)

    decoder, report = load_released_stitched(
        path, copy.deepcopy(base), spec="conv3d_k3_o32_s1x2x2_p1", vae=IDENTITY_VAE, rank=RANK, alpha=ALPHA
    )
    assert report.merged_conv > 0 and report.merged_linear > 0
    assert report.dropped_teacher_keys == ["lora.encoder.distill_camera_head.embed_pose.lora_A"]
    assert report.unmapped_keys == []

    reference = unmerged_reference(copy.deepcopy(base), checkpoint)
    latent = torch.randn(1, DIM, VIEWS, 8, 8)
    images = frames()
    with torch.no_grad():
        conv = F.conv3d(
            F.pad(latent, (1, 1, 1, 1, 1, 1), mode="replicate"),
            checkpoint["stitching_layer"]["weight"],
            checkpoint["stitching_layer"]["bias"],
            stride=(1, 2, 2),
        )  # (1, C, T, 4, 4)
        tokens = conv.flatten(3).permute(0, 2, 3, 1).reshape(VIEWS, 16, DIM)
        dino = reference.aggregator.patch_embed
        expected = reference.forward_from("patch_embed.blocks.1", dino.add_prefix_tokens(tokens, SIZE, SIZE), images)
    assert_same_prediction(decoder.predict(latent, images), expected, atol=1e-4)


def test_released_checkpoint_errors(tmp_path):
    base = tiny_network("anysplat")
    layout = StitchedDecoder.from_network(
        copy.deepcopy(base), "patch_embed.blocks.1", "conv3d_k3_o32_s1x2x2_p1", IDENTITY_VAE
    )
    checkpoint = fake_released_checkpoint(layout)
    kwargs = dict(spec="conv3d_k3_o32_s1x2x2_p1", vae=IDENTITY_VAE, rank=RANK, alpha=ALPHA)

    broken = copy.deepcopy(checkpoint)
    del broken["lora"]["encoder.camera_head.pose_branch.fc2.lora_B"]
    with pytest.raises(ReleasedCheckpointError, match="no LoRA for 1 layers.*encoder.camera_head.pose_branch.fc2"):
        load_released_stitched(broken, copy.deepcopy(base), **kwargs)

    broken = copy.deepcopy(checkpoint)
    broken["lora"]["encoder.depth_head.scratch.layer1_rn.lora_A"] = torch.zeros(RANK, 8)
    with pytest.raises(ReleasedCheckpointError, match="layer1_rn: ConvLoRA shapes"):
        load_released_stitched(broken, copy.deepcopy(base), **kwargs)

    broken = copy.deepcopy(checkpoint)
    broken["lora"]["encoder.unknown_head.fc.lora_A"] = torch.zeros(RANK, 8)
    broken["extra"] = torch.zeros(1)
    _, report = load_released_stitched(broken, copy.deepcopy(base), **kwargs)
    assert report.unmapped_keys == ["extra", "lora.encoder.unknown_head.fc.lora_A"]
    assert "UNMAPPED 2 keys" in report.summary()

    broken = copy.deepcopy(checkpoint)
    del broken["cls_token"]
    with pytest.raises(ReleasedCheckpointError, match="lacks \\['cls_token'\\]"):
        load_released_stitched(broken, copy.deepcopy(base), **kwargs)
