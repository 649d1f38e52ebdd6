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

_spec = importlib.util.spec_from_file_location("vist3a_addon_conversions_e2e", ROOT / "addon" / "conversions.py")
conversions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conversions)


@pytest.mark.blender
@pytest.mark.slow
def test_generate_through_the_engine_worker_cancel_kill_and_recover(extension_zip, tmp_path):
    bundle = build_tiny_bundle(tmp_path / "bundle")
    outputs = tmp_path / "outputs"
    dump = tmp_path / "attributes.npz"
    parameters = {
        "root": str(ROOT),
        "zip": str(extension_zip),
        "python": sys.executable,
        "bundle": str(bundle),
        "outputs": str(outputs),
        "dump": str(dump),
    }
    result = run_in_blender(
        "generate_end_to_end", parameters, tmp_path=tmp_path, timeout=900, env={"OMP_NUM_THREADS": "1"}
    ).result

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
