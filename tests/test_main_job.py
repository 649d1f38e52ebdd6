"""The README's main job on the embedded default model, end to end, judged by what the render shows.

``python3 build.py demo "PROMPT"`` with the README's prompt and no model option: the embedded bundle
(``models/default``) generates the scene, the add-on imports it into Blender and Cycles renders the first
generated camera (the caption's reference view).

What the default model shows today (docs/default_model.md): the generated video's first frame shows the
prompt (its sky, and its named objects' colours where the caption puts them: the generator's part, asserted
here), and the Cycles render of the imported scene reproduces that frame's overall picture (asserted as PSNR),
but not its objects: the 3D decoder's cameras are not learned yet (issue 14), so the 13 views' Gaussians
overlay each other and smear the objects away. The render's object check is printed; asserting it is the
part of issue 15's target still open.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
    video_frame = iio.imread(out / "frames.mp4")[0]  # (H, W, 3) uint8, the caption's reference view
    first_frame = video_frame.astype(np.float64) / 255.0
    print(prompt, "objects in the render:", check_frame(render, layout))

    # the generator: the first frame shows the sky and the named objects, each where the caption puts it
    names, labels = label_pixels(first_frame)
    sky = (labels[: labels.shape[0] // 4] == names.index(f"sky:{layout.sky}")).mean()
    assert sky >= 0.6, f"the video's top quarter is {sky:.0%} {layout.sky} sky"
    shown = check_frame(first_frame, layout)
    assert all(shown.colors_visible.values()), f"named colours missing from the video's first frame: {shown}"
    assert all(shown.relations_correct), f"a relation of the caption is wrong in the video's first frame: {shown}"

    # decoder + add-on + Cycles: the render of the imported scene at the first camera reproduces that frame
    # (session 6: 19.8 dB; against the same frame a black image scores 6.5 dB, the frame upside down 8.5 dB and
    # a flat image of its mean colour 12.8 dB)
    height, width = render.shape[:2]
    frame = np.asarray(Image.fromarray(video_frame).resize((width, height), Image.BILINEAR))
    psnr = -10.0 * np.log10(np.mean((render - frame / 255.0) ** 2))
    assert psnr >= 16.0, f"the Cycles render is {psnr:.1f} dB from the video's first frame"
