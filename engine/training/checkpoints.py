"""A training run's folder, shared by the trainers (stitched decoder, reward finetuning, the default model's).

A training run folder (not a generation's run folder: that is ``engine.io.run_format``) holds a JSONL log
(one record per step, with a ``step`` key) and ``checkpoints/step_<n>/`` folders; a resumed run redoes the
steps after its checkpoint, so their log records are dropped first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from engine.io.atomic import atomic_write


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}"


def latest_checkpoint(out_dir: Optional[Path]) -> Optional[Path]:
    """The newest ``checkpoints/step_*`` folder of ``out_dir`` (None if there is none)."""
    if out_dir is None:
        return None
    found = sorted((Path(out_dir) / "checkpoints").glob("step_*"))
    return found[-1] if found else None


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Deletes all but the newest ``keep`` ``step_*`` folders in ``folder``."""
    for old in sorted(Path(folder).glob("step_*"))[:-keep]:
        shutil.rmtree(old)


def truncate_log(path: Optional[Path], step: int) -> int:
    """Drops the records of steps after ``step`` from a JSONL log (atomically); returns how many."""
    if path is None or not Path(path).is_file():
        return 0
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        with atomic_write(path, "w") as f:
            f.write("".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def rng_state(generator: Optional[torch.Generator] = None) -> dict:
    """The global torch (and CUDA) RNG states, and ``generator``'s if given, for a checkpoint."""
    return {
        "torch": torch.get_rng_state(),
        "generator": None if generator is None else generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict, generator: Optional[torch.Generator] = None) -> None:
    """Restores what :func:`rng_state` saved (``generator``'s state only if it was saved)."""
    torch.set_rng_state(state["torch"])
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
