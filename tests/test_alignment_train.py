"""The reward-finetuning trainer on a tiny real model: what it trains, writes, resumes and improves."""

from __future__ import annotations

import json

import pytest
import torch

from engine.alignment.lpips import LPIPS
from engine.alignment.rewards import ConsistencyReward, PaperReward, RewardOutput, SceneReward
from engine.alignment.scorers import QualityScorer
from engine.alignment.train import AlignConfig, AlignmentTrainer, shifted_sigma
from engine.pipeline.settings import GenerationSettings, ModelBundle, RuntimeOptions
from engine.pipeline.vist3a import Vist3aPipeline
from engine.testing.tiny import build_tiny_bundle

CPU = RuntimeOptions(device="cpu", dtype="float32")


def tiny_config(**overrides) -> AlignConfig:
    values = dict(
        steps=3,
        lr=1e-2,
        num_frames=5,
        height=32,
        width=32,
        steps_range=(2, 4),
        grad_steps=1,
        num_clips=2,
        eval_steps=3,
        save_every=2,
    )
    values.update(overrides)
    return AlignConfig(**values)


class RenderBrightness(SceneReward):
    """A stand-in reward: mean brightness of the renders minus L1 to the decoded frames."""

    name = "brightness"

    def select_views(self, num_views, generator):
        views = sorted(torch.randperm(num_views, generator=generator)[:2].tolist())
        return views, views

    def forward(self, decoded, rendered, prompt):
        reward = rendered.mean() - 0.1 * (decoded - rendered).abs().mean()
        return RewardOutput(reward, {"reward": float(reward.detach())})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("align") / "bundle", visible=True)


def make_trainer(bundle, out_dir=None, reward=None, **overrides) -> AlignmentTrainer:
    torch.manual_seed(0)
    pipeline = Vist3aPipeline.from_pretrained(bundle, runtime=CPU)
    return AlignmentTrainer(
        tiny_config(**overrides),
        pipeline,
        reward or RenderBrightness(),
        base_bundle=ModelBundle.load(bundle),
        out_dir=out_dir,
    )


def _frozen_state(trainer):
    pipe = trainer.pipe
    state = {f"dit.{n}": p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    for name, module in (("vae", pipe.vae), ("text", pipe.text_encoder), ("decoder", pipe.decoder)):
        state.update({f"{name}.{n}": t.detach().clone() for n, t in module.state_dict().items()})
    return state


def test_training_changes_only_the_lora_and_writes_its_outputs(bundle, tmp_path):
    out = tmp_path / "run"
    trainer = make_trainer(bundle, out, gradient_checkpointing=True)
    assert trainer.model.base_model.model.is_gradient_checkpointing
    frozen = _frozen_state(trainer)
    lora_before = {n: p.detach().clone() for n, p in trainer.trainable.items()}
    records = trainer.train(progress=False)

    after = _frozen_state(trainer)
    assert frozen.keys() == after.keys() and all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert any(not torch.equal(lora_before[n], p) for n, p in trainer.trainable.items() if "lora_B" in n)

    lines = [json.loads(line) for line in (out / "reward_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] == [r["step"] for r in records]
    for record in lines:
        assert record["fm_loss"] > 0 and "reward" in record and record["grad_norm"] > 0
        (rollout,) = record["rollouts"]
        assert 2 <= rollout["num_steps"] <= 4 and 4.0 <= rollout["cfg"] <= 6.0
        assert len(rollout["grad_steps"]) == 2 and rollout["grad_steps"][-1] == rollout["num_steps"] - 1
    config = json.loads((out / "align_config.json").read_text())
    assert config["config"]["lora_rank"] == 8 and config["config"]["lora_alpha"] == 16
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000003"]
    for folder in ("adapter", "adapter_ema"):
        assert (out / folder / "adapter_model.safetensors").is_file()
        assert json.loads((out / folder / "adapter_config.json").read_text())["r"] == 8


def test_the_finetuned_bundle_loads_the_ema_adapter_and_generates(bundle, tmp_path):
    out = tmp_path / "run"
    trainer = make_trainer(bundle, out, steps=2)
    trainer.train(progress=False)

    manifest = json.loads((out / "vist3a.json").read_text())
    assert manifest["lora"] == "adapter_ema" and manifest["extra"]["reward_finetuning"]["steps"] == 2
    finetuned = Vist3aPipeline.from_pretrained(out, runtime=CPU)
    base = Vist3aPipeline.from_pretrained(bundle, runtime=CPU)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 2, 4, 4, generator=generator)
    text = torch.randn(1, 8, 32, generator=generator)
    t = torch.tensor([700.0])

    def velocity(model):
        with torch.no_grad():
            return model(hidden_states=latents, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

    with trainer.ema.applied(trainer.trainable):
        expected = velocity(trainer.model)
    assert torch.allclose(velocity(finetuned.transformer), expected, atol=1e-5)
    assert not torch.allclose(velocity(base.transformer), expected, atol=1e-4)
    settings = GenerationSettings(prompt="a red chair", num_frames=5, height=32, width=32, num_steps=2, seed=1)
    result = finetuned.generate(settings)
    assert len(result.scene) > 0 and len(result.cameras) == 5


def test_resuming_from_a_checkpoint_continues_the_same_run(bundle, tmp_path):
    straight = make_trainer(bundle, tmp_path / "a", steps=4)
    straight.train(progress=False)

    first = make_trainer(bundle, tmp_path / "b", steps=4)
    first.train(steps=2, progress=False)
    first.save_checkpoint()
    resumed = make_trainer(bundle, tmp_path / "b", steps=4)
    resumed.load_checkpoint(resumed.latest_checkpoint())
    assert resumed.step == 2 and resumed.ema.num_updates == 2
    resumed.train(progress=False)

    for name, param in straight.trainable.items():
        assert torch.allclose(param, resumed.trainable[name], atol=1e-6), name
        assert torch.allclose(straight.ema.shadow[name], resumed.ema.shadow[name], atol=1e-6), name
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "reward_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_flow_matching_loss_is_the_velocity_mse(bundle):
    trainer = make_trainer(bundle)
    x0, caption = trainer.clips.item(1)
    loss = trainer.flow_matching_loss(torch.Generator().manual_seed(7), index=1)

    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(x0.shape, generator=generator)
    u = torch.rand((), generator=generator)
    sigma = 5.0 * u / (1 + 4.0 * u)
    assert torch.allclose(shifted_sigma(u, 5.0), sigma)
    text = trainer.pipe.encode_text(trainer.wrap(caption))
    with torch.no_grad():
        velocity = trainer.model(
            hidden_states=(1 - sigma) * x0 + sigma * noise,
            timestep=(sigma * 1000).reshape(1),
            encoder_hidden_states=text,
            return_dict=False,
        )[0]
    assert float(loss.detach()) == pytest.approx(float(((velocity - (noise - x0)) ** 2).mean()), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in trainer.trainable.values() if p.requires_grad)


def test_the_trainer_refuses_what_it_cannot_train(bundle, tmp_path):
    lora_bundle = build_tiny_bundle(tmp_path / "with-lora", with_lora=True)
    pipeline = Vist3aPipeline.from_pretrained(lora_bundle, runtime=CPU)
    with pytest.raises(ValueError, match="already applies a LoRA"):
        AlignmentTrainer(tiny_config(), pipeline, RenderBrightness(), base_bundle=ModelBundle.load(lora_bundle))
    with pytest.raises(ValueError, match="fm_weight and reward_weight are both 0"):
        tiny_config(fm_weight=0.0, reward_weight=0.0)
    with pytest.raises(ValueError, match="exceeds"):
        tiny_config(steps_range=(1, 4))


class BrightnessScorer(QualityScorer):
    """A stand-in quality model with a consistent preference (brighter is better): a tiny random CLIP
    has no preference that a few dozen steps could follow, so the presets are exercised with this one."""

    name = "brightness"

    def forward(self, images, prompts):
        self.check_inputs(images, prompts)
        return images.flatten(1).mean(1)


def test_the_paper_reward_with_l1_consistency_trains_and_logs_exactly_its_active_terms(bundle, tmp_path):
    out = tmp_path / "run"
    reward = PaperReward(BrightnessScorer(), None, ConsistencyReward(), hps_weight=0.0)
    trainer = make_trainer(bundle, out, reward=reward, steps=1)
    lora_before = {n: p.detach().clone() for n, p in trainer.trainable.items()}
    trainer.train(progress=False)
    assert any(not torch.equal(lora_before[n], p) for n, p in trainer.trainable.items() if "lora_B" in n)

    (record,) = [json.loads(line) for line in (out / "reward_log.jsonl").read_text().splitlines()]
    expected = ["q_decoded", "q_rendered", "decoded_clip", "rendered_clip", "consistency", "consistency_l1", "reward"]
    assert list(record["terms"]) == expected
    assert record["terms"]["consistency_l1"] > 0
    assert record["terms"]["consistency"] == pytest.approx(-record["terms"]["consistency_l1"], abs=1e-7)
    recorded = json.loads((out / "align_config.json").read_text())["reward"]
    assert recorded["preset"] == "paper" and recorded["consistency"] == "l1" and recorded["lpips_weight"] == 0.0
    assert recorded["hps_weight"] == 0.0 and recorded["scorers"] == {"clip": "brightness"}
    assert recorded["terms"] == expected


def test_a_few_dozen_reward_steps_raise_the_heldout_reward(bundle, capsys):
    torch.manual_seed(0)
    reward = PaperReward(BrightnessScorer(), BrightnessScorer(), ConsistencyReward(LPIPS("vgg")))
    trainer = make_trainer(
        bundle, reward=reward, steps=40, lr=3e-2, fm_weight=0.0, steps_range=(3, 6), eval_steps=6, save_every=100
    )
    heldout = [
        "a green cone near a white sphere",
        "a small blue torus on the floor",
        "a yellow cube and a red cylinder",
    ]
    assert not set(heldout) & {trainer.clips.caption(i) for i in range(len(trainer.clips))}
    before = trainer.evaluate(heldout, seeds=(0, 1))
    trainer.train(progress=False)
    after = trainer.evaluate(heldout, seeds=(0, 1))
    gains = [b - a for a, b in zip(before["rewards"], after["rewards"])]
    with capsys.disabled():
        print(
            f"\nheld-out paper-preset reward (EMA, 3 prompts x 2 seeds): {before['reward']:.5f} -> "
            f"{after['reward']:.5f} after 40 reward steps; per rollout: {[round(g, 5) for g in gains]}"
        )
    assert after["reward"] - before["reward"] > 2e-4
    assert sum(g > 0 for g in gains) >= 5
