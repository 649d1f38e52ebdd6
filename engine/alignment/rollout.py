"""Truncated differentiable sampler rollouts (DRTune-style, method.md §5).

A rollout runs the whole sampler from noise to the final latent z0, as generation does, with these
changes so that a reward on z0 can be backpropagated into the video model at an affordable cost:

* the number of sampler steps is drawn from [T1, T2] (default 10..50) for every rollout;
* the DiT's input is detached at every step, so no gradient flows through the DiT's input path;
* the DiT runs with gradients enabled only at K random steps (default 2), plus always the last step
  (``grad_last``, as the released code does); at every other step it runs under ``no_grad``;
* the solver updates (UniPC, flow matching) keep the graph, so the gradient of z0 reaches the
  velocities of the selected steps through the remaining solver steps;
* classifier-free guidance with a scale drawn from a range (default [4, 6]); the conditional and
  unconditional passes share one batched DiT call.

The loop and the guidance are generation's own (``engine.pipeline.sampler.denoise``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from engine.pipeline.sampler import denoise


@dataclass(frozen=True)
class RolloutConfig:
    """How rollouts are drawn. Ranges are inclusive."""

    steps_range: tuple[int, int] = (10, 50)
    grad_steps: int = 2
    grad_last: bool = True
    cfg_range: tuple[float, float] = (4.0, 6.0)
    flow_shift: float = 5.0

    def __post_init__(self) -> None:
        low, high = self.steps_range
        if not (isinstance(low, int) and isinstance(high, int)) or not 1 <= low <= high:
            raise ValueError(f"steps_range must be (T1, T2) integers with 1 <= T1 <= T2, got {self.steps_range}")
        if self.grad_steps < 0:
            raise ValueError(f"grad_steps must be >= 0, got {self.grad_steps}")
        if self.grad_steps == 0 and not self.grad_last:
            raise ValueError("a rollout needs at least one step with gradients: grad_steps >= 1 or grad_last")
        if self.grad_steps + int(self.grad_last) > low:
            raise ValueError(
                f"grad_steps ({self.grad_steps}) + last step ({int(self.grad_last)}) exceeds the smallest "
                f"number of sampler steps T1 = {low}"
            )
        cfg_low, cfg_high = self.cfg_range
        if not 1.0 <= cfg_low <= cfg_high:
            raise ValueError(f"cfg_range must be (low, high) with 1 <= low <= high, got {self.cfg_range}")
        if self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be > 0, got {self.flow_shift}")


@dataclass(frozen=True)
class RolloutPlan:
    """One drawn rollout: its number of steps, the step indices with gradients, the guidance scale."""

    num_steps: int
    grad_indices: tuple[int, ...]
    guidance_scale: float

    def to_dict(self) -> dict:
        return {"num_steps": self.num_steps, "grad_steps": list(self.grad_indices), "cfg": self.guidance_scale}


def sample_plan(config: RolloutConfig, generator: torch.Generator) -> RolloutPlan:
    """Draws the number of steps, the gradient steps and the CFG scale from ``generator``."""
    low, high = config.steps_range
    num_steps = int(torch.randint(low, high + 1, (1,), generator=generator))
    pool = num_steps - 1 if config.grad_last else num_steps  # the last step is added separately
    chosen = torch.randperm(pool, generator=generator)[: config.grad_steps].tolist()
    if config.grad_last:
        chosen.append(num_steps - 1)
    cfg_low, cfg_high = config.cfg_range
    scale = cfg_low + (cfg_high - cfg_low) * float(torch.rand((), generator=generator))
    return RolloutPlan(num_steps=num_steps, grad_indices=tuple(sorted(chosen)), guidance_scale=scale)


def rollout(
    transformer: nn.Module,
    scheduler,
    noise: Tensor,
    prompt_embeds: Tensor,
    negative_embeds: Optional[Tensor],
    plan: RolloutPlan,
    *,
    dtype: torch.dtype = torch.float32,
    on_step: Optional[Callable[[int, bool], None]] = None,
) -> Tensor:
    """Samples z0 from ``noise`` following ``plan``; the result carries the graph of the gradient steps.

    Args:
        transformer: the video DiT (with its LoRA).
        scheduler: a fresh flow-matching scheduler with ``plan.num_steps`` timesteps set
            (``engine.pipeline.sampler.flow_scheduler``).
        noise: (B, C, T_lat, h, w) starting noise.
        prompt_embeds, negative_embeds: (1, L, D) text embeddings (negative None: no guidance).
        plan: from :func:`sample_plan`.
        dtype: the DiT's input dtype.
        on_step: called with (step index, gradients enabled) before each DiT call.
    Returns:
        (B, C, T_lat, h, w) float32 latent in the sampler's (normalised) space.
    """
    if len(scheduler.timesteps) != plan.num_steps:
        raise ValueError(f"the scheduler has {len(scheduler.timesteps)} timesteps, the plan {plan.num_steps}")
    return denoise(
        transformer,
        scheduler,
        noise,
        prompt_embeds,
        negative_embeds,
        plan.guidance_scale,
        dtype=dtype,
        grad_steps=plan.grad_indices,
        batched_guidance=True,
        on_step_start=on_step,
    )
