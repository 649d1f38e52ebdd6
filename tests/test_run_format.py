"""The run folder's format has one definition (engine/io/run_format.py), used by the engine and the add-on."""

import ast
import json
from pathlib import Path

import pytest
from addon_modules import load_addon_module

from engine.io import run_format
from engine.pipeline import run_folder

ROOT = Path(__file__).resolve().parents[1]
# The literals that name the run folder's format; only run_format.py may spell them.
FORMAT_LITERALS = {
    "vist3a-run",
    "scene.ply",
    "cameras.json",
    "metadata.json",
    "frames.mp4",
    "depth.mp4",
    "flythrough.mp4",
}


def test_the_format_is_spelled_in_one_module_only():
    found = []
    for folder in ("engine", "addon", "benchmarks", "build.py"):
        for path in sorted((ROOT / folder).rglob("*.py")) if folder != "build.py" else [ROOT / folder]:
            if path == ROOT / "engine" / "io" / "run_format.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and node.value in FORMAT_LITERALS
            ]
    assert found == []


def test_the_engine_and_the_add_on_use_the_one_definition():
    history = load_addon_module("history")
    reading = load_addon_module("reading")
    assert history.read_run_metadata is run_format.read_run_metadata
    assert reading.SCENE_FILE == history.SCENE_FILE == run_format.SCENE_FILE == "scene.ply"
    assert run_folder.OUTPUT_FILES is run_format.OUTPUT_FILES
    assert run_folder.read_run_metadata is run_format.read_run_metadata
    assert run_format.OUTPUT_FILES == (
        "scene.ply",
        "cameras.json",
        "frames.mp4",
        "depth.mp4",
        "flythrough.mp4",
        "metadata.json",
    )


def test_reading_run_metadata(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.json does not exist"):
        run_format.read_run_metadata(tmp_path)
    file = tmp_path / "metadata.json"
    file.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        run_format.read_run_metadata(tmp_path)
    file.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(ValueError, match="is not a VIST3A run metadata file"):
        run_format.read_run_metadata(file)
    file.write_text(json.dumps({"format": "vist3a-run", "version": 2, "seed": 3}))
    with pytest.raises(ValueError, match="unsupported run metadata version 2"):
        run_format.read_run_metadata(tmp_path)
    assert run_format.read_run_metadata(tmp_path, check_version=False)["seed"] == 3
    file.write_text(json.dumps({"format": "vist3a-run", "version": 1, "seed": 4}))
    assert run_format.read_run_metadata(str(file))["seed"] == 4
