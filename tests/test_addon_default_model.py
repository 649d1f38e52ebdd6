"""The default model in the add-on: shipped inside the extension zip (the bundle's files only), found by the
installed add-on with nothing configured, and the Generate panel's "Model Defaults" (what the request
carries with it on and off). The request logic is tested without Blender (``generation_request`` is
bpy-free); one Blender session checks the installed extension with a fake engine worker."""

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest
from addon_modules import load_addon_module
from blender_env import run_in_blender
from test_addon_ui_faults import _run_folder

ROOT = Path(__file__).resolve().parents[1]
FAKE_WORKER = Path(__file__).resolve().parent / "blender_scripts" / "fake_worker.py"
PANEL_FIELDS = ("frames", "width", "height", "steps", "guidance")
DEFAULTS = {"num_frames": 9, "height": 128, "width": 96, "num_steps": 20, "guidance_scale": 4.5, "flow_shift": 3.0}

_spec = importlib.util.spec_from_file_location("vist3a_build_default_model", ROOT / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)
request = load_addon_module("generation_request")


def _fake_model(root: Path, **manifest_changes) -> Path:
    """A default-model folder as the project keeps it: the bundle's parts plus a teacher it does not name."""
    files = {
        "generator/model_index.json": "{}",
        "generator/transformer/diffusion_pytorch_model.safetensors": "weights",
        "stitched_anysplat/model.safetensors": "weights",
        "stitched_anysplat/stitched_config.json": "{}",
        "stitched_vggt/model.safetensors": "weights",
        "stitched_vggt/stitched_config.json": "{}",
        "lora/adapter_config.json": "{}",
        "lora/adapter_model.safetensors": "weights",
        "anysplat_teacher/model.safetensors": "teacher weights (not part of the bundle)",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    manifest = {
        "format": "vist3a-bundle",
        "version": 1,
        "name": "default",
        "wan": "generator",
        "lora": "lora",
        "decoder": {"kind": "stitched", "checkpoint": "stitched_anysplat"},
        "points_decoder": {"kind": "stitched", "checkpoint": "stitched_vggt"},
        "defaults": DEFAULTS,
    }
    manifest.update(manifest_changes)
    (root / "vist3a.json").write_text(json.dumps(manifest))
    return root


BUNDLE_FILES = {
    "vist3a.json",
    "generator/model_index.json",
    "generator/transformer/diffusion_pytorch_model.safetensors",
    "stitched_anysplat/model.safetensors",
    "stitched_anysplat/stitched_config.json",
    "stitched_vggt/model.safetensors",
    "stitched_vggt/stitched_config.json",
    "lora/adapter_config.json",
    "lora/adapter_model.safetensors",
}


# ----------------------------------------------------------------------------- the extension's contents


def test_staging_ships_the_bundles_files_and_nothing_else(tmp_path):
    model = _fake_model(tmp_path / "default")
    shipped = build.stage_extension(tmp_path / "stage", build.MANIFEST, model)
    assert {p.as_posix() for p in shipped} == BUNDLE_FILES
    staged = tmp_path / "stage" / "models" / "default"
    assert {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()} == BUNDLE_FILES
    assert (staged / "lora" / "adapter_model.safetensors").read_text() == "weights"
    # beside the staged engine package, where engine.pipeline.model_choice looks for it
    assert (tmp_path / "stage" / "engine" / "pipeline" / "model_choice.py").is_file()


def test_no_manifest_ships_no_model(tmp_path):
    model = _fake_model(tmp_path / "default")
    (model / "vist3a.json").unlink()
    assert build.stage_extension(tmp_path / "stage", build.MANIFEST, model) == []
    assert not (tmp_path / "stage" / "models").exists()


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"wan": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}, "'wan'"),  # a hub id: the extension would need a download
        ({"lora": "../elsewhere"}, "does not exist"),
        ({"defaults": {"num_frames": 12}}, "num_frames"),
    ],
)
def test_a_default_model_that_cannot_work_offline_fails_the_build(tmp_path, changes, named):
    model = _fake_model(tmp_path / "default", **changes)
    with pytest.raises(build.BuildError, match="default model") as error:
        build.stage_extension(tmp_path / "stage", build.MANIFEST, model)
    assert named in str(error.value)


def test_a_part_outside_the_bundle_folder_fails_the_build(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "adapter_config.json").write_text("{}")
    (outside / "adapter_model.safetensors").write_text("w")
    model = _fake_model(tmp_path / "default", lora=str(outside))
    with pytest.raises(build.BuildError, match="inside the bundle folder"):
        build.stage_extension(tmp_path / "stage", build.MANIFEST, model)


@pytest.fixture(scope="module")
def default_model_zip(tmp_path_factory):
    """The extension built by Blender's tool with a small default model."""
    model = _fake_model(tmp_path_factory.mktemp("model") / "default")
    return build.build_extension(out_dir=tmp_path_factory.mktemp("dist"), default_model=model)


def test_the_extension_zip_holds_the_default_model(default_model_zip):
    with zipfile.ZipFile(default_model_zip) as zf:
        names = set(zf.namelist())
    assert {f"models/default/{name}" for name in BUNDLE_FILES} <= names
    assert "models/default/anysplat_teacher/model.safetensors" not in names
    assert "engine/pipeline/model_choice.py" in names


# ----------------------------------------------------------------------------- the request (no Blender)


def _panel(**changes):
    values = dict(prompt="a red cube", negative_prompt="", seed=None, output_kind="gaussians")
    values.update(frames=13, width=512, height=512, steps=50, guidance=7.5)
    values.update(changes)
    return values


def test_model_defaults_leave_the_sizes_to_the_model():
    sent = request.request_settings(_panel(), use_model_defaults=True)
    assert sent == {"prompt": "a red cube", "seed": None, "output_kind": "gaussians"}
    used = request.checked_settings(sent, DEFAULTS)
    assert (used.num_frames, used.height, used.width, used.num_steps, used.guidance_scale) == (9, 128, 96, 20, 4.5)


def test_without_model_defaults_the_panels_values_win():
    sent = request.request_settings(_panel(width=64, negative_prompt="fog", seed=3), use_model_defaults=False)
    assert sent["num_frames"] == 13 and sent["width"] == 64 and sent["num_steps"] == 50
    assert sent["negative_prompt"] == "fog" and sent["seed"] == 3
    used = request.checked_settings(sent, DEFAULTS)
    assert (used.width, used.height, used.flow_shift) == (64, 512, 3.0)  # no panel field for flow shift


def test_a_bad_value_is_named_with_the_panels_label():
    with pytest.raises(ValueError, match=r"^Invalid setting: Frames must be 4k\+1") as error:
        request.checked_settings(request.request_settings(_panel(frames=6), False), DEFAULTS)
    assert "num_frames" not in str(error.value)


def test_the_models_values_fill_the_panel_and_its_summary():
    values = request.model_panel_values(DEFAULTS)
    assert values == {"frames": 9, "width": 96, "height": 128, "steps": 20, "guidance": 4.5}
    assert request.summary(values) == "9 frames of 96 × 128 px, 20 steps, guidance 4.5"
    engine = request.model_panel_values({})  # a model without defaults: the engine's (the released VIST3A's)
    assert request.summary(engine) == "13 frames of 512 × 512 px, 50 steps, guidance 7.5"


# ----------------------------------------------------------------------------- in Blender


@pytest.mark.blender
@pytest.mark.slow
def test_installed_add_on_uses_its_default_model_and_sends_only_the_artists_choices(default_model_zip, tmp_path):
    run = tmp_path / "finished run"
    _run_folder(run)
    started = tmp_path / "started-record.json"
    worker = tmp_path / "python-record"
    worker.write_text(
        f'#!/bin/sh\nVIST3A_FAKE_RUN="{run}" exec "{sys.executable}" "{FAKE_WORKER}" record "{started}" "$@"\n'
    )
    worker.chmod(0o755)
    parameters = {"root": str(ROOT), "zip": str(default_model_zip), "worker": str(worker)}
    result = run_in_blender("default_model", parameters, tmp_path=tmp_path, timeout=240).result

    embedded = str(Path(result["extension_dir"]) / "models" / "default")
    assert result["bundle_path"] == "" and result["default_dir"] == embedded
    assert result["model_reference"] == embedded and result["model_defaults"] == DEFAULTS
    labels = " ".join(text for kind, text in result["preferences_drawn"] if kind == "label")
    assert "Default model (comes with the add-on):" in labels and "models/default" in labels
    requests = [json.loads(line) for line in Path(f"{started}.requests").read_text().splitlines()]
    assert len(requests) == 2, requests
    assert all(r["model"] == embedded for r in requests)
    # Blender renders the scene itself: the worker is asked for no fly-through video (most of a CPU run's time).
    assert all(r["flythrough"] is False for r in requests)

    # Model Defaults on: none of the panel's 512 px values is sent; the unknown word reaches the status.
    assert result["use_model_defaults"] is True and result["panel_before"][:2] == [13, 512]
    assert requests[0]["settings"] == {"prompt": "a red zebra", "seed": 11, "output_kind": "gaussians"}
    drawn = result["panel_drawn_with_defaults"]
    assert ["prop", "use_model_defaults"] in drawn and ["prop", "width"] not in drawn
    assert "9 frames of 96 × 128 px, 20 steps, guidance 4.5" in " ".join(text for _, text in drawn)
    started_ok, kind, level, message = result["with_defaults"]
    assert started_ok == ["FINISHED"] and kind == "result" and level == "WARNING"
    assert "the model does not know: zebra" in message

    # Unticked: the fields start from the model's values; the artist's change is sent with them.
    assert result["panel_after_untick"] == [9, 96, 128, 20, 4.5]
    assert {name for kind, name in result["panel_drawn_own_values"] if kind == "prop"} >= set(PANEL_FIELDS)
    sent = requests[1]["settings"]
    assert (sent["num_frames"], sent["width"], sent["height"], sent["num_steps"]) == (9, 64, 128, 20)
    assert sent["guidance_scale"] == 4.5

    started_bad, message = result["bad_value"]
    assert started_bad == ["CANCELLED"] and "Frames must be 4k+1" in message
