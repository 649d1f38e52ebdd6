"""The automatic GPU memory policy: CPU offload and VAE tiling chosen from the free device memory.

``choose_memory_policy`` decides, for a pipeline about to run on a GPU, whether the models stay resident
(fastest) or visit the GPU one at a time (``cpu_offload``), and whether the video is decoded in tiles
(``vae_tiling``). Explicit choices in ``RuntimeOptions`` (True/False) are kept; ``None`` lets the policy
decide. The decision and the figures behind it go into every run's ``metadata.json``.

The activation figures are those measured at full size on the meta device for the released recipe (13
frames at 512², 1.3B transformer, bf16; ``benchmarks/memory_full_size.py``, rounded up):

* ``ACTIVATION_RESERVE``: the largest transient need of a stage other than the VAE decode (the stitched
  decoder's aggregator and heads at 13 x 448²; the denoising and the text encoder need less);
* ``UNTILED_VAE_DECODE``: the untiled Wan VAE decode of 13 frames at 512² (tiled: well under 1 GiB);
* ``SAFETY_MARGIN``: CUDA context, allocator fragmentation and the cached text embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

GIB = 1024**3
ACTIVATION_RESERVE = int(5.25 * GIB)  # measured: stitched decoder 5.06 GiB, denoising 2.85, text encoder 0.15
UNTILED_VAE_DECODE = int(5.5 * GIB)  # measured: 5.18 GiB
SAFETY_MARGIN = int(0.75 * GIB)


@dataclass
class MemoryPolicy:
    """What the policy chose and why (JSON-ready through ``to_dict``).

    Attributes:
        cpu_offload, vae_tiling: the options in force.
        automatic: the options the policy decided (the others were given explicitly).
        free_bytes, total_bytes: the device memory seen when deciding (None off the GPU).
        model_bytes: parameter and buffer bytes per model part, in the dtypes they run in.
        reason: one sentence for the log and the metadata.
    """

    cpu_offload: bool
    vae_tiling: bool
    automatic: list[str] = field(default_factory=list)
    free_bytes: Optional[int] = None
    total_bytes: Optional[int] = None
    model_bytes: dict = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def module_bytes(module) -> int:
    """Bytes of a module's parameters and buffers (0 for anything that is not an nn.Module)."""
    if not isinstance(module, torch.nn.Module):
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def device_memory(device: torch.device) -> tuple[Optional[int], Optional[int]]:
    """(free, total) bytes of a CUDA device, (None, None) for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None, None
    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total)


def choose_memory_policy(
    model_bytes: dict,
    free_bytes: Optional[int],
    total_bytes: Optional[int] = None,
    cpu_offload: Optional[bool] = None,
    vae_tiling: Optional[bool] = None,
) -> MemoryPolicy:
    """Decides the options left as None from the free memory (see the module doc for the figures).

    * CPU offload when all models plus the largest transient need do not fit: then only one model is
      resident at a time (the largest, usually the UMT5-XXL text encoder, sets the peak).
    * VAE tiling when the models resident during the video decode plus the untiled decode do not fit.

    ``free_bytes`` None (no GPU): both off unless asked for.
    """
    automatic = [name for name, value in (("cpu_offload", cpu_offload), ("vae_tiling", vae_tiling)) if value is None]
    total_models = sum(model_bytes.values())
    if free_bytes is None:
        return MemoryPolicy(
            cpu_offload=bool(cpu_offload),
            vae_tiling=bool(vae_tiling),
            automatic=automatic,
            model_bytes=dict(model_bytes),
            reason="not a GPU: models stay where they are",
        )
    budget = free_bytes - SAFETY_MARGIN
    if cpu_offload is None:
        cpu_offload = total_models + ACTIVATION_RESERVE > budget
    resident_at_decode = model_bytes.get("vae", 0) if cpu_offload else total_models
    if vae_tiling is None:
        vae_tiling = resident_at_decode + UNTILED_VAE_DECODE > budget
    reason = (
        f"{free_bytes / GIB:.1f} GiB free; models {total_models / GIB:.1f} GiB: "
        + ("one model on the GPU at a time" if cpu_offload else "all models resident")
        + ("; video decoded in tiles" if vae_tiling else "; video decoded whole")
    )
    return MemoryPolicy(
        cpu_offload=bool(cpu_offload),
        vae_tiling=bool(vae_tiling),
        automatic=automatic,
        free_bytes=free_bytes,
        total_bytes=total_bytes,
        model_bytes=dict(model_bytes),
        reason=reason,
    )


def out_of_memory_hint(policy: Optional[MemoryPolicy]) -> str:
    """The advice for an out-of-memory error on this machine: the option that would help here first."""
    steps = []
    if policy is None or not policy.cpu_offload:
        steps.append("turn on CPU offload (runtime cpu_offload: true; the models then visit the GPU one at a time)")
    if policy is None or not policy.vae_tiling:
        steps.append("turn on VAE tiling (runtime vae_tiling: true)")
    steps.append("lower the resolution or the number of frames")
    if policy is not None and policy.free_bytes is not None:
        where = f"Only {policy.free_bytes / GIB:.1f} GiB of GPU memory were free"
    else:
        where = "The device ran out of memory"
    return f"{where}: " + "; then ".join(steps) + ". Closing other programs that use the GPU also helps."
