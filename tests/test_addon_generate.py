"""Generate from Blender through the real engine worker on tiny models (one Blender subprocess).

The installed extension starts its bundled ``engine.worker`` in the project's Python, on the tiny
bundle of ``engine.testing.tiny`` (real Wan/UMT5/VAE classes and the real stitched decoder, tiny sizes, random
weights). In the same Blender session:

1. Generate: progress stages and a preview arrive; the result lands in a new collection named from
   the prompt, at the 3D cursor, with the run folder on every object; point count and attribute
   values equal the run's PLY after the importer's documented conversions.
2. History: the run is listed (prompt, date) and re-imported into another collection.
3. Cancel mid-run (during denoising): "cancelled", scene unchanged, no run folder left, same worker.
4. SIGKILL of the worker mid-run: an error naming the signal, scene unchanged, Blender alive.
5. The next Generate starts a fresh worker and succeeds. Release stops the worker.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from blender_env import run_in_blender
from test_pipeline_tiny import GAUSSIANS_PER_RUN, build_tiny_bundle

from engine.io import read_gaussian_ply

ROOT = Path(__file__).resolve().parents[1]
MODULE = "bl_ext.user_default.vist3a"

_spec = importlib.util.spec_from_file_location("vist3a_addon_conversions_e2e", ROOT / "addon" / "conversions.py")
conversions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conversions)


@pytest.mark.blender
@pytest.mark.slow
def test_generate_through_the_engine_worker_cancel_kill_and_recover(extension_zip, tmp_path):
    bundle = build_tiny_bundle(tmp_path / "bundle")
    outputs = tmp_path / "outputs"
    dump = tmp_path / "attributes.npz"
    script = f"""
import sys
sys.path[:] = [p for p in sys.path if p not in ("", {str(ROOT)!r})]  # only the installed extension's code
import importlib, os, signal, time
import bpy
import numpy as np
bpy.ops.extensions.package_install_files(filepath={str(extension_zip)!r}, repo="user_default", enable_on_install=True)
ui = importlib.import_module("{MODULE}.generate_ui")
prefs = bpy.context.preferences.addons["{MODULE}"].preferences
prefs.engine_python = {sys.executable!r}
prefs.bundle_path = {str(bundle)!r}
prefs.outputs_path = {str(outputs)!r}
prefs.device = "cpu"
prefs.preview_every = 1
scene = bpy.context.scene
scene.cursor.location = (1.0, 2.0, 3.0)
settings = scene.vist3a_generate
settings.prompt = "a red house"
settings.frames, settings.width, settings.height, settings.steps = 5, 32, 32, 3
settings.random_seed, settings.seed = False, 7
out = {{}}

def inventory():
    return {{name: len(getattr(bpy.data, name)) for name in ("objects", "collections", "pointclouds", "materials")}}

def run_until(condition, timeout=300):
    labels, previews = [], 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ui.SESSION.job
        if job is not None and (not labels or labels[-1] != job.label):
            labels.append(job.label)
        # (icons get no id in background mode; the copied preview image shows that one arrived)
        if ui.PREVIEWS.source and os.path.isfile(os.path.join(ui.PREVIEWS.folder, f"preview-{{ui.PREVIEWS.counter}}.png")):
            previews = max(previews, ui.PREVIEWS.counter)
        if condition():
            return labels, previews, None
        outcome = ui.update(bpy.context)
        if outcome is not None:
            return labels, previews, outcome
        time.sleep(0.02)
    raise TimeoutError("the generation did not get there in time")

# 1. generate
before = inventory()
out["generate"] = sorted(bpy.ops.vist3a.generate())
out["busy_poll"] = bpy.ops.vist3a.generate.poll()
first_pid = ui.SESSION.worker_pid
labels, previews, outcome = run_until(lambda: False)
out["labels"], out["preview_seen"] = labels, previews > 0
out["outcome"] = [outcome.kind, outcome.message, outcome.output_dir]
out["status"] = ui.STATUS.message
collections = [c for c in bpy.data.collections if c.name.startswith("VIST3A")]
out["collections"] = [c.name for c in collections]
collection = collections[0]
cloud = next(o for o in collection.objects if o.type == "POINTCLOUD")
root = cloud.parent
out["kinds"] = sorted(o.type for o in collection.objects)
out["count"] = len(cloud.data.points)
out["root_location"] = list(root.matrix_world.translation)
out["sources"] = sorted({{o["vist3a_source"] for o in collection.objects}})
arrays = {{}}
for name, width, key in (("position", 3, "vector"), ("base_color", 4, "color"), ("opacity", 1, "value"),
                         ("scale", 3, "vector"), ("rotation", 4, "value"), ("radius", 1, "value")):
    values = np.empty(len(cloud.data.points) * width, dtype=np.float32)
    cloud.data.attributes[name].data.foreach_get(key, values)
    arrays[name] = values.reshape(-1, width)
np.savez({str(dump)!r}, **arrays)

# 2. history and re-import
ui.refresh_history(bpy.context, force=True)
out["history"] = [[run.prompt, run.path, run.label] for run in ui.STATUS.runs]
out["reimport"] = sorted(bpy.ops.vist3a.import_run(directory=ui.STATUS.runs[0].path))
out["collections_after_reimport"] = sorted(c.name for c in bpy.data.collections if c.name.startswith("VIST3A"))

# 3. cancel during denoising
settings.steps = 1000
after_import = inventory()
bpy.ops.vist3a.generate()
run_until(lambda: ui.SESSION.job is not None and ui.SESSION.job.stage == "denoise")
out["cancel_label_before"] = ui.SESSION.job.label
bpy.ops.vist3a.cancel_generation()
labels, _, outcome = run_until(lambda: False, timeout=120)
out["cancel"] = [outcome.kind, ui.STATUS.message, inventory() == after_import]
out["runs_after_cancel"] = sorted(os.listdir({str(outputs)!r}))
out["same_worker"] = ui.SESSION.worker_pid == first_pid

# 4. the worker is killed in the middle of a run
bpy.ops.vist3a.generate()
run_until(lambda: ui.SESSION.job is not None and ui.SESSION.job.stage == "denoise")
os.kill(ui.SESSION.worker_pid, signal.SIGKILL)
labels, _, outcome = run_until(lambda: False, timeout=60)
out["killed"] = [outcome.kind, outcome.message, ui.STATUS.level, inventory() == after_import]
out["worker_after_kill"] = ui.SESSION.worker_running

# 5. the next Generate works with a fresh worker; Release stops it
settings.steps, settings.seed = 2, 8
bpy.ops.vist3a.generate()
out["new_pid"] = ui.SESSION.worker_pid not in (None, first_pid)
outcome = ui.wait_for_generation(bpy.context, timeout=300)
out["recovered"] = [outcome.kind, len([c for c in bpy.data.collections if c.name.startswith("VIST3A")])]
out["release"] = sorted(bpy.ops.vist3a.release_engine())
out["worker_after_release"] = ui.SESSION.worker_running
emit_result(out)
"""
    result = run_in_blender(script, tmp_path=tmp_path, timeout=900, env={"OMP_NUM_THREADS": "1"}).result

    assert result["generate"] == ["FINISHED"]
    assert result["busy_poll"] is False, "Generate must be greyed out while a generation runs"
    kind, message, output_dir = result["outcome"]
    assert kind == "result", message
    labels = result["labels"]
    # The panel's stage labels, in order (a poll may skip a step, never reorder stages).
    assert labels[0] == "Starting the engine…" and "Loading models" in labels and "Writing outputs" in labels, labels
    denoising = [label for label in labels if label.startswith("Denoising ")]
    assert denoising and all(label in ("Denoising 1/3", "Denoising 2/3", "Denoising 3/3") for label in denoising)
    assert labels.index("Loading models") < labels.index(denoising[0]) < labels.index("Writing outputs")
    assert result["preview_seen"]
    assert result["collections"] == ["VIST3A a red house"]
    assert "a red house" in result["status"]
    assert result["kinds"][:2] == ["CAMERA", "CAMERA"] and result["kinds"][-2:] == ["EMPTY", "POINTCLOUD"]
    assert result["kinds"].count("CAMERA") == 5
    assert np.allclose(result["root_location"], [1.0, 2.0, 3.0])
    assert result["sources"] == [output_dir] and Path(output_dir).parent == tmp_path / "outputs"

    # 5 frames, one Gaussian per pixel of the 28 x 28 decoder input, equal to the PLY's.
    ply = read_gaussian_ply(Path(output_dir) / "scene.ply")
    assert result["count"] == len(ply.means) == GAUSSIANS_PER_RUN
    attrs = conversions.gaussian_point_attributes(ply.f_dc, ply.opacity, ply.scale, ply.rot)
    got = np.load(tmp_path / "attributes.npz")
    expected = {
        "position": ply.means,
        "base_color": np.concatenate([attrs.color, np.ones((len(ply.means), 1))], axis=1),
        "opacity": attrs.opacity[:, None],
        "scale": attrs.scale,
        "rotation": attrs.rotation,
        "radius": attrs.radius[:, None],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-5, atol=1e-6, err_msg=name)
    metadata = json.loads((Path(output_dir) / "metadata.json").read_text())
    assert metadata["settings"]["prompt"] == "a red house" and metadata["seed"] == 7

    assert [row[:2] for row in result["history"]] == [["a red house", output_dir]]
    assert result["history"][0][2].endswith("  a red house")
    assert result["reimport"] == ["FINISHED"]
    assert result["collections_after_reimport"] == ["VIST3A a red house", "VIST3A a red house.001"]

    assert result["cancel_label_before"].startswith("Denoising ")
    assert result["cancel"] == ["cancelled", "Generation cancelled; the scene is unchanged", True]
    assert result["runs_after_cancel"] == [Path(output_dir).name], "a cancelled run left a folder behind"
    assert result["same_worker"], "the worker must survive a cancel"

    kind, message, level, unchanged = result["killed"]
    assert kind == "error" and level == "ERROR" and "killed by signal 9" in message
    assert unchanged, "a killed run changed the scene"
    assert not result["worker_after_kill"]

    assert result["new_pid"]
    assert result["recovered"] == ["result", 3]
    assert result["release"] == ["FINISHED"] and not result["worker_after_release"]
