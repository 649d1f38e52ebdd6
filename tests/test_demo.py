"""The README's main job: ``python3 build.py demo "PROMPT"`` runs text -> scene -> Blender -> Cycles PNG."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.io import read_cameras_json, read_gaussian_ply

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.blender
def test_build_demo_generates_imports_and_renders(tmp_path):
    # The user's default model folder holds a tiny bundle whose defaults are small: with no --model and no
    # size options the demo must find it and generate at its defaults.
    from engine.testing.tiny import build_tiny_bundle

    home = tmp_path / "home"
    defaults = {"num_frames": 5, "height": 32, "width": 32, "num_steps": 2}
    build_tiny_bundle(home / "models" / "default", defaults=defaults)
    out = tmp_path / "run"
    env = dict(os.environ, VIST3A_HOME=str(home), OMP_NUM_THREADS="1")
    env.pop("VIST3A_MODEL", None)
    command = [sys.executable, str(ROOT / "build.py"), "demo", "a red house", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Model: {home / 'models' / 'default'} (from the default model folder)" in done.stdout
    for name in ("scene.ply", "cameras.json", "frames.mp4", "depth.mp4", "flythrough.mp4", "metadata.json"):
        assert (out / name).stat().st_size > 0, name
    gaussians = read_gaussian_ply(out / "scene.ply")
    assert len(gaussians.means) == 5 * 28 * 28 and np.isfinite(gaussians.means).all()
    assert len(read_cameras_json(out / "cameras.json").camera_to_world) == 5
    settings = json.loads((out / "metadata.json").read_text())["settings"]
    assert settings["prompt"] == "a red house" and {k: settings[k] for k in defaults} == defaults
    png = out / "render.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Cycles render" in done.stdout


def test_demo_refuses_an_existing_output_folder(tmp_path):
    (tmp_path / "run").mkdir()
    env = dict(os.environ, VIST3A_HOME=str(tmp_path / "home"))
    command = [sys.executable, "-m", "engine", "demo", "x", "--out", str(tmp_path / "run"), "--model", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "already exists" in done.stderr


def test_demo_names_a_missing_model_clearly(tmp_path):
    env = dict(os.environ, VIST3A_HOME=str(tmp_path / "home"))
    missing = tmp_path / "no-such-bundle"
    command = [sys.executable, "-m", "engine", "demo", "x", "--out", str(tmp_path / "run"), "--model", str(missing)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and f"model bundle {missing} does not exist" in done.stderr
    assert not (tmp_path / "run").exists()
