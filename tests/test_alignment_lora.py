"""The video LoRA: its targets, the EMA arithmetic, and PEFT adapter folders the pipeline loads."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from engine.alignment.lora import LoraEMA, add_video_lora, lora_parameters, save_adapter
from engine.pipeline.vist3a import apply_lora_adapter
from engine.testing.tiny import TEXT_DIM, build_wan_pipeline


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    return build_wan_pipeline().transformer.eval()


def _velocity(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, 2, 4, 4, generator=generator)
    text = torch.randn(1, 16, TEXT_DIM, generator=generator)
    with torch.no_grad():
        return model(
            hidden_states=latents, timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False
        )[0]


def test_lora_sits_on_both_attentions_q_k_v_out_with_rank_8_alpha_16(transformer):
    model = add_video_lora(copy.deepcopy(transformer))
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha) == (8, 16)
    wrapped = sorted({n.split(".lora_")[0].removeprefix("base_model.model.") for n in lora_parameters(model)})
    expected = sorted(
        f"blocks.{b}.{attn}.{proj}"
        for b in range(len(transformer.blocks))
        for attn in ("attn1", "attn2")
        for proj in ("to_q", "to_k", "to_v", "to_out.0")
    )
    assert wrapped == expected
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.shape[0] == 8 for n, p in lora_parameters(model).items() if "lora_A" in n)
    # zero-initialised B: the wrapped model starts as the base model
    assert torch.equal(_velocity(model), _velocity(transformer))


def test_ema_follows_its_formula():
    param = torch.nn.Parameter(torch.zeros(3))
    ema = LoraEMA({"w": param}, decay=0.9, warmup=False)
    expected = torch.zeros(3)
    for value in (1.0, 2.0, -1.0, 4.0):
        with torch.no_grad():
            param.fill_(value)
        assert ema.update({"w": param}) == pytest.approx(0.9)
        expected = 0.9 * expected + 0.1 * value
        assert torch.allclose(ema.shadow["w"], expected)

    warm = LoraEMA({"w": param}, decay=0.999, warmup=True)
    shadow = param.detach().clone()
    for n in range(1, 6):
        with torch.no_grad():
            param.fill_(float(n))
        decay = warm.update({"w": param})
        assert decay == pytest.approx(min(0.999, (1 + n) / (10 + n)))
        shadow = decay * shadow + (1 - decay) * n
        assert torch.allclose(warm.shadow["w"], shadow)

    with pytest.raises(ValueError, match="decay"):
        LoraEMA({"w": param}, decay=1.0)
    with pytest.raises(KeyError):
        ema.update({"other": param})


def test_ema_weights_apply_temporarily_and_state_round_trips():
    param = torch.nn.Parameter(torch.full((2,), 5.0))
    ema = LoraEMA({"w": param}, decay=0.5, warmup=False)
    with torch.no_grad():
        param.fill_(1.0)
    ema.update({"w": param})  # shadow 3.0
    with ema.applied({"w": param}):
        assert torch.equal(param.detach(), torch.full((2,), 3.0))
    assert torch.equal(param.detach(), torch.full((2,), 1.0))
    other = LoraEMA({"w": param}, decay=0.5, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow["w"], ema.shadow["w"]) and other.num_updates == 1


def test_adapter_folders_load_into_the_pipeline_and_reproduce_the_weights(transformer, tmp_path):
    model = add_video_lora(copy.deepcopy(transformer))
    params = lora_parameters(model)
    with torch.no_grad():
        for name, param in params.items():
            if "lora_B" in name:
                param.normal_(0.0, 0.3)
    ema = LoraEMA(params, decay=0.5, warmup=False)
    with torch.no_grad():
        for param in params.values():
            param.mul_(-1.0)
    ema.update(params)
    raw_velocity = _velocity(model)
    with ema.applied(params):
        ema_velocity = _velocity(model)
    assert not torch.allclose(raw_velocity, ema_velocity)

    save_adapter(model, tmp_path / "adapter")
    save_adapter(model, tmp_path / "adapter_ema", ema=ema)
    assert torch.equal(_velocity(model), raw_velocity)  # saving the EMA leaves the live weights alone
    config = json.loads((tmp_path / "adapter_ema" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16)

    merged_raw = apply_lora_adapter(copy.deepcopy(transformer), tmp_path / "adapter")
    merged_ema = apply_lora_adapter(copy.deepcopy(transformer), tmp_path / "adapter_ema")
    assert torch.allclose(_velocity(merged_raw), raw_velocity, atol=1e-5)
    assert torch.allclose(_velocity(merged_ema), ema_velocity, atol=1e-5)


def test_save_adapter_replaces_atomically(transformer, tmp_path, monkeypatch):
    model = add_video_lora(copy.deepcopy(transformer))
    target = tmp_path / "adapter"
    save_adapter(model, target)
    before = (target / "adapter_model.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, target)
    assert (target / "adapter_model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
