"""The README's main job on the embedded default model, end to end, judged by what the render shows.

``python3 build.py demo "PROMPT"`` with the README's prompt and no model option: the embedded bundle
(``models/default``) generates the scene, the add-on imports it into Blender and Cycles renders the first
generated camera (the caption's reference view). The render must show the prompt: every named colour
visible, and each stated relation (left/right, front/behind) read from the colour regions
(``engine.generator.quality``, the benchmark's check).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_prompt() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    prompts = re.findall(r'^python3 build\.py demo "([^"]+)"', readme, flags=re.MULTILINE)
    assert prompts, "the README shows no main-job command"
    return prompts[0]


@pytest.mark.slow
@pytest.mark.blender
def test_the_main_job_renders_the_prompt_with_cycles(tmp_path):
    import imageio.v3 as iio

    from engine.generator.quality import check_frame, parse_caption

    prompt = readme_prompt()
    layout = parse_caption(prompt)
    out = tmp_path / "run"
    env = dict(os.environ, VIST3A_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="2")  # no user model folder
    env.pop("VIST3A_MODEL", None)
    command = [sys.executable, str(ROOT / "build.py"), "demo", prompt, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "(from the embedded default model)" in done.stdout, done.stdout[-2000:]
    assert "does not know" not in done.stdout + done.stderr
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["settings"]["height"] == 128 and metadata["settings"]["num_frames"] == 13

    render = iio.imread(out / "render.png")[..., :3].astype(np.float64) / 255.0
    check = check_frame(render, layout)
    print(prompt, check)
    assert all(check.colors_visible.values()), check.colors_visible
    assert all(check.relations_correct), check
