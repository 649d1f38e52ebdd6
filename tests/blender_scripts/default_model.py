"""The installed extension's default model and what Generate sends with "Model Defaults" on and off (one
Blender session; a fake engine worker records each request and answers with a finished run).

Parameters: ``root`` (the repository, taken off ``sys.path``), ``zip`` (an extension built with a small
default model), ``worker`` (the fake engine Python, mode ``record``).
Used by tests/test_addon_default_model.py.
"""

import importlib
import os
import types

import bpy
from script_io import EXTENSION_MODULE as MODULE
from script_io import emit_result, install_extension, only_installed_code, params

p = params()
only_installed_code(p["root"])
install_extension(p["zip"])
generation = importlib.import_module(f"{MODULE}.generation")
panel = importlib.import_module(f"{MODULE}.panel")
state = importlib.import_module(f"{MODULE}.state")
prefs = bpy.context.preferences.addons[MODULE].preferences
settings = bpy.context.scene.vist3a_generate
PANEL = ("frames", "width", "height", "steps", "guidance")
out = {"extension_dir": os.path.dirname(generation.__file__)}

# 1. Nothing chosen in the preferences: the model is the one shipped inside the installed extension.
out["bundle_path"] = prefs.bundle_path
out["default_dir"] = prefs.default_bundle_dir()
out["model_reference"] = prefs.model_reference()
out["model_defaults"] = prefs.model_defaults()


class Recorder:
    """Stands in for a UILayout (nothing is drawn headless): records labels and property names."""

    def __init__(self):
        self.items, self.scale_y, self.enabled = [], 1.0, True

    def __getattr__(self, name):  # box, row, column, operator, progress, ...: all record into the same list
        return lambda *args, **kwargs: self

    def label(self, text="", icon="NONE"):
        self.items.append(["label", text])

    def prop(self, data, name, **kwargs):
        self.items.append(["prop", name])


# What drawing reads from the context; headless Blender has no region and a UI scale of 0.
DRAW_CONTEXT = types.SimpleNamespace(
    region=None,
    preferences=types.SimpleNamespace(
        system=types.SimpleNamespace(ui_scale=1.0), addons=bpy.context.preferences.addons
    ),
)


def drawn(draw):
    layout = Recorder()
    draw(layout)
    return layout.items


out["preferences_drawn"] = drawn(lambda layout: prefs._draw_models(layout, DRAW_CONTEXT, ""))


def generate():
    """Generate, wait for the (fake) engine, and what the panel says afterwards."""
    try:
        started = sorted(bpy.ops.vist3a.generate())
    except RuntimeError as error:  # an operator that reports an error raises in background mode
        return [["CANCELLED"], str(error)]
    outcome = generation.wait_for_generation(bpy.context, timeout=60)
    return [started, outcome.kind, state.STATUS.level, state.STATUS.message]


# 2. "Model Defaults" is on by default: the panel's resolution, frames, steps and guidance stay out of the
#    request, whatever the fields hold; the result's unknown word reaches the status line.
prefs.engine_python = p["worker"]
settings.prompt = "a red zebra"
settings.random_seed, settings.seed = False, 11
out["use_model_defaults"] = settings.use_model_defaults
out["panel_before"] = [getattr(settings, name) for name in PANEL]
draw_values = panel.VIST3A_PT_generate.draw_model_values
out["panel_drawn_with_defaults"] = drawn(lambda layout: draw_values(None, DRAW_CONTEXT, layout, settings))
out["with_defaults"] = generate()

# 3. Unticking starts the fields from the model's values; what the artist then changes is sent with them.
settings.use_model_defaults = False
out["panel_after_untick"] = [getattr(settings, name) for name in PANEL]
out["panel_drawn_own_values"] = drawn(lambda layout: draw_values(None, DRAW_CONTEXT, layout, settings))
settings.width = 64
out["own_values"] = generate()

# 4. A bad value is refused in the panel's words before the engine is asked.
settings.frames = 6
out["bad_value"] = generate()
state.SESSION.close()
emit_result(out)
