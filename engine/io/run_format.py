"""The run folder's format: its file names, the metadata format tag and version, and reading the metadata.

The one definition of what a run folder holds, shared by the engine (which writes run folders:
:mod:`engine.pipeline.run_folder`) and the add-on (which lists and imports them). Standard library only,
so Blender's own Python can import it through the add-on's bundled engine.

Layout of a run folder::

    scene.ply        3DGS PLY (output_kind "gaussians") or coloured point PLY ("points")
    cameras.json     the predicted cameras, one per video frame (``vist3a-cameras`` format)
    frames.mp4       the decoded video (the RGB the 3D decoder saw)
    depth.mp4        the decoder's depth per frame, colour-mapped (near = bright)
    flythrough.mp4   the scene rendered along the predicted cameras, with interpolated in-between poses
                     (absent when the generate request asked for none, as the Blender add-on does)
    metadata.json    every setting, the seed, model identities, software versions and timings
                     (``{"format": "vist3a-run", "version": 1, ...}``)

A folder is written in a hidden sibling (name starting with a dot) and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
from typing import Union

RUN_FORMAT = "vist3a-run"
RUN_VERSION = 1

SCENE_FILE = "scene.ply"
CAMERAS_FILE = "cameras.json"
FRAMES_FILE = "frames.mp4"
DEPTH_FILE = "depth.mp4"
FLYTHROUGH_FILE = "flythrough.mp4"
METADATA_FILE = "metadata.json"
# Every file of a complete run folder, in the order the engine writes them (FLYTHROUGH_FILE may be left out).
OUTPUT_FILES = (SCENE_FILE, CAMERAS_FILE, FRAMES_FILE, DEPTH_FILE, FLYTHROUGH_FILE, METADATA_FILE)


def metadata_path(path: Union[str, os.PathLike]) -> str:
    """The metadata file of a run: ``path`` itself, or ``path/metadata.json`` when ``path`` is a folder."""
    path = os.fspath(path)
    return os.path.join(path, METADATA_FILE) if os.path.isdir(path) else path


def read_run_metadata(path: Union[str, os.PathLike], *, check_version: bool = True) -> dict:
    """Reads a run's metadata (the ``metadata.json`` file or its run folder) and checks its format tag.

    With ``check_version`` (the default) a version other than ``RUN_VERSION`` is refused; without it
    any version is accepted (for readers that use only fields every version has: settings, seed, created).

    Raises:
        FileNotFoundError: there is no metadata file.
        ValueError: the file is not JSON, or not VIST3A run metadata, or of an unsupported version.
        OSError: the file cannot be read.
    """
    file = metadata_path(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file} does not exist")
    with open(file, encoding="utf-8") as stream:
        try:
            data = json.load(stream)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise ValueError(f"{file} is not a VIST3A run metadata file (format {RUN_FORMAT!r})")
    if check_version and data.get("version") != RUN_VERSION:
        raise ValueError(f"{file}: unsupported run metadata version {data.get('version')!r}")
    return data
