"""Data-parallel runs on ``torch.distributed``: one process per device, launched by torchrun or accelerate.

Both ``torchrun --nproc-per-node N`` and ``accelerate launch --num_processes N`` start N copies of the
command and give each the standard environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`init_distributed` reads it, joins the process group (NCCL on
CUDA, gloo on the CPU) and returns a :class:`DistributedContext`; a plain ``python -m engine ...`` is a
world of one, for which every method here is a no-op. The trainers use the context to

* split the data: global sample ``j`` of a step belongs to rank ``j // per_rank`` (:meth:`local_indices`),
  so a run with global batch B on N processes sees exactly the samples of a 1-process run with batch B;
* average gradients: the trained module is wrapped in ``DistributedDataParallel`` (:meth:`wrap`);
* write once: logs, checkpoints, exports and evaluation only on rank 0 (:attr:`is_main`), with a
  :meth:`barrier` where other ranks must wait for a file.

Checkpoints hold global state only (step, weights, optimizer, schedule; data positions derive from the
step), so a run resumes with a different number of processes as long as the global batch stays the same.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run (rank 0 of 1 when not launched distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs, checkpoints and reports."""
        return self.rank == 0

    def device(self, requested: str | torch.device | None = None) -> torch.device:
        """This process's device: ``cuda:LOCAL_RANK`` when CUDA is asked for (or, unasked, available)."""
        if requested is None:
            requested = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(requested)
        if device.type == "cuda" and self.is_distributed and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def per_rank(self, global_batch: int) -> int:
        """Samples per process for a global batch; raises ValueError if the processes cannot share it evenly."""
        if global_batch % self.world_size:
            raise ValueError(
                f"the batch size {global_batch} cannot be split evenly over {self.world_size} processes: "
                f"choose a batch size that is a multiple of {self.world_size}"
            )
        return global_batch // self.world_size

    def local_indices(self, global_batch: int) -> range:
        """Indices (0 <= j < global_batch) of this process's samples in a step's global batch."""
        size = self.per_rank(global_batch)
        return range(self.rank * size, (self.rank + 1) * size)

    def shard(self, sequence):
        """Every ``world_size``-th item of ``sequence`` starting at ``rank`` (round-robin split of a dataset)."""
        return sequence[self.rank :: self.world_size]

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sums ``tensor`` over all processes, in place (on its own device); returns it."""
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """The sum over processes of each number in ``values`` (every process passes the same keys)."""
        if not self.is_distributed or not values:
            return {k: float(v) for k, v in values.items()}
        keys = sorted(values)
        packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._collective_device())
        self.all_reduce_sum_(packed)
        return dict(zip(keys, packed.tolist()))

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over processes of each number in ``values`` (every process passes the same keys)."""
        return {k: v / self.world_size for k, v in self.sum(values).items()}

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (a picklable object built by the caller, never read from disk)."""
        if not self.is_distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def gather(self, value: Any) -> list:
        """Every process's ``value`` (picklable, built by the caller), in rank order, on every process."""
        if not self.is_distributed:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def wrap(self, module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` (gradients averaged over processes in backward);
        ``module`` itself when not distributed. Call the returned module for every forward that trains."""
        if not self.is_distributed:
            return module
        device = next(module.parameters()).device
        # No buffer broadcast: our models' buffers are constants (RoPE tables), never running statistics, and
        # a broadcast at every forward would pair up wrongly when processes run different numbers of forwards
        # (reward rollouts of different lengths).
        return nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
            broadcast_buffers=False,
        )

    def average_gradients_(self, parameters) -> None:
        """Replaces each parameter's gradient by its mean over the processes (one all-reduce; a missing
        gradient counts as zeros). For parameters outside DDP / FSDP (the replicated LoRA weights of an
        FSDP-sharded transformer); every process must pass the same parameters in the same order."""
        if not self.is_distributed:
            return
        parameters = list(parameters)
        for param in parameters:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        flat = torch.cat([param.grad.reshape(-1) for param in parameters])
        self.all_reduce_sum_(flat).div_(self.world_size)
        offset = 0
        for param in parameters:
            count = param.grad.numel()
            param.grad.copy_(flat[offset : offset + count].view_as(param.grad))
            offset += count

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


class Forward(nn.Module):
    """A module whose forward runs a given function: the training forward of a model that is not its own
    ``forward`` (a VAE's encode + decode, a loss over several sub-models), in a form DDP can wrap.

    ``Forward(model)(fn, *args)`` returns ``fn(*args)``; ``fn`` uses ``model`` (whose parameters this module
    holds, so DDP averages their gradients). Its state dict is ``model``'s with a ``module.`` prefix: save
    ``model`` itself, not this wrapper.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


def fsdp_units(transformer: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one at a time (the wrap policy): the transformer blocks of a diffusers
    ``WanTransformer3DModel`` (its ``blocks``; a PEFT model is looked through). Raises TypeError for a
    model without them."""
    inner = transformer.get_base_model() if hasattr(transformer, "get_base_model") else transformer
    blocks = getattr(inner, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise TypeError(f"{type(inner).__name__} has no transformer blocks ('blocks') for FSDP to shard")
    return list(blocks)


def shard_transformer(transformer: nn.Module, trainable) -> nn.Module:
    """Shards ``transformer``'s frozen weights over the processes with FSDP2 (``fully_shard``).

    Each block of :func:`fsdp_units` is one FSDP unit (its weights gathered for its forward and backward,
    then freed), the rest of the transformer (embeddings, output head) the root unit. The ``trainable``
    parameters (the LoRA weights: they must be the only parameters with gradients) stay whole on every
    process, outside FSDP: after the backward, :meth:`DistributedContext.average_gradients_` averages their
    gradients. FSDP2 keeps the original parameters (what FSDP1 calls ``use_orig_params=True``), so frozen
    and trainable weights can share a block. Every process must then run the same sequence of
    transformer forwards and backwards (each gathers weights on all processes together).

    Returns the (now sharded, modified in place) inner transformer. Raises ValueError if a parameter
    outside ``trainable`` requires gradients.
    """
    from torch.distributed.fsdp import fully_shard

    trainable = set(trainable)
    inner = transformer.get_base_model() if hasattr(transformer, "get_base_model") else transformer
    others = [name for name, param in inner.named_parameters() if param.requires_grad and param not in trainable]
    if others:
        raise ValueError(f"FSDP here shards frozen weights only, but {others[0]} (and {len(others) - 1} more) train")
    for block in fsdp_units(inner):
        fully_shard(block, ignored_params=trainable)
    fully_shard(inner, ignored_params=trainable)
    return inner


def launched_distributed() -> bool:
    """True when a launcher (torchrun, accelerate launch) started this process as one of several."""
    return all(key in os.environ for key in ENV_KEYS) and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(backend: str | None = None, timeout_minutes: float = 30.0) -> DistributedContext:
    """Joins the process group the launcher set up (idempotent) and returns this process's context.

    Args:
        backend: "nccl" or "gloo"; default NCCL when CUDA is available, else gloo.
        timeout_minutes: how long collectives wait for the slowest process before failing.
    Returns:
        DistributedContext(rank, world_size, local_rank); (0, 1, 0) when not launched distributed.
    Raises:
        RuntimeError (from torch) when the rendezvous fails (e.g. MASTER_ADDR unreachable).
    """
    if not launched_distributed():
        return DistributedContext()
    rank, world, local = (int(os.environ[key]) for key in ENV_KEYS)
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistributedContext(rank=rank, world_size=world, local_rank=local)


def close_distributed() -> None:
    """Leaves the process group (at the end of a command; harmless when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """A CPU generator for sample ``index`` of step ``step`` (index -1: the step's shared draws).

    Every draw of a sample comes from its own generator, so the data of global sample j at step s is
    the same whichever process computes it and whatever the number of processes.
    """
    mixed = (seed * 1_000_003 + step) * 1_000_033 + index + 1
    return torch.Generator().manual_seed(mixed % (2**63 - 1))
