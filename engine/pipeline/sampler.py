"""The flow-matching sampler shared by generation and by the reward rollouts of ``align train``.

- ``flow_scheduler`` / ``official_flow_schedule``: diffusers' UniPC scheduler in flow-matching mode, with the
  installed diffusers' sigmas or those of diffusers 0.33.1 (the released VIST3A inference);
- ``guided_velocity``: the DiT's velocity with classifier-free guidance ``u + s (c - u)``, combined in the
  DiT's output dtype and returned as float32 (as diffusers' ``WanPipeline`` does);
- ``denoise``: the sampler loop from noise to the final latent. Generation runs it under ``no_grad`` with
  two DiT calls per guided step (as the official inference); rollouts detach the DiT input at every step,
  enable gradients at chosen steps only and batch the conditional and unconditional passes into one call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn


def official_flow_schedule(
    num_steps: int, flow_shift: float, num_train_timesteps: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """diffusers 0.33.1's UniPC flow schedule (``use_flow_sigmas=True``, no dynamic shifting).

    Source: ``UniPCMultistepScheduler.set_timesteps`` of diffusers 0.33.1 (what the released VIST3A was
    sampled with): ``alphas = linspace(1, 1/N, n + 1)``, ``sigmas = 1 - alphas``, shifted by
    ``s·σ / (1 + (s - 1)·σ)``, reversed and the last (zero) dropped; timesteps ``int64(σ·N)`` from the
    float64 sigmas; the final sigma 0 appended (``final_sigmas_type="zero"``) and the sigmas stored as
    float32. Later releases take ``linspace(1, 1/N, n + 1)[:-1]`` instead, one step finer at the end: at
    50 steps and shift 5 the last timesteps are 241/172/92 here and 244/175/96 there.

    Returns (sigmas (n + 1,) float32, timesteps (n,) int64).
    """
    alphas = np.linspace(1, 1 / num_train_timesteps, num_steps + 1)
    sigmas = 1.0 - alphas
    sigmas = np.flip(flow_shift * sigmas / (1 + (flow_shift - 1) * sigmas))[:-1].copy()
    timesteps = (sigmas * num_train_timesteps).astype(np.int64)
    return np.concatenate([sigmas, [0.0]]).astype(np.float32), timesteps


def flow_scheduler(
    scheduler_config: dict, num_steps: int, flow_shift: float, device: torch.device, schedule: str = "installed"
):
    """A fresh diffusers UniPC scheduler in flow-matching mode, its timesteps set for ``num_steps``.

    ``scheduler_config`` is the Wan pipeline's scheduler config (keys starting with ``_`` are ignored;
    ``{}``: diffusers' defaults, as the official inference builds it). ``schedule``: "installed" keeps the
    installed diffusers' sigmas, "diffusers-0.33.1" replaces them by ``official_flow_sigmas``.

    The step index starts at 0 explicitly (``set_begin_index``): diffusers otherwise finds it by looking
    the first timestep up in the schedule and, when the first two timesteps coincide (a large shift with
    many steps, e.g. 11 steps at shift 100, 201 at shift 5), starts at the second and runs out of sigmas.
    """
    from diffusers import UniPCMultistepScheduler

    if schedule not in ("installed", "diffusers-0.33.1"):
        raise ValueError(f"schedule must be 'installed' or 'diffusers-0.33.1', got {schedule!r}")
    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    config.update(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=float(flow_shift))
    scheduler = UniPCMultistepScheduler.from_config(config)
    scheduler.set_timesteps(int(num_steps), device=device)
    if schedule == "diffusers-0.33.1":
        sigmas, timesteps = official_flow_schedule(
            int(num_steps), float(flow_shift), scheduler.config.num_train_timesteps
        )
        scheduler.sigmas = torch.from_numpy(sigmas)
        scheduler.timesteps = torch.from_numpy(timesteps).to(device=device)
    scheduler.set_begin_index(0)
    return scheduler


def guided_velocity(
    transformer: nn.Module,
    latents: Tensor,
    timestep: Tensor,
    prompt_embeds: Tensor,
    negative_embeds: Optional[Tensor],
    guidance_scale: float,
    *,
    batched: bool = False,
) -> Tensor:
    """The velocity at ``latents`` (B, C, T_lat, h, w), with classifier-free guidance ``u + s (c - u)``.

    ``negative_embeds`` None or a scale of 1 give the conditional velocity alone (one DiT pass).
    ``batched``: the conditional and unconditional passes share one DiT call of batch 2B (else two calls).
    Returns float32.
    """
    batch = latents.shape[0]

    def run(hidden: Tensor, text: Tensor) -> Tensor:
        t = timestep.expand(hidden.shape[0])
        return transformer(hidden_states=hidden, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

    if negative_embeds is None or guidance_scale == 1.0:
        return run(latents, prompt_embeds).float()
    if batched:
        text = torch.cat([negative_embeds.expand(batch, -1, -1), prompt_embeds.expand(batch, -1, -1)])
        uncond, cond = run(torch.cat([latents, latents]), text).chunk(2)
    else:
        cond, uncond = run(latents, prompt_embeds), run(latents, negative_embeds)
    return (uncond + guidance_scale * (cond - uncond)).float()


def denoise(
    transformer: nn.Module,
    scheduler,
    noise: Tensor,
    prompt_embeds: Tensor,
    negative_embeds: Optional[Tensor],
    guidance_scale: float,
    *,
    dtype: torch.dtype = torch.float32,
    grad_steps: Collection[int] = (),
    batched_guidance: bool = False,
    on_step_start: Optional[Callable[[int, bool], None]] = None,
    on_step_end: Optional[Callable[[int, Tensor, Tensor], None]] = None,
) -> Tensor:
    """Runs the sampler over ``scheduler.timesteps`` from ``noise``; returns the final latent (float32).

    Args:
        transformer: the video DiT.
        scheduler: a fresh scheduler with its timesteps set (:func:`flow_scheduler`).
        noise: (B, C, T_lat, h, w) starting noise.
        prompt_embeds, negative_embeds: (1, L, D) text embeddings (negative None: no guidance).
        guidance_scale: the CFG scale.
        dtype: the DiT's input dtype.
        grad_steps: step indices at which the DiT runs with gradients enabled; at every other step it
            runs under ``no_grad``. The DiT's input is detached at every step, the solver updates keep
            the graph (so the gradient of the result reaches the velocities of these steps).
        batched_guidance: see :func:`guided_velocity`.
        on_step_start: called with (step index, gradients enabled) before each DiT call (may raise to stop).
        on_step_end: called with (step index, latent before the step, velocity) after each solver step.
    Returns:
        (B, C, T_lat, h, w) float32 latent in the sampler's (normalised) space.
    """
    grad_steps = set(grad_steps)
    latents = noise.float()
    for index, timestep in enumerate(scheduler.timesteps):
        with_grad = index in grad_steps
        if on_step_start is not None:
            on_step_start(index, with_grad)
        model_input = latents.detach().to(dtype)
        with torch.set_grad_enabled(with_grad):
            velocity = guided_velocity(
                transformer,
                model_input,
                timestep,
                prompt_embeds,
                negative_embeds,
                guidance_scale,
                batched=batched_guidance,
            )
        previous = latents
        latents = scheduler.step(velocity, timestep, latents, return_dict=False)[0]
        if on_step_end is not None:
            on_step_end(index, previous, velocity)
    return latents
