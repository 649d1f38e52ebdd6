"""LoRA on the Wan transformer's attention, its exponential moving average, and adapter folders.

VIST3A's reward finetuning trains only a LoRA (rank 8, alpha 16) on the self- and cross-attention
projections of the video DiT (``blocks.<i>.attn1`` / ``attn2``: ``to_q``, ``to_k``, ``to_v``,
``to_out.0``); inference uses an EMA of the LoRA weights (method.md §5). Adapters are written as PEFT
folders (``adapter_config.json`` + ``adapter_model.safetensors``), the layout of the released
``vist3a_1.3b_lora_ema``, so a bundle's ``lora`` entry (``engine.pipeline.vist3a.apply_lora_adapter``) loads
them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

from engine.io.atomic import atomic_directory

LORA_RANK = 8
LORA_ALPHA = 16.0
# Full-name pattern (PEFT matches it with re.fullmatch): the four projections of both attentions of
# every transformer block, and nothing else (the condition embedders also hold Linear layers).
LORA_TARGET_PATTERN = r"blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"


def lora_config(rank: int = LORA_RANK, alpha: float = LORA_ALPHA, dropout: float = 0.0):
    """The ``peft.LoraConfig`` of VIST3A's video LoRA."""
    from peft import LoraConfig

    if rank < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(f"LoRA needs rank >= 1, alpha > 0 and 0 <= dropout < 1, got {rank}, {alpha}, {dropout}")
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGET_PATTERN)


def add_video_lora(transformer: nn.Module, rank: int = LORA_RANK, alpha: float = LORA_ALPHA, dropout: float = 0.0):
    """Wraps ``transformer`` in a PEFT model with the video LoRA; only the LoRA factors are trainable.

    Returns the ``PeftModel`` (its ``forward`` takes the transformer's arguments). LoRA weights are kept
    in float32 even when the base weights are bf16 (PEFT's adapter-dtype autocast).
    """
    from peft import get_peft_model

    transformer.requires_grad_(False)
    model = get_peft_model(transformer, lora_config(rank, alpha, dropout))
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    if not names or any("lora_" not in name for name in names):
        raise RuntimeError(f"the video LoRA did not attach as expected (trainable: {names[:4]})")
    expected = 2 * 4 * 2 * len(transformer.blocks)  # A and B, 4 projections, 2 attentions, per block
    if len(names) != expected:
        raise RuntimeError(f"the video LoRA found {len(names)} factors, expected {expected}: unexpected Wan layout")
    return model


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable LoRA factors of a PEFT model, by parameter name."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad and "lora_" in name}


class LoraEMA:
    """Exponential moving average of the LoRA factors (float32 shadow copies).

    After the n-th update (n = 1, 2, ...) the shadow is ``s <- d_n * s + (1 - d_n) * p`` with
    ``d_n = min(decay, (1 + n) / (10 + n))`` when ``warmup`` (so short runs are not dominated by the
    initial, zero-B weights) and ``d_n = decay`` otherwise.
    """

    def __init__(self, parameters: Mapping[str, Tensor], decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow = {name: param.detach().float().clone() for name, param in parameters.items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, parameters: Mapping[str, Tensor]) -> float:
        """Moves the shadow towards ``parameters``; returns the decay used."""
        if parameters.keys() != self.shadow.keys():
            raise KeyError("EMA update: the parameter names differ from the ones the EMA was made with")
        self.num_updates += 1
        decay = self.current_decay()
        for name, param in parameters.items():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        return decay

    @contextlib.contextmanager
    def applied(self, parameters: Mapping[str, nn.Parameter]) -> Iterator[None]:
        """Within the block the parameters hold the EMA weights; their own values come back after."""
        saved = {name: param.detach().clone() for name, param in parameters.items()}
        with torch.no_grad():
            for name, param in parameters.items():
                param.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in parameters.items():
                    param.copy_(saved[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: Mapping) -> None:
        shadow = state["shadow"]
        if shadow.keys() != self.shadow.keys():
            raise KeyError("EMA state does not fit: different LoRA parameter names")
        for name, tensor in shadow.items():
            if tensor.shape != self.shadow[name].shape:
                raise ValueError(
                    f"EMA state: {name} has shape {tuple(tensor.shape)}, expected {tuple(self.shadow[name].shape)}"
                )
            self.shadow[name].copy_(tensor)
        self.num_updates = int(state["num_updates"])


def save_adapter(model: nn.Module, directory: Union[str, Path], ema: LoraEMA | None = None) -> Path:
    """Writes the PEFT adapter folder of ``model`` (the EMA weights if ``ema``), atomically.

    An earlier folder at ``directory`` is replaced only once the new one is complete.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    context = ema.applied(lora_parameters(model)) if ema is not None else contextlib.nullcontext()
    with context, atomic_directory(directory, replace=True) as temp:
        model.save_pretrained(str(temp))
    return directory
