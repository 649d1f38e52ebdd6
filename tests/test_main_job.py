"""The README's main job on the embedded default model, end to end, judged by what the render shows.

``python3 build.py demo "PROMPT"`` with the README's prompt and no model option: the embedded bundle
(``models/default``) generates the scene, the add-on imports it into Blender and Cycles renders the first
generated camera (the caption's reference view).

What the default model shows today (docs/default_model.md): the prompt's floor and sky, not yet its
objects (the generator's benchmark: 15 % colour accuracy). The test asserts that much (a random or
prompt-blind model fails it: the floor colour must be the named one in the Cycles render, the sky colour
the named one in the generated video) and prints the objects' check (named colours visible, relations
in place), whose assertion is issue 15's target and comes with a generator that meets its benchmark.
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

    from engine.generator.quality import check_frame, label_pixels, parse_caption

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
    first_frame = iio.imread(out / "frames.mp4")[0].astype(np.float64) / 255.0
    print(prompt, "objects in the render:", check_frame(render, layout))
    names, labels = label_pixels(render)
    floor = (labels[labels.shape[0] // 2 :] == names.index(f"floor:{layout.floor}")).mean()
    assert floor >= 0.4, f"the render's lower half is {floor:.0%} {layout.floor} floor"
    names, labels = label_pixels(first_frame)
    sky = (labels[: labels.shape[0] // 4] == names.index(f"sky:{layout.sky}")).mean()
    assert sky >= 0.6, f"the video's top quarter is {sky:.0%} {layout.sky} sky"
