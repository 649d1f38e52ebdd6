"""Reading results from disk: run folders, splat and point files, cameras JSON. No bpy here.

Every function takes paths that are already absolute (or relative to the working directory):
Blender's ``//`` (relative to the .blend file) is resolved by the Blender side before it calls in
(``blender_data.absolute_path``), so this layer is tested with plain pytest, without Blender.
Nothing here creates Blender data; ``blender_data.build_result`` turns a ``LoadedResult`` into objects.
"""

import os
import re
from dataclasses import dataclass
from typing import Optional

from . import history
from .engine.io import (
    CameraArrays,
    FormatError,
    GaussianArrays,
    InvalidValuesError,
    PointArrays,
    read_cameras_json,
    read_scene_file,
)
from .engine.io.run_format import CAMERAS_FILE, SCENE_FILE

# Files the import reads: splats (standard or compressed PLY, .splat, .spz), point PLYs, cameras JSON.
SCENE_EXTENSIONS = (".ply", ".splat", ".spz")
SKIP_INVALID_LABEL = "Skip Invalid Splats"


class ResultImportError(ValueError):
    """A result cannot be imported; the message says which file and why (shown to the user)."""


@dataclass
class LoadedResult:
    """Everything one import needs, read and checked.

    At most one of ``gaussians`` / ``points`` is set (neither for a cameras JSON on its own).
    ``skipped_invalid`` counts the splats or points left out for invalid values (NaN, infinite or
    out-of-range numbers) when the import was asked to skip them.
    """

    name: str
    source: str
    gaussians: Optional[GaussianArrays] = None
    points: Optional[PointArrays] = None
    cameras: Optional[CameraArrays] = None
    skipped_invalid: int = 0


def _absolute(path: str) -> str:
    if path.startswith("//"):
        # A programming error, not a user's: the Blender side resolves "//" before calling in.
        raise ValueError(f"{path}: relative to the .blend file; resolve it with bpy.path.abspath first")
    return os.path.abspath(path)


def load_result(path: str, *, skip_invalid: bool = True) -> LoadedResult:
    """Reads a result folder (scene.ply [+ cameras.json]), a splat file (standard or compressed PLY,
    .splat, .spz), a point PLY, or a cameras JSON.

    ``path`` is absolute or relative to the working directory (never Blender's ``//``: ValueError).
    With ``skip_invalid`` (the default) splats or points holding invalid values are left out and
    counted in ``LoadedResult.skipped_invalid``; without it such a file is refused.

    Raises ResultImportError with a message naming the file for anything that cannot be imported.
    """
    path = _absolute(path)
    if os.path.isdir(path):
        scene_file = os.path.join(path, SCENE_FILE)
        cameras_file = os.path.join(path, CAMERAS_FILE)
        if not os.path.isfile(scene_file):
            raise ResultImportError(f"{path}: not a VIST3A result folder (no {SCENE_FILE} in it)")
        result = LoadedResult(name=os.path.basename(path.rstrip(os.sep)), source=path)
        _read_scene_file(scene_file, result, skip_invalid)
        if os.path.isfile(cameras_file):
            result.cameras = _read_cameras(cameras_file)
        return result
    if not os.path.isfile(path):
        raise ResultImportError(f"{path}: no such file or folder")
    result = LoadedResult(name=os.path.splitext(os.path.basename(path))[0], source=path)
    extension = os.path.splitext(path)[1].lower()
    if extension in SCENE_EXTENSIONS:
        _read_scene_file(path, result, skip_invalid)
    elif extension == ".json":
        result.cameras = _read_cameras(path)
    else:
        raise ResultImportError(
            f"{path}: expected a result folder, a splat or point file (.ply, .splat, .spz) or a cameras .json file"
        )
    return result


def load_run(run_dir: str) -> LoadedResult:
    """A generation's run folder, named from its prompt (``prompt_name``), ready for ``build_result``.

    Raises ValueError naming the folder when it is not a complete run (``history.read_run``), or
    ResultImportError for a scene or cameras file that cannot be read.
    """
    run_dir = _absolute(run_dir)
    record = history.read_run(run_dir)
    loaded = load_result(run_dir)
    loaded.name = prompt_name(record.prompt)
    return loaded


def _read_scene_file(path: str, result: LoadedResult, skip_invalid: bool) -> None:
    """Fills ``result.gaussians`` or ``result.points`` from any splat or point file the engine reads."""
    try:
        scene = read_scene_file(path, non_finite="drop" if skip_invalid else "error")
    except InvalidValuesError as exc:
        raise ResultImportError(f"{exc}. Turn on '{SKIP_INVALID_LABEL}' to import the others") from exc
    except (FormatError, OSError) as exc:
        raise ResultImportError(str(exc)) from exc
    if len(scene) == 0 and scene.dropped_non_finite:
        noun = "splats" if isinstance(scene, GaussianArrays) else "points"
        raise ResultImportError(
            f"{path}: all {scene.dropped_non_finite} {noun} have invalid values (not a number, infinite or out of "
            "range); there is nothing to import"
        )
    if isinstance(scene, GaussianArrays):
        result.gaussians = scene
    else:
        result.points = scene
    result.skipped_invalid = scene.dropped_non_finite


def _read_cameras(path: str) -> CameraArrays:
    try:
        return read_cameras_json(path)
    except (FormatError, OSError) as exc:
        raise ResultImportError(str(exc)) from exc


def prompt_name(prompt: str, limit: int = 40) -> str:
    """A collection/object name from a prompt: its first words, at most ``limit`` characters."""
    words = re.sub(r"\s+", " ", prompt).strip()
    if len(words) <= limit:
        return words or "scene"
    cut = words[:limit].rsplit(" ", 1)[0]
    return (cut or words[:limit]) + "…"


def import_notes(loaded: LoadedResult) -> list:
    """What an artist should know about an import that succeeded: skipped splats, missing colours."""
    notes = []
    if loaded.skipped_invalid:
        noun = "splats" if loaded.gaussians is not None else "points"
        total = loaded.skipped_invalid + len(loaded.gaussians if loaded.gaussians is not None else loaded.points)
        notes.append(
            f"skipped {loaded.skipped_invalid} of {total} {noun} with invalid values (not a number, infinite or "
            "out of range)"
        )
    if loaded.points is not None and not loaded.points.colors_from_file:
        notes.append("the file stores no point colours: the points are shown in grey")
    return notes
