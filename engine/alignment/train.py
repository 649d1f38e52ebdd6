"""Direct reward finetuning of the video model (VIST3A step 3, method.md §5).

Trained: a LoRA (rank 8, alpha 16) on the Wan transformer's self- and cross-attention projections;
the text encoder, the VAE and the stitched 3D decoder are frozen. Each step:

1. Flow-matching loss on a captioned clip: its normalised VAE latent x0, noise e, a shifted-uniform
   sigma (the sampler's flow shift), x_t = (1 − sigma) x0 + sigma e, target velocity e − x0, MSE of the
   DiT's prediction at timestep 1000·sigma with the caption's text embedding (orbit template applied).
2. A truncated differentiable rollout (``engine.alignment.rollout``) for a training prompt gives z0; it
   is decoded by the VAE (frames, resized to the 3D network's input size) and by the stitched decoder
   (Gaussians + cameras); the Gaussians are rendered at the predicted cameras of the views the reward
   asks for (``engine.render.rasterize``, differentiable); the reward module scores both
   (``engine.alignment.rewards``).
3. loss = fm_weight · L_fm − reward_weight · r, averaged over the step's ``batch_size`` samples (each a
   clip, a prompt and a rollout); AdamW (lr 1e-4), gradient-norm clipping; EMA update of the LoRA factors.

Data-parallel (``engine.training.distributed``, under torchrun or accelerate launch): ``batch_size`` is the global
batch; every process takes its share of a step's samples, each drawn from its own seeded generator (clip,
noise, sigma, prompt, rollout plan, views), so N processes compute what one process computes with the same
``batch_size``. The LoRA model runs in DistributedDataParallel; rank 0 logs, evaluates and writes.

Outputs in ``out_dir``: ``align_config.json`` (``config``: these hyper-parameters; ``reward``: the reward's
``describe()``: preset, its settings such as the consistency choice, scorers and the names of the logged
terms), ``reward_log.jsonl`` (one record per step: losses, reward terms, the rollout's steps / gradient
steps / CFG, timings), ``eval_log.jsonl`` (held-out rewards), ``checkpoints/step_<n>/`` (resumable:
``lora.safetensors``, ``ema.safetensors``, ``state.pt`` with optimizer, step and RNG states, read with ``weights_only=True``), and the adapters as PEFT folders:
``adapter_ema/`` (for inference, what a bundle's ``lora`` names) and ``adapter/`` (the raw weights),
plus a ``vist3a.json`` bundle manifest that uses the base bundle's Wan model and decoder with
``adapter_ema`` — so ``python -m engine generate --model OUT_DIR`` runs the finetuned model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.alignment.lora import LoraEMA, add_video_lora, lora_parameters, save_adapter
from engine.alignment.rewards import RewardOutput, SceneReward
from engine.alignment.rollout import RolloutConfig, RolloutPlan, rollout, sample_plan
from engine.io.atomic import atomic_directory, atomic_write
from engine.pipeline.sampler import flow_scheduler
from engine.pipeline.settings import DEFAULT_NEGATIVE_PROMPT, ORBIT_PROMPT_TEMPLATE, ModelBundle
from engine.pipeline.vist3a import Vist3aPipeline
from engine.render import rasterize
from engine.training.checkpoints import (
    checkpoint_dir,
    latest_checkpoint,
    prune_checkpoints,
    restore_rng,
    rng_state,
    truncate_log,
)
from engine.training.distributed import DistributedContext, sample_generator

log = logging.getLogger(__name__)

CONFIG_FILE = "align_config.json"
LOG_FILE = "reward_log.jsonl"
EVAL_FILE = "eval_log.jsonl"
LORA_FILE = "lora.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
ADAPTER_DIR = "adapter"
EMA_ADAPTER_DIR = "adapter_ema"


@dataclass
class AlignConfig:
    """Hyper-parameters of a reward-finetuning run (defaults: method.md §5 and §6)."""

    preset: str = "paper"
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    ema_decay: float = 0.999
    num_frames: int = 13
    height: int = 512
    width: int = 512
    steps_range: tuple[int, int] = (10, 50)
    grad_steps: int = 2
    grad_last: bool = True
    cfg_range: tuple[float, float] = (4.0, 6.0)
    flow_shift: float = 5.0
    fm_weight: float = 1.0
    reward_weight: float = 1.0
    num_clips: int = 64
    data_seed: int = 0
    orbit_template: bool = True
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    near_plane: float = 0.1
    far_plane: float = 100.0
    eval_steps: int = 50
    eval_cfg: float = 5.0
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = 100
    eval_every: int = 0
    keep_checkpoints: int = 2
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps_range = tuple(self.steps_range)
        self.cfg_range = tuple(self.cfg_range)
        self.background = tuple(self.background)
        for name in (
            "steps",
            "batch_size",
            "lora_rank",
            "num_frames",
            "height",
            "width",
            "num_clips",
            "save_every",
            "eval_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.grad_clip <= 0 or self.fm_weight < 0 or self.reward_weight < 0:
            raise ValueError("lr and grad_clip must be > 0, fm_weight and reward_weight >= 0")
        if self.fm_weight == 0 and self.reward_weight == 0:
            raise ValueError("fm_weight and reward_weight are both 0: nothing to train")
        self.rollout_config()  # validates the rollout ranges

    def rollout_config(self) -> RolloutConfig:
        return RolloutConfig(
            steps_range=self.steps_range,
            grad_steps=self.grad_steps,
            grad_last=self.grad_last,
            cfg_range=self.cfg_range,
            flow_shift=self.flow_shift,
        )


def shifted_sigma(u: Tensor, shift: float) -> Tensor:
    """The sampler's time shift applied to u in [0, 1]: shift·u / (1 + (shift − 1)·u)."""
    return shift * u / (1 + (shift - 1) * u)


class SyntheticCaptionedLatents:
    """Captioned clips of ``engine.data`` as (normalised VAE latent, caption), encoded once and cached."""

    def __init__(self, pipeline: Vist3aPipeline, num_clips: int, seed: int, num_frames: int, height: int, width: int):
        from engine.data.clips import SyntheticClipDataset
        from engine.stitching.vae import WanVAEAdapter

        self.dataset = SyntheticClipDataset(num_clips, seed, num_frames=num_frames, height=height, width=width)
        self.vae = WanVAEAdapter(pipeline.vae)
        self.device = pipeline.device
        self._cache: dict[int, tuple[Tensor, str]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def caption(self, index: int) -> str:
        return self.item(index)[1]

    @torch.no_grad()
    def item(self, index: int) -> tuple[Tensor, str]:
        if index not in self._cache:
            clip = self.dataset[index]
            frames = clip.frames.permute(0, 3, 1, 2)[None]  # (1, T, 3, H, W)
            latent = self.vae.encode(frames, normalized=True).to(self.device)
            self._cache[index] = (latent, clip.caption)
        return self._cache[index]


class AlignmentTrainer:
    """Owns the LoRA-wrapped video model, the reward, the optimizer and the EMA.

    Args:
        config: hyper-parameters.
        pipeline: a loaded ``Vist3aPipeline`` whose decoder is a ``StitchedSceneDecoder`` producing
            Gaussians (its transformer is wrapped with the LoRA in place).
        reward: a ``SceneReward`` (``engine.alignment.rewards.build_reward`` for the presets).
        prompts: training prompts for the rollouts (default: the captions of the clips).
        heldout_prompts: prompts for ``evaluate`` (default: captions of clips from another seed).
        base_bundle: the bundle the pipeline was loaded from; with ``out_dir`` a bundle manifest for
            the finetuned model is written next to the adapters.
        out_dir: run folder; None keeps everything in memory.
        context: this process's place in a data-parallel run (default: a single process).
        fsdp: shard the transformer's frozen weights over the processes (FSDP2, one unit per block;
            see ``engine.training.distributed.shard_transformer``) instead of a full copy per process under DDP.
            Needs a data-parallel run, and when rollouts are trained, one number of sampler steps
            (``steps_range`` T1 == T2: every process must run as many transformer forwards); ValueError
            otherwise.
    """

    def __init__(
        self,
        config: AlignConfig,
        pipeline: Vist3aPipeline,
        reward: SceneReward,
        prompts: Optional[Sequence[str]] = None,
        heldout_prompts: Optional[Sequence[str]] = None,
        base_bundle: Optional[ModelBundle] = None,
        out_dir: Optional[Union[str, Path]] = None,
        context: Optional[DistributedContext] = None,
        fsdp: bool = False,
    ):
        from engine.pipeline.decoders import StitchedSceneDecoder

        if not isinstance(pipeline.decoder, StitchedSceneDecoder):
            raise TypeError(
                f"reward finetuning renders the stitched decoder's Gaussians; the pipeline's decoder is "
                f"{type(pipeline.decoder).__name__}, not a StitchedSceneDecoder"
            )
        if pipeline.decoder.decoder.model_type != "anysplat":
            raise ValueError("reward finetuning needs a Gaussian (AnySplat) stitched decoder, not a pointmap one")
        if pipeline.runtime.cpu_offload:
            raise ValueError("reward finetuning keeps every model on the device: turn cpu_offload off")
        self.config = config
        self.context = context or DistributedContext()
        self.fsdp = fsdp
        if fsdp and not self.context.is_distributed:
            raise ValueError(
                "FSDP shards the transformer over the processes of a torchrun / accelerate launch; "
                "this run has a single process"
            )
        if fsdp and config.reward_weight and config.steps_range[0] != config.steps_range[1]:
            raise ValueError(
                f"with FSDP every process must run as many transformer forwards per step: give one number of "
                f"sampler steps (rollout steps {config.steps_range[0]} {config.steps_range[0]}), not the "
                f"range {config.steps_range[0]}-{config.steps_range[1]}"
            )
        self.local_samples = self.context.local_indices(config.batch_size)
        self.pipe = pipeline
        self.device = pipeline.device
        self.reward = reward.to(self.device)
        self.out_dir = None if out_dir is None else Path(out_dir)
        if base_bundle is not None and base_bundle.lora is not None:
            raise ValueError(
                f"the base bundle {base_bundle.name!r} already applies a LoRA ({base_bundle.lora}); reward "
                "finetuning trains a new LoRA on the plain Wan model: use a bundle without 'lora'"
            )
        self.base_bundle = base_bundle
        torch.manual_seed(config.seed)

        self.model = add_video_lora(pipeline.transformer, config.lora_rank, config.lora_alpha)
        self.model.train()
        pipeline.transformer = self.model  # evaluation and generation go through the LoRA model
        if config.gradient_checkpointing:
            self.model.base_model.model.enable_gradient_checkpointing()
            pipeline.decoder.decoder.set_gradient_checkpointing(True)
        self.trainable = lora_parameters(self.model)
        if fsdp:  # the frozen weights sharded, the LoRA weights whole; their gradients averaged by hand
            from engine.training.distributed import shard_transformer

            inner = shard_transformer(self.model, self.trainable.values())
            frozen = [p for p in inner.parameters() if not p.requires_grad]
            log.info(
                "FSDP: the transformer's frozen weights are sharded over %d processes; this one holds %d of %d values",
                self.context.world_size,
                sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in frozen),
                sum(p.numel() for p in frozen),
            )
            self.ddp_model = self.model
        else:
            self.ddp_model = self.context.wrap(self.model)  # every training forward goes through it
        self.optimizer = torch.optim.AdamW(self.trainable.values(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = LoraEMA(self.trainable, decay=config.ema_decay)
        self.rollout_config = config.rollout_config()
        self.clips = SyntheticCaptionedLatents(
            pipeline, config.num_clips, config.data_seed, config.num_frames, config.height, config.width
        )
        self.prompts = list(prompts) if prompts else None
        self.heldout_prompts = list(heldout_prompts) if heldout_prompts else None
        self.step = 0
        if self.writes_files:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.out_dir / CONFIG_FILE, "w") as f:
                f.write(json.dumps({"config": asdict(config), "reward": reward.describe()}, indent=1))

    @property
    def writes_files(self) -> bool:
        """True on the process that writes the run folder (rank 0 of a data-parallel run)."""
        return self.out_dir is not None and self.context.is_main

    # ------------------------------------------------------------------------------------------ pieces
    def wrap(self, prompt: str) -> str:
        return ORBIT_PROMPT_TEMPLATE.format(prompt=prompt) if self.config.orbit_template else prompt

    def latent_shape(self) -> tuple[int, int, int, int, int]:
        c = self.config
        t = self.pipe.temporal_factor
        s = self.pipe.spatial_factor
        if (c.num_frames - 1) % t or c.height % s or c.width % s:
            raise ValueError(f"num_frames must be {t}k+1 and height/width multiples of {s} for this VAE")
        return (1, self.pipe.latent_channels, (c.num_frames - 1) // t + 1, c.height // s, c.width // s)

    def training_prompt(self, generator: torch.Generator) -> str:
        if self.prompts:
            return self.prompts[int(torch.randint(len(self.prompts), (1,), generator=generator))]
        return self.clips.caption(int(torch.randint(len(self.clips), (1,), generator=generator)))

    def flow_matching_loss(self, generator: torch.Generator, index: Optional[int] = None) -> Tensor:
        """MSE between the DiT's velocity and e − x0 on one captioned clip (see the module docstring)."""
        if index is None:
            index = int(torch.randint(len(self.clips), (1,), generator=generator))
        x0, caption = self.clips.item(index)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        sigma = shifted_sigma(torch.rand((), generator=generator), self.config.flow_shift).to(self.device)
        noisy = (1 - sigma) * x0 + sigma * noise
        text = self.pipe.encode_text(self.wrap(caption))
        timestep = (sigma * 1000.0).expand(x0.shape[0])
        velocity = self.ddp_model(
            hidden_states=noisy.to(self.pipe.dtype), timestep=timestep, encoder_hidden_states=text, return_dict=False
        )[0]
        return F.mse_loss(velocity.float(), noise - x0)

    def score_latent(self, latent: Tensor, prompt: str, generator: torch.Generator) -> tuple[RewardOutput, dict]:
        """Decodes z0 both ways, renders the reward's views and scores them (keeps the graph).

        Returns the reward output and the image tensors (decoded, rendered; (N, 3, H, W)) for inspection.
        """
        pipe = self.pipe
        vae_latent = pipe.denormalize_latent(latent.float())
        frames = pipe.decode_video(vae_latent).clamp(0, 1)[0]  # (T, 3, H, W)
        num_views = frames.shape[0]
        # the stitched decoder's differentiable decode, in the network's frame, one Gaussian per pixel
        param = next(pipe.decoder.decoder.parameters())
        decoded_scene = pipe.decoder.decode(
            vae_latent,
            frames[None],
            voxel_merge=False,
            relative_to_first=False,
            clamp_frames=True,
            input_dtype=param.dtype,
        )
        network_frames = decoded_scene.frames
        render_views, decoded_views = self.reward.select_views(num_views, generator)
        rendered = rasterize(
            decoded_scene.gaussians,
            decoded_scene.cameras[torch.tensor(render_views)],
            background=self.config.background,
            near_plane=self.config.near_plane,
            far_plane=self.config.far_plane,
        ).rgb
        rendered = rendered.permute(0, 3, 1, 2).clamp(0, 1)
        decoded = network_frames[torch.tensor(decoded_views)]
        output = self.reward(decoded, rendered, prompt)
        return output, {"decoded": decoded, "rendered": rendered, "render_views": render_views}

    def reward_rollout(self, prompt: str, generator: torch.Generator) -> tuple[RewardOutput, RolloutPlan]:
        """One truncated rollout for ``prompt`` and its reward (with the graph of the gradient steps)."""
        plan = sample_plan(self.rollout_config, generator)
        scheduler = flow_scheduler(self.pipe.scheduler_config, plan.num_steps, self.config.flow_shift, self.device)
        noise = torch.randn(self.latent_shape(), generator=generator).to(self.device)
        prompt_embeds = self.pipe.encode_text(self.wrap(prompt))
        negative = self.pipe.encode_text(self.config.negative_prompt)
        latent = rollout(self.ddp_model, scheduler, noise, prompt_embeds, negative, plan, dtype=self.pipe.dtype)
        output, _ = self.score_latent(latent, prompt, generator)
        return output, plan

    # ------------------------------------------------------------------------------------------ training
    def train_step(self) -> dict:
        """One optimisation step over this process's share of the global batch; returns its log record
        (losses and rewards: means over the global batch; ``rollouts``: each sample's plan, in order)."""
        c = self.config
        start = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        weight = 1.0 / len(self.local_samples)  # DDP then averages the processes' (equal-sized) shares
        totals = {"loss": 0.0, "fm_loss": 0.0, "reward": 0.0}
        terms: dict[str, float] = {}
        rollouts = []
        parts = [part for part in ("fm", "reward") if getattr(c, f"{part}_weight")]
        remaining = len(parts) * len(self.local_samples)
        for index in self.local_samples:
            generator = sample_generator(c.seed, self.step, index)  # all of this sample's draws
            for part in parts:
                remaining -= 1
                # gradients are exchanged once per step, in the last backward
                skip_sync = remaining > 0 and self.context.is_distributed and not self.fsdp
                with self.ddp_model.no_sync() if skip_sync else contextlib.nullcontext():
                    if part == "fm":
                        fm = self.flow_matching_loss(generator)
                        (weight * c.fm_weight * fm).backward()
                        totals["fm_loss"] += weight * float(fm.detach())
                        totals["loss"] += weight * c.fm_weight * float(fm.detach())
                    else:
                        output, plan = self.reward_rollout(self.training_prompt(generator), generator)
                        (-weight * c.reward_weight * output.reward).backward()
                        totals["reward"] += weight * float(output.reward.detach())
                        totals["loss"] -= weight * c.reward_weight * float(output.reward.detach())
                        for name, value in output.terms.items():
                            terms[name] = terms.get(name, 0.0) + weight * float(value)
                        rollouts.append(plan.to_dict())
        if self.fsdp:
            self.context.average_gradients_(self.trainable.values())
        if not math.isfinite(totals["loss"]):
            raise FloatingPointError(f"non-finite loss at step {self.step + 1}: {totals}, {terms}")
        grads = [p.grad for p in self.trainable.values() if p.grad is not None]
        if not grads:
            raise RuntimeError("no gradient reached the LoRA parameters")
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), c.grad_clip)
        self.optimizer.step()
        ema_decay = self.ema.update(self.trainable)
        self.step += 1
        averaged = self.context.mean({**totals, **{f"terms.{k}": v for k, v in terms.items()}})
        record: dict = {"step": self.step, "loss": averaged["loss"]}
        if c.fm_weight:
            record["fm_loss"] = averaged["fm_loss"]
        if c.reward_weight:
            record.update(
                reward=averaged["reward"],
                terms={k.removeprefix("terms."): v for k, v in averaged.items() if k.startswith("terms.")},
                rollouts=[plan for share in self.context.gather(rollouts) for plan in share],
            )
        record.update(
            lr=self.optimizer.param_groups[0]["lr"],
            grad_norm=float(grad_norm),
            ema_decay=ema_decay,
            seconds=round(time.perf_counter() - start, 3),
        )
        return record

    def heldout(self) -> list[str]:
        if self.heldout_prompts:
            return self.heldout_prompts
        from engine.data.clips import SyntheticClipDataset
        from engine.data.scenes import generate_scene

        # the captions of clips of another seed (only the scenes are built: no frames are rendered)
        dataset = SyntheticClipDataset(4, self.config.data_seed + 1_000_003)
        return [generate_scene(dataset.item_seed(i)).caption for i in range(len(dataset))]

    @torch.no_grad()
    def evaluate(
        self, prompts: Optional[Sequence[str]] = None, seeds: Sequence[int] = (0,), use_ema: bool = True
    ) -> dict:
        """Mean reward of full (no-gradient) rollouts at fixed steps, CFG, noise and views.

        The same prompts and seeds give the same rollouts at every call, so evaluations along a run
        are comparable. ``use_ema``: evaluate the EMA weights (what inference uses).
        """
        prompts = list(prompts) if prompts else self.heldout()
        was_training = self.model.training
        self.model.eval()
        plan = RolloutPlan(num_steps=self.config.eval_steps, grad_indices=(), guidance_scale=self.config.eval_cfg)
        negative = self.pipe.encode_text(self.config.negative_prompt)
        scores = []
        context = self.ema.applied(self.trainable) if use_ema else contextlib.nullcontext()
        with context:
            for prompt in prompts:
                for seed in seeds:
                    generator = torch.Generator().manual_seed(int(seed))
                    noise = torch.randn(self.latent_shape(), generator=generator).to(self.device)
                    scheduler = flow_scheduler(
                        self.pipe.scheduler_config, plan.num_steps, self.config.flow_shift, self.device
                    )
                    text = self.pipe.encode_text(self.wrap(prompt))
                    latent = rollout(self.model, scheduler, noise, text, negative, plan, dtype=self.pipe.dtype)
                    output, _ = self.score_latent(latent, prompt, generator)
                    scores.append(float(output.reward))
        self.model.train(was_training)
        return {"step": self.step, "reward": sum(scores) / len(scores), "rewards": scores, "ema": use_ema}

    def train(self, steps: Optional[int] = None, progress: bool = True) -> list[dict]:
        """Runs until ``steps`` (default ``config.steps``) are done; logs, evaluates, checkpoints."""
        from tqdm import tqdm

        total = self.config.steps if steps is None else steps
        records = []
        bar = tqdm(total=total, initial=self.step, disable=not progress, desc="reward finetune")
        while self.step < total:
            record = self.train_step()
            records.append(record)
            bar.update(1)
            postfix = {"loss": f"{record['loss']:.4g}"}
            if "reward" in record:
                postfix.update(reward=f"{record['reward']:.4g}", T=record["rollouts"][0]["num_steps"])
            bar.set_postfix(postfix)
            if self.writes_files:
                with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            # with FSDP every process takes part in the evaluation's forwards; rank 0 writes
            evaluates = self.context.is_main or self.fsdp
            if self.config.eval_every and self.step % self.config.eval_every == 0 and evaluates:
                result = self.evaluate()
                log.info("step %d: held-out reward %.5f", self.step, result["reward"])
                if self.writes_files:
                    with open(self.out_dir / EVAL_FILE, "a", encoding="utf-8") as f:
                        f.write(json.dumps(result) + "\n")
            if self.writes_files and (self.step % self.config.save_every == 0 or self.step == total):
                self.save_checkpoint()
        bar.close()
        return records

    # ------------------------------------------------------------------------------------------ files
    def save_checkpoint(self) -> Path:
        """Writes ``checkpoints/step_<n>`` (resumable) and refreshes the adapters and bundle manifest."""
        from safetensors.torch import save_file

        if self.out_dir is None:
            raise ValueError("no out_dir to save into")
        directory = checkpoint_dir(self.out_dir, self.step)
        directory.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "ema_num_updates": self.ema.num_updates,
            "rng": rng_state(),
        }
        with atomic_directory(directory, replace=True) as temp:
            save_file({n: p.detach().contiguous().cpu() for n, p in self.trainable.items()}, str(temp / LORA_FILE))
            save_file({n: t.contiguous().cpu() for n, t in self.ema.shadow.items()}, str(temp / EMA_FILE))
            torch.save(state, temp / STATE_FILE)
        prune_checkpoints(directory.parent, self.config.keep_checkpoints)
        self.export()
        return directory

    def export(self) -> Path:
        """Writes ``adapter_ema/`` and ``adapter/`` (PEFT folders) and, with a base bundle, ``vist3a.json``."""
        if self.out_dir is None:
            raise ValueError("no out_dir to export into")
        save_adapter(self.model, self.out_dir / EMA_ADAPTER_DIR, ema=self.ema)
        save_adapter(self.model, self.out_dir / ADAPTER_DIR)
        if self.base_bundle is not None:
            write_finetuned_bundle(self.base_bundle, self.out_dir, EMA_ADAPTER_DIR, self.step)
        return self.out_dir / EMA_ADAPTER_DIR

    def latest_checkpoint(self) -> Optional[Path]:
        return latest_checkpoint(self.out_dir)

    def load_checkpoint(self, directory: Union[str, Path]) -> None:
        """Restores LoRA, EMA, optimizer, step and RNG states (strict)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (LORA_FILE, EMA_FILE, STATE_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a reward-finetuning checkpoint: {name} is missing")
        weights = load_file(str(directory / LORA_FILE))
        if weights.keys() != self.trainable.keys():
            raise ValueError(f"{directory} does not fit this run: its LoRA tensors differ (rank, model?)")
        with torch.no_grad():
            for name, param in self.trainable.items():
                if weights[name].shape != param.shape:
                    raise ValueError(
                        f"{directory}: {name} has shape {tuple(weights[name].shape)}, expected {tuple(param.shape)}"
                    )
                param.copy_(weights[name])
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        self.ema.load_state_dict(
            {"shadow": load_file(str(directory / EMA_FILE)), "num_updates": state["ema_num_updates"]}
        )
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        restore_rng(state["rng"])

    def truncate_log(self) -> int:
        """Drops log records of steps after ``self.step`` (a resumed run redoes them); returns how many."""
        return truncate_log(None if self.out_dir is None else self.out_dir / LOG_FILE, self.step)


def write_finetuned_bundle(base: ModelBundle, out_dir: Path, adapter: str, steps: int) -> Path:
    """A bundle manifest in ``out_dir``: the base bundle's Wan model, decoder and defaults, our adapter as LoRA.

    Local parts of the base bundle are referenced by absolute path.
    """

    bundle = ModelBundle(
        root=out_dir,
        name=f"{base.name}-reward-finetuned",
        wan=base.portable_reference(base.wan),
        wan_revision=base.wan_revision,
        decoder_kind=base.decoder_kind,
        decoder_checkpoint=base.portable_reference(base.decoder_checkpoint),
        lora=adapter,
        extra={**base.extra, "reward_finetuning": {"steps": steps, "base_bundle": str(base.root)}},
        defaults=base.defaults,  # the finetuned model works at the base model's sizes
    )
    if "anysplat" in bundle.extra:
        bundle.extra["anysplat"] = base.portable_reference(bundle.extra["anysplat"])
    with atomic_write(out_dir / "vist3a.json", "w") as f:
        f.write(json.dumps(bundle.to_manifest(), indent=2) + "\n")
    return out_dir / "vist3a.json"
