"""The default model on the engine's user paths: a bundle's generation defaults (manifest ``defaults``), the
order in which ``demo`` / ``generate`` choose a model (ending with the embedded ``models/default``), the
message when there is none, and ``demo`` / ``generate`` end to end on a tiny bundle that carries defaults."""

import argparse
import json
from pathlib import Path

import pytest

from engine.pipeline import model_choice
from engine.pipeline.settings import (
    BUNDLE_MANIFEST,
    MODEL_DEFAULT_FIELDS,
    GenerationSettings,
    ModelBundle,
    ModelBundleError,
    SettingsError,
)

ROOT = Path(__file__).resolve().parents[1]
# Small enough for a CPU in seconds, and unlike both the engine's defaults and the tests' usual 5 x 32 x 32.
TINY_DEFAULTS = {"num_frames": 9, "height": 48, "width": 32, "num_steps": 2, "guidance_scale": 3.0, "flow_shift": 2.5}


def _manifest(**changes) -> dict:
    data = {
        "format": "vist3a-bundle",
        "version": 1,
        "name": "m",
        "wan": "wan",
        "decoder": {"kind": "stitched", "checkpoint": "decoder"},
    }
    data.update(changes)
    return data


def _write_bundle(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BUNDLE_MANIFEST).write_text(json.dumps(_manifest(**changes)))
    return folder


# ----------------------------------------------------------------------------- manifest defaults


def test_defaults_are_read_and_the_users_values_win(tmp_path):
    bundle = ModelBundle.load(_write_bundle(tmp_path, defaults={"num_frames": 13, "height": 128, "width": 128}))
    assert bundle.defaults == {"num_frames": 13, "height": 128, "width": 128}
    settings = bundle.generation_settings({"prompt": "a red cube", "height": 64})
    assert (settings.num_frames, settings.height, settings.width) == (13, 64, 128)  # given wins, missing: model's
    assert settings.num_steps == GenerationSettings(prompt="-").num_steps  # neither: the engine's
    # A field given as null counts as given (null = "the preset's negative prompt", not the model's).
    with_negative = ModelBundle.load(_write_bundle(tmp_path / "n", defaults={"negative_prompt": "blurry"}))
    assert with_negative.generation_settings({"prompt": "x"}).negative_prompt == "blurry"
    assert with_negative.generation_settings({"prompt": "x", "negative_prompt": None}).negative_prompt is None


def test_a_manifest_without_defaults_is_unchanged(tmp_path):
    bundle = ModelBundle.load(_write_bundle(tmp_path))
    assert bundle.defaults == {} and "defaults" not in bundle.to_manifest()
    assert bundle.generation_settings({"prompt": "x"}) == GenerationSettings(prompt="x")
    with_defaults = ModelBundle.load(_write_bundle(tmp_path / "d", defaults=TINY_DEFAULTS))
    assert ModelBundle.from_manifest(with_defaults.to_manifest(), tmp_path / "d").defaults == TINY_DEFAULTS


@pytest.mark.parametrize(
    "defaults, named",
    [
        ({"num_frame": 13}, "num_frame"),  # a typo is refused, not ignored
        ({"prompt": "a cube"}, "prompt"),  # the prompt and the seed are the user's
        ({"seed": 1}, "seed"),
        ({"num_frames": 12}, "num_frames"),
        ({"height": 100}, "height"),
        ({"guidance_scale": "high"}, "guidance_scale"),
        ({"output_kind": "mesh"}, "output_kind"),
        ({"conditioning": "other"}, "conditioning"),
        ([13, 128], "'defaults' must be an object"),
    ],
)
def test_bad_defaults_are_refused_naming_the_key(tmp_path, defaults, named):
    with pytest.raises(ModelBundleError, match="defaults") as error:
        ModelBundle.load(_write_bundle(tmp_path, defaults=defaults))
    assert named in str(error.value) and str(tmp_path / BUNDLE_MANIFEST) in str(error.value)


def test_every_default_field_is_a_generation_setting():
    fields = set(GenerationSettings.__dataclass_fields__)
    assert set(MODEL_DEFAULT_FIELDS) <= fields and not {"prompt", "seed"} & set(MODEL_DEFAULT_FIELDS)


def test_bad_user_settings_are_still_refused_over_model_defaults(tmp_path):
    bundle = ModelBundle.load(_write_bundle(tmp_path, defaults={"num_frames": 13}))
    with pytest.raises(SettingsError, match="num_frames"):
        bundle.generation_settings({"prompt": "x", "num_frames": 6})
    with pytest.raises(SettingsError, match="unknown"):
        bundle.generation_settings({"prompt": "x", "frames": 9})


# ----------------------------------------------------------------------------- which model


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An empty user folder ($VIST3A_HOME) and embedded location; $VIST3A_MODEL unset."""
    home, embedded = tmp_path / "home", tmp_path / "repo" / "models" / "default"
    monkeypatch.setenv("VIST3A_HOME", str(home))
    monkeypatch.delenv("VIST3A_MODEL", raising=False)
    monkeypatch.setattr(model_choice, "EMBEDDED_BUNDLE", embedded)
    return home / "models" / "default", embedded


def test_the_embedded_bundle_is_models_default_beside_the_engine_package():
    import engine

    assert model_choice.EMBEDDED_BUNDLE == Path(engine.__file__).resolve().parent.parent / "models" / "default"
    assert model_choice.EMBEDDED_BUNDLE == ROOT / "models" / "default"


def test_model_order_option_environment_user_folder_embedded(places, tmp_path, monkeypatch):
    user, embedded = places
    _write_bundle(embedded)
    assert model_choice.find_model() == model_choice.ModelChoice(embedded, "the embedded default model")
    _write_bundle(user)
    assert model_choice.find_model() == model_choice.ModelChoice(user, "the default model folder")
    monkeypatch.setenv("VIST3A_MODEL", str(tmp_path / "from-env"))
    assert model_choice.find_model() == model_choice.ModelChoice(tmp_path / "from-env", "VIST3A_MODEL")
    assert model_choice.find_model(tmp_path / "given") == model_choice.ModelChoice(tmp_path / "given", "--model")


def test_no_model_says_where_it_looked_and_what_to_do(places):
    user, embedded = places
    with pytest.raises(model_choice.NoModelError) as error:
        model_choice.find_model()
    message = str(error.value)
    assert str(user) in message and str(embedded) in message and "--model" in message and "VIST3A_MODEL" in message
    # Parts without a manifest (the state while the default model is being trained) are named as such.
    (embedded / "generator").mkdir(parents=True)
    with pytest.raises(model_choice.NoModelError, match="not assembled yet"):
        model_choice.find_model()


def _demo_args(out: Path, **changes) -> argparse.Namespace:
    values = dict(prompt="a red cube", out=str(out), model=None, seed=0, device="cpu", frames=None, size=None)
    values.update(steps=None)
    values.update(changes)
    return argparse.Namespace(**values)


def test_demo_without_any_model_stops_with_the_message(places, tmp_path, capsys, caplog):
    from engine.pipeline import demo

    assert demo.run(_demo_args(tmp_path / "run")) == 2
    assert "no VIST3A model found" in caplog.text and not (tmp_path / "run").exists()
    assert "TINY" not in capsys.readouterr().out  # no tiny random model on a user path


def test_demo_names_a_bad_setting_by_its_option(tmp_path, caplog):
    from engine.pipeline import demo

    assert demo.run(_demo_args(tmp_path / "run", size=100)) == 2
    assert "--size must be a multiple of 16 in 16..2048, got 100" in caplog.text and "height" not in caplog.text
    assert demo.run(_demo_args(tmp_path / "run", frames=12)) == 2
    assert "--frames must be 4k+1" in caplog.text and not (tmp_path / "run").exists()


def test_setting_errors_in_option_terms():
    from engine.pipeline.settings import in_option_terms

    options = {"height": "--size", "width": "--size", "num_frames": "--frames"}
    message = "height and width must be multiples of 16 x 16 for this model, got 100 x 100"
    assert (
        in_option_terms(ValueError(message), options)
        == "--size must be multiples of 16 x 16 for this model, got 100 x 100"
    )
    # whole names only: a field name inside another word is left alone
    assert in_option_terms(ValueError("num_frames_total and heights"), options) == "num_frames_total and heights"
    assert in_option_terms(ValueError("height and width"), {"height": "--height", "width": "--width"}) == (
        "--height and --width"
    )


@pytest.fixture(scope="module")
def tiny_with_defaults(tmp_path_factory):
    """A tiny bundle with small defaults and a closed vocabulary (unknown words are reported)."""
    from engine.testing.tiny import build_tiny_bundle

    root = tmp_path_factory.mktemp("tiny-defaults") / "bundle"
    return build_tiny_bundle(root, defaults=TINY_DEFAULTS, closed_vocabulary=True)


@pytest.mark.slow
def test_demo_uses_the_embedded_model_with_its_defaults_and_reports_unknown_words(
    places, tiny_with_defaults, monkeypatch, tmp_path, capsys
):
    from engine.io.run_format import read_run_metadata
    from engine.pipeline import demo

    monkeypatch.setattr(model_choice, "EMBEDDED_BUNDLE", tiny_with_defaults)
    out = tmp_path / "run"
    assert demo.run(_demo_args(out, prompt="a red zebra on a table", steps=1)) == 0
    printed = capsys.readouterr().out
    assert f"Model: {tiny_with_defaults} (from the embedded default model)" in printed
    assert "the model does not know: zebra" in printed
    assert "9 frames of 32 x 48, 1 steps, guidance 3, flow shift 2.5" in printed
    metadata = read_run_metadata(out)
    settings = metadata["settings"]
    expected = {**TINY_DEFAULTS, "num_steps": 1}  # --steps given: it wins over the model's 2
    assert {key: settings[key] for key in expected} == expected
    assert metadata["unknown_words"] == ["zebra"] and metadata["latent_shape"][2] == 3  # 9 frames -> 3 latents
    assert metadata["model"]["bundle"] == str(tiny_with_defaults) and metadata["model"]["manifest"]["defaults"]


@pytest.mark.slow
def test_generate_without_model_uses_the_default_model_and_flags_win(places, tiny_with_defaults, monkeypatch, tmp_path):
    from engine.cli import main
    from engine.io.run_format import read_run_metadata

    user, _ = places
    user.parent.mkdir(parents=True)
    user.symlink_to(tiny_with_defaults, target_is_directory=True)  # the user's default folder this time
    argv = ["generate", "a red house", "--out", str(tmp_path / "run"), "--device", "cpu", "--seed", "1"]
    assert main(argv + ["--width", "16", "--points"]) == 0
    settings = read_run_metadata(tmp_path / "run")["settings"]
    assert (settings["num_frames"], settings["height"], settings["width"]) == (9, 48, 16)
    assert (settings["num_steps"], settings["guidance_scale"], settings["flow_shift"]) == (2, 3.0, 2.5)
    assert settings["output_kind"] == "points" and settings["conditioning"] == "ours"


def test_a_finetuned_bundle_keeps_the_base_models_defaults(tmp_path):
    from engine.alignment.train import write_finetuned_bundle

    base = ModelBundle.load(_write_bundle(tmp_path / "base", defaults=TINY_DEFAULTS))
    (tmp_path / "run").mkdir()
    manifest = write_finetuned_bundle(base, tmp_path / "run", "adapter_ema", steps=3)
    assert ModelBundle.load(manifest).defaults == TINY_DEFAULTS


@pytest.mark.slow
def test_a_saved_pipeline_keeps_its_bundles_defaults(tiny_with_defaults, tmp_path):
    from engine.pipeline.settings import RuntimeOptions
    from engine.pipeline.vist3a import Vist3aPipeline

    pipeline = Vist3aPipeline.from_pretrained(tiny_with_defaults, runtime=RuntimeOptions(device="cpu"))
    saved = pipeline.save_pretrained(tmp_path / "saved")
    assert ModelBundle.load(saved).defaults == TINY_DEFAULTS


def test_the_readmes_main_job_prompt_is_in_the_default_models_vocabulary():
    import re

    from engine.generator.text import build_tokenizer, unknown_words

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    prompts = re.findall(r'^python3 build\.py demo "([^"]+)"', readme, flags=re.MULTILINE)
    assert prompts, "the README shows no main-job command"
    tokenizer = build_tokenizer()  # the default model's: the procedural world's words
    for prompt in prompts:
        assert unknown_words(tokenizer, prompt) == [], prompt
