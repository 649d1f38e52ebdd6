"""Truncated differentiable rollouts: sampling ranges, and where gradients flow (checked with hooks)."""

from __future__ import annotations

import pytest
import torch

from engine.alignment.lora import add_video_lora, lora_parameters
from engine.alignment.rollout import RolloutConfig, RolloutPlan, rollout, sample_plan
from engine.pipeline.sampler import flow_scheduler
from engine.testing.tiny import TEXT_DIM, build_wan_pipeline


def test_plans_stay_in_their_ranges_and_cover_them():
    config = RolloutConfig(steps_range=(10, 50), grad_steps=2, grad_last=True, cfg_range=(4.0, 6.0))
    generator = torch.Generator().manual_seed(0)
    plans = [sample_plan(config, generator) for _ in range(2000)]
    steps = [p.num_steps for p in plans]
    assert min(steps) == 10 and max(steps) == 50 and len(set(steps)) == 41
    for plan in plans:
        assert len(plan.grad_indices) == 3 and len(set(plan.grad_indices)) == 3
        assert plan.grad_indices[-1] == plan.num_steps - 1  # the last step always
        assert all(0 <= i < plan.num_steps - 1 for i in plan.grad_indices[:-1])
        assert 4.0 <= plan.guidance_scale <= 6.0
    scales = torch.tensor([p.guidance_scale for p in plans])
    assert scales.min() < 4.05 and scales.max() > 5.95
    # the random steps are spread over the whole rollout, not stuck at its start or end
    first = torch.tensor([p.grad_indices[0] / p.num_steps for p in plans])
    assert first.min() < 0.05 and first.max() > 0.6


def test_plans_without_last_step_and_determinism():
    config = RolloutConfig(steps_range=(3, 3), grad_steps=3, grad_last=False)
    plan = sample_plan(config, torch.Generator().manual_seed(1))
    assert plan.grad_indices == (0, 1, 2)
    a = [sample_plan(RolloutConfig(), torch.Generator().manual_seed(7)) for _ in range(2)]
    assert a[0] == a[1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps_range": (0, 5)}, "steps_range"),
        ({"steps_range": (8, 5)}, "steps_range"),
        ({"grad_steps": -1}, "grad_steps"),
        ({"grad_steps": 0, "grad_last": False}, "at least one step"),
        ({"steps_range": (2, 5), "grad_steps": 2}, "exceeds"),
        ({"cfg_range": (6.0, 4.0)}, "cfg_range"),
        ({"flow_shift": 0.0}, "flow_shift"),
    ],
)
def test_bad_rollout_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RolloutConfig(**kwargs)


@pytest.fixture(scope="module")
def lora_transformer():
    torch.manual_seed(0)
    pipe = build_wan_pipeline()
    model = add_video_lora(pipe.transformer)
    with torch.no_grad():
        for name, param in lora_parameters(model).items():
            if "lora_B" in name:  # zero at initialisation; make the LoRA act
                param.normal_(0.0, 0.2)
    return pipe, model


def test_gradients_reach_only_lora_and_only_from_the_selected_steps(lora_transformer):
    pipe, model = lora_transformer
    plan = RolloutPlan(num_steps=6, grad_indices=(1, 3, 5), guidance_scale=5.0)
    scheduler = flow_scheduler(dict(pipe.scheduler.config), plan.num_steps, 5.0, torch.device("cpu"))
    noise = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 16, TEXT_DIM)
    negative = torch.randn(1, 16, TEXT_DIM)

    calls: list[dict] = []
    gradients: dict[int, float] = {}

    def record(module, args, kwargs, output):
        index = len(calls)
        calls.append(
            {
                "grad_enabled": torch.is_grad_enabled(),
                "input_requires_grad": kwargs["hidden_states"].requires_grad,
                "text_requires_grad": kwargs["encoder_hidden_states"].requires_grad,
                "output_requires_grad": output[0].requires_grad,
            }
        )
        if output[0].requires_grad:
            output[0].register_hook(lambda grad, index=index: gradients.__setitem__(index, float(grad.abs().sum())))

    handle = pipe.transformer.register_forward_hook(record, with_kwargs=True)
    try:
        model.zero_grad(set_to_none=True)
        latent = rollout(model, scheduler, noise, text, negative, plan)
        (latent * torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    finally:
        handle.remove()

    assert len(calls) == plan.num_steps  # one batched (uncond + cond) DiT call per step
    assert [i for i, c in enumerate(calls) if c["grad_enabled"]] == list(plan.grad_indices)
    assert [i for i, c in enumerate(calls) if c["output_requires_grad"]] == list(plan.grad_indices)
    assert not any(c["input_requires_grad"] or c["text_requires_grad"] for c in calls)  # detached DiT inputs
    # the gradient of z0 reaches each selected step's velocity, also the early ones (through the solver)
    assert sorted(gradients) == list(plan.grad_indices)
    assert all(value > 0 for value in gradients.values())
    lora = lora_parameters(model)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())
    others = [(n, p) for n, p in model.named_parameters() if n not in lora]
    assert others and all(not p.requires_grad and p.grad is None for _, p in others)


def test_gradient_is_truncated_to_the_selected_steps(lora_transformer):
    """The LoRA gradient equals the sum of what each selected step contributes alone."""
    pipe, model = lora_transformer
    noise = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    text = torch.randn(1, 16, TEXT_DIM)
    weights = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    lora = lora_parameters(model)

    def lora_grad(indices):
        model.zero_grad(set_to_none=True)
        plan = RolloutPlan(num_steps=5, grad_indices=indices, guidance_scale=1.0)
        scheduler = flow_scheduler(dict(pipe.scheduler.config), 5, 3.0, torch.device("cpu"))
        (rollout(model, scheduler, noise, text, None, plan) * weights).sum().backward()
        return torch.cat([p.grad.flatten() for p in lora.values()])

    both = lora_grad((1, 4))
    assert torch.allclose(both, lora_grad((1,)) + lora_grad((4,)), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(lora_grad((1,)), lora_grad((4,)))


def test_rollout_without_gradient_steps_matches_the_generation_sampler(lora_transformer):
    """With no gradient steps a rollout is exactly the plain CFG sampler of the pipeline."""
    pipe, model = lora_transformer
    noise = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    text, negative = torch.randn(1, 16, TEXT_DIM), torch.randn(1, 16, TEXT_DIM)
    scheduler = flow_scheduler(dict(pipe.scheduler.config), 4, 5.0, torch.device("cpu"))
    with torch.no_grad():
        ours = rollout(model, scheduler, noise, text, negative, RolloutPlan(4, (), 4.5))
        scheduler = flow_scheduler(dict(pipe.scheduler.config), 4, 5.0, torch.device("cpu"))
        latents = noise.clone()
        for timestep in scheduler.timesteps:
            t = timestep.expand(1)
            cond = model(hidden_states=latents, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
            uncond = model(hidden_states=latents, timestep=t, encoder_hidden_states=negative, return_dict=False)[0]
            latents = scheduler.step(uncond + 4.5 * (cond - uncond), timestep, latents, return_dict=False)[0]
    assert torch.allclose(ours, latents, atol=1e-5)
