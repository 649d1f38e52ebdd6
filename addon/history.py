"""Past generations: the run folders (with a ``metadata.json``) in the outputs folder.

Standard library only (no bpy); the run folder's format (file names, metadata format tag) is the
engine's one definition, :mod:`engine.io.run_format` of the bundled engine. The panel lists what ``scan_runs`` finds, newest first, and
re-imports a run from its folder. Folders being written by the engine are hidden siblings (their
names start with a dot) until they are complete, so a scan never lists a half-written run.
"""

import dataclasses
import os
from typing import Optional

from .engine.io.run_format import METADATA_FILE, SCENE_FILE, read_run_metadata


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One past generation, as listed in the panel."""

    path: str
    prompt: str
    created: str  # as recorded by the engine, e.g. "2025-01-31T14:05:09+0100"
    seed: Optional[int]
    output_kind: str
    modified: float  # the folder's modification time, for ordering

    @property
    def label(self) -> str:
        date = self.created.replace("T", " ")[:16] if self.created else ""
        return f"{date}  {self.prompt}" if date else self.prompt


def read_run(path: str) -> RunRecord:
    """The record of one run folder. Raises ValueError naming the folder when it is not a complete run.

    Runs of any metadata version are listed: only the fields every version has are read.
    """
    metadata_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(metadata_path):
        raise ValueError(f"{path}: not a VIST3A run folder (no {METADATA_FILE})")
    try:
        data = read_run_metadata(metadata_path, check_version=False)
    except OSError as exc:
        raise ValueError(f"{metadata_path}: cannot be read ({exc})") from exc
    if not os.path.isfile(os.path.join(path, SCENE_FILE)):
        raise ValueError(f"{path}: the run has no {SCENE_FILE}")
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    seed = data.get("seed")
    return RunRecord(
        path=os.path.abspath(path),
        prompt=str(settings.get("prompt", "")).strip() or os.path.basename(path),
        created=str(data.get("created", "")),
        seed=seed if isinstance(seed, int) else None,
        output_kind=str(settings.get("output_kind", "")),
        modified=os.path.getmtime(path),
    )


def scan_runs(root: str, limit: int = 100) -> tuple:
    """(runs, problems): the complete runs under ``root``, newest first, and one line per bad folder.

    A folder without a ``metadata.json`` is not a run and is skipped silently; one with unreadable
    metadata is reported in ``problems`` (so a broken run is visible, not just missing).
    """
    if not root or not os.path.isdir(root):
        return [], []
    runs, problems = [], []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            if not os.path.isfile(os.path.join(entry.path, METADATA_FILE)):
                continue
            try:
                runs.append(read_run(entry.path))
            except (ValueError, OSError) as exc:
                problems.append(str(exc))
    runs.sort(key=lambda run: run.modified, reverse=True)
    return runs[:limit], problems
