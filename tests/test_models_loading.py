"""Checkpoint formats and strict loading, on tiny models saved to a temp dir (no hub access)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from engine.models.anysplat import AnySplat
from engine.models.checkpoint import CheckpointError, config_from_official, load_state_dict_strict, resolve_source
from engine.models.config import AnySplatConfig, VGGTConfig
from engine.models.loading import load_model
from engine.models.vggt import VGGT
from engine.testing.tiny import tiny_anysplat_config, tiny_vggt_config


@pytest.fixture(scope="module")
def tiny_vggt():
    torch.manual_seed(0)
    return VGGT(tiny_vggt_config()).eval()


@pytest.fixture(scope="module")
def tiny_anysplat():
    torch.manual_seed(1)
    return AnySplat(tiny_anysplat_config()).eval()


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_load_round_trip_through_safetensors(tmp_path, tiny_anysplat):
    tiny_anysplat.save_pretrained(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"config.json", "model.safetensors"}
    model, report = load_model(tmp_path / "model")
    assert isinstance(model, AnySplat) and not model.training
    assert model.config == tiny_anysplat.config
    assert _same_weights(model, tiny_anysplat)
    assert report.num_loaded == len(tiny_anysplat.state_dict()) and not report.dropped and not report.cast
    assert not model.encoder.aggregator.patch_embed.mask_token.requires_grad
    assert model.encoder.aggregator.camera_token.requires_grad
    images = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.predict(images).gaussian_raw, tiny_anysplat.predict(images).gaussian_raw)
    assert isinstance(AnySplat.from_pretrained(tmp_path / "model"), AnySplat)


def test_bfloat16_safetensors_are_cast_and_reported(tmp_path, tiny_vggt):
    state = {k: v.to(torch.bfloat16) for k, v in tiny_vggt.state_dict().items()}
    save_file(state, str(tmp_path / "weights.safetensors"))
    # Without config.json the full-size architecture is assumed: the tiny weights do not fit.
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model(tmp_path / "weights.safetensors")
    (tmp_path / "folder").mkdir()
    save_file(state, str(tmp_path / "folder" / "model.safetensors"))
    (tmp_path / "folder" / "config.json").write_text(json.dumps(tiny_vggt.config.to_dict()))
    model, report = load_model(tmp_path / "folder")
    assert report.cast == {"bfloat16->float32": len(state)}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    key = "camera_head.embed_pose.weight"
    assert torch.equal(model.state_dict()[key], state[key].float())


def test_torch_pickles_flat_and_wrapped(tmp_path, tiny_vggt):
    state = tiny_vggt.state_dict()
    target = VGGT(tiny_vggt.config)
    torch.save(state, tmp_path / "flat.pt")
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("flat.pt", "wrapped.pt"):
        from engine.models.checkpoint import read_state_dict

        load_state_dict_strict(target, read_state_dict(tmp_path / name))
        assert _same_weights(target, tiny_vggt)
    (tmp_path / "bin").mkdir()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text(json.dumps(tiny_vggt.config.to_dict()))
    model, _ = load_model(tmp_path / "bin", model_type="vggt")
    assert _same_weights(model, tiny_vggt)


def test_strict_load_lists_missing_unexpected_and_misshaped_keys(tiny_vggt):
    state = dict(tiny_vggt.state_dict())
    removed = [k for k in state if k.startswith("point_head.scratch")]
    for key in removed:
        del state[key]
    state["point_head.extra"] = torch.zeros(1)
    state["depth_head.norm.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(VGGT(tiny_vggt.config), state)
    message = str(info.value)
    assert f"missing keys: {len(removed)} (" in message and removed[0] in message and "..." in message
    assert "unexpected keys: 1 (point_head.extra)" in message
    assert "depth_head.norm.weight (3,) vs model (64,)" in message


def test_track_head_keys_are_dropped_and_reported(tiny_vggt):
    state = dict(tiny_vggt.state_dict())
    state["track_head.tracker.updateformer.virual_tracks"] = torch.zeros(1, 64, 1, 384)
    state["track_head.feature_extractor.norm.weight"] = torch.zeros(64)
    target = VGGT(tiny_vggt.config)
    report = load_state_dict_strict(target, state)
    assert report.dropped == {"track_head.": 2}
    assert "dropped 2 'track_head.*' keys (VGGT track head" in report.summary()
    assert _same_weights(target, tiny_vggt)


def test_anysplat_teacher_copies_are_dropped(tiny_anysplat):
    state = dict(tiny_anysplat.state_dict())
    teacher = {k.replace("encoder.", "encoder.distill_"): v for k, v in state.items() if "camera_head" in k}
    report = load_state_dict_strict(AnySplat(tiny_anysplat.config), {**state, **teacher})
    assert report.dropped == {"encoder.distill_camera_head.": len(teacher)} and len(teacher) > 10


def test_checkpoint_of_the_other_model_is_rejected(tmp_path, tiny_vggt, tiny_anysplat):
    tiny_vggt.save_pretrained(tmp_path / "vggt")
    with pytest.raises(CheckpointError, match="holds VGGT weights, but a AnySplat model was requested"):
        load_model(tmp_path / "vggt", model_type="anysplat")
    with pytest.raises(CheckpointError, match="holds AnySplat weights"):
        load_state_dict_strict(VGGT(tiny_vggt.config), tiny_anysplat.state_dict())
    config = json.loads((tmp_path / "vggt" / "config.json").read_text())
    config_path = tmp_path / "vggt" / "config.json"
    config_path.write_text(json.dumps(tiny_anysplat.config.to_dict()))
    with pytest.raises(CheckpointError, match="config.json says anysplat but the weights are vggt"):
        load_model(tmp_path / "vggt")
    config_path.write_text(json.dumps(config))


def test_missing_sources_and_unknown_formats(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no weights"):
        load_model(tmp_path / "empty")
    (tmp_path / "w.npz").write_bytes(b"0")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        load_model(tmp_path / "w.npz")


def test_official_config_files():
    vggt = {
        "img_size": 518,
        "patch_size": 14,
        "embed_dim": 1024,
        "enable_camera": True,
        "enable_point": True,
        "enable_depth": True,
        "enable_track": True,
    }
    assert config_from_official(vggt) == VGGTConfig()
    with pytest.raises(CheckpointError, match="unsupported VGGT config"):
        config_from_official({**vggt, "embed_dim": 768})
    anysplat = {
        "encoder_cfg": {"gaussian_adapter": {"sh_degree": 2}, "voxel_size": 0.01, "intermediate_layer_idx": None},
        "decoder_cfg": {"name": "splatting_cuda"},
    }
    config = config_from_official(anysplat)
    assert isinstance(config, AnySplatConfig)
    assert config.gaussian_head.sh_degree == 2 and config.gaussian_head.output_dim == 1 + 3 + 4 + 27 + 1
    assert config.voxel_size == 0.01
    with pytest.raises(CheckpointError, match="pred_head_type"):
        config_from_official({"encoder_cfg": {"pred_head_type": "point"}})


def test_hub_id_resolved_from_the_local_cache(tmp_path, monkeypatch, tiny_vggt):
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--someone--tiny-vggt" / "snapshots" / "0123abcd"
    tiny_vggt.save_pretrained(snapshot)
    refs = tmp_path / "hub" / "models--someone--tiny-vggt" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_source("someone/tiny-vggt") == snapshot
    model, _ = load_model("someone/tiny-vggt")
    assert _same_weights(model, tiny_vggt)
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        resolve_source("someone/absent")
