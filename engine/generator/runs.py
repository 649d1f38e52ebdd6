"""The training loop shared by the generator's trainers: steps, logs, held-out evaluation, checkpoints.

A run folder holds::

    config.json            the run's settings (a resumed run must match them, except the step counts)
    train_log.jsonl        one record per logged step: {"step", "loss", "lr", "seconds", ...}
    eval_log.jsonl         one record per held-out evaluation: {"step", ...metrics}
    loss.png               the training loss (and the held-out metric) against the step
    checkpoints/step_<n>/  model.safetensors (float32), state.pt (optimizer, scheduler, RNG, step)

``--resume`` continues from the newest checkpoint exactly: the same batches and noise follow, because
every random draw comes from one generator whose state is in the checkpoint; log records of steps after
the checkpoint (redone) are dropped first.

Data-parallel runs (torchrun / accelerate launch, :mod:`engine.training.distributed`): every process keeps the same
generator and draws the whole global batch (indices, crops, noise: cheap), then computes only its share
(``context.local_indices``); the training forward goes through DDP, which averages the gradients. So a
run draws the same samples as a 1-process run with the same ``batch_size`` (and a 1-process run draws
exactly what it drew before data parallelism existed), logged losses are means over all processes, and
only rank 0 writes the run folder. Checkpoints are unchanged, so a run resumes on any number of processes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Optional

import torch

from engine.io.atomic import atomic_directory, atomic_write
from engine.training.checkpoints import (
    checkpoint_dir,
    latest_checkpoint,
    prune_checkpoints,
    restore_rng,
    rng_state,
    truncate_log,
)
from engine.training.distributed import DistributedContext, Forward

CONFIG_FILE = "config.json"
TRAIN_LOG = "train_log.jsonl"
EVAL_LOG = "eval_log.jsonl"
PLOT_FILE = "loss.png"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
# Settings that may change when a run is resumed (extending or re-pacing it).
RESUMABLE_CHANGES = {"steps", "eval_every", "save_every", "log_every", "keep_checkpoints"}


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class RunExistsError(RuntimeError):
    """The run folder already holds a run and ``--resume`` was not given."""


def _field_defaults(config) -> dict:
    """The default value of each field of the dataclass ``config`` that has one: a setting added to the
    engine after a run was started is absent from the run's config.json and counts as its default."""
    values = {}
    for item in fields(config):
        if item.default is not MISSING:
            values[item.name] = item.default
        elif item.default_factory is not MISSING:
            values[item.name] = item.default_factory()
    return values


class Trainer:
    """Base of the trainers: subclasses set ``self.model`` (the trained module), ``self.config`` (a
    dataclass with seed, steps, lr, warmup_steps, log_every, eval_every, save_every, keep_checkpoints,
    grad_clip, batch_size) and implement :meth:`loss` and :meth:`evaluate`. ``loss`` runs the trained
    module through :meth:`forward` (so that DDP sees the forward) and computes only this process's share
    of the batch (:meth:`local_indices`)."""

    name = "train"
    eval_metric = "loss"  # the held-out metric drawn in loss.png
    find_unused_parameters = False  # DDP: some steps leave parameters out of the loss

    def setup(self, out_dir: Optional[Path], resume: bool, context: Optional[DistributedContext] = None) -> None:
        """Optimizer, schedule and the run folder; restores the newest checkpoint when ``resume``.

        ``context``: this process's place in a data-parallel run (default: a single process); the batch
        size must split evenly over its processes (ValueError otherwise)."""
        cfg = self.config
        self.context = context or DistributedContext()
        self.context.per_rank(cfg.batch_size)  # raises if the processes cannot share the batch
        self.ddp = self.context.wrap(Forward(self.model), find_unused_parameters=self.find_unused_parameters)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.writes = self.out_dir is not None and self.context.is_main
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, cfg.warmup_steps, cfg.steps)
        )
        self.step = 0
        if self.out_dir is None:
            return
        config_file = self.out_dir / CONFIG_FILE
        if config_file.is_file():
            if not resume:
                raise RunExistsError(f"{self.out_dir} already holds a run: pass --resume to continue it")
            saved = {**_field_defaults(cfg), **json.loads(config_file.read_text(encoding="utf-8"))}
            changed = sorted(k for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES and saved.get(k) != v)
            if changed:
                details = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
                raise ValueError(f"{self.out_dir} was started with other settings ({details}); use a new folder")
        self.context.barrier()  # every process has checked the folder before rank 0 writes into it
        if self.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(config_file, "w") as f:
                f.write(json.dumps(asdict(cfg), indent=1))
        found = latest_checkpoint(self.out_dir) if resume else None
        if found is not None:
            self.load_checkpoint(found)
        if self.writes:
            truncate_log(self.out_dir / TRAIN_LOG, self.step)
            # a run (re)starting at step 0 evaluates step 0 again: its old step-0 record goes
            truncate_log(self.out_dir / EVAL_LOG, self.step if self.step else -1)

    def local_indices(self) -> range:
        """Indices (in the step's global batch of ``config.batch_size``) of the samples this process computes."""
        return self.context.local_indices(self.config.batch_size)

    def forward(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, the training forward, run through DDP when data-parallel (``fn`` uses
        ``self.model``); returns what ``fn`` returns."""
        if not self.context.is_distributed:
            return fn(*args, **kwargs)
        return self.ddp(fn, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------
    def loss(self) -> tuple[torch.Tensor, dict]:
        """The training loss of this process's share of one global batch drawn with ``self.generator``
        (the mean over its samples), and extra log fields (float fields are averaged over processes)."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Held-out metrics (plain floats)."""
        raise NotImplementedError

    def train_step(self) -> dict:
        start = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, extra = self.loss()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.step}: {extra}")
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        record = {"step": self.step, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(grad_norm)}
        record.update(extra)
        if self.context.is_distributed:  # each process's share is the same size: the mean of the means
            averaged = {k: v for k, v in record.items() if k == "loss" or (k in extra and isinstance(v, float))}
            record.update(self.context.mean(averaged))
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record

    def run_evaluation(self) -> dict:
        self.model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            metrics = self.evaluate()
        record = {"step": self.step, **metrics, "seconds": round(time.perf_counter() - start, 3)}
        if self.writes:
            self._append(EVAL_LOG, record)
        return record

    def train(self, progress: bool = True) -> list[dict]:
        """Runs to ``config.steps``: logs, evaluates on held-out data, checkpoints, plots; returns the records.
        In a data-parallel run only rank 0 evaluates and writes (the others go on to the next step and
        wait for it in the gradient all-reduce)."""
        from tqdm import tqdm

        cfg = self.config
        records = []
        main = self.context.is_main
        progress = progress and main
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, desc=self.name, unit="step")
        if self.step == 0 and cfg.eval_every > 0 and main:
            bar.set_postfix(self.run_evaluation())
        while self.step < cfg.steps:
            record = self.train_step()
            records.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            if self.writes and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                self._append(TRAIN_LOG, record)
            if main and cfg.eval_every > 0 and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                evaluation = self.run_evaluation()
                bar.write(f"{self.name} step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in evaluation.items()))
            if self.writes and (self.step % cfg.save_every == 0 or self.step == cfg.steps):
                self.save_checkpoint()
                self.plot()
        bar.close()
        return records

    def _append(self, name: str, record: dict) -> None:
        with open(self.out_dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ----------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """``out_dir/checkpoints/step_<n>`` (written atomically); keeps the newest ``keep_checkpoints``."""
        from safetensors.torch import save_model

        directory = checkpoint_dir(self.out_dir, self.step)
        directory.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(self.generator),
        }
        with atomic_directory(directory, replace=True) as tmp:
            save_model(self.model, str(tmp / MODEL_FILE))  # handles tied weights (UMT5's embeddings)
            torch.save(state, tmp / STATE_FILE)
        prune_checkpoints(directory.parent, self.config.keep_checkpoints)
        return directory

    def load_checkpoint(self, directory: Path) -> None:
        """Restores the model, optimizer, schedule, step and RNG states of a checkpoint (strict)."""
        from safetensors.torch import load_model

        directory = Path(directory)
        for name in (MODEL_FILE, STATE_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a training checkpoint: {name} is missing")
        load_model(self.model, str(directory / MODEL_FILE), strict=True)
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        # A resumed run may have more steps: the next step uses this run's schedule at the saved step.
        factor = warmup_cosine(self.step, self.config.warmup_steps, self.config.steps)
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base_lr * factor
        self.scheduler.lr_lambdas[0] = lambda step: warmup_cosine(step, self.config.warmup_steps, self.config.steps)
        restore_rng(state["rng"], self.generator)

    def plot(self) -> Optional[Path]:
        """Writes ``loss.png``: training loss (and its running mean) and the held-out metric per step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = _read_jsonl(self.out_dir / TRAIN_LOG)
        evals = _read_jsonl(self.out_dir / EVAL_LOG)
        if not train and not evals:
            return None
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        if train:
            steps = [r["step"] for r in train]
            losses = [r["loss"] for r in train]
            axes[0].plot(steps, losses, lw=0.6, alpha=0.5, label="loss")
            window = max(1, min(len(losses), max(5, len(losses) // 20)))
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))
            ]
            axes[0].plot(steps, smooth, lw=1.5, label=f"running mean ({window})")
            axes[0].set_yscale("log")
            axes[0].legend()
        axes[0].set_xlabel("step")
        axes[0].set_title(f"{self.name}: training loss")
        points = [(r["step"], r[self.eval_metric]) for r in evals if self.eval_metric in r]
        if points:
            axes[1].plot(*zip(*points), marker="o")
        axes[1].set_xlabel("step")
        axes[1].set_title(f"held-out {self.eval_metric}")
        figure.tight_layout()
        with atomic_write(self.out_dir / PLOT_FILE) as f:
            figure.savefig(f, format="png", dpi=90)
        plt.close(figure)
        return self.out_dir / PLOT_FILE


def _read_jsonl(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
