"""The add-on's per-scene settings (PropertyGroups), stored in .blend files.

``scene.vist3a`` (``VIST3ASceneSettings``: the Render panel) and ``scene.vist3a_generate``
(``VIST3AGenerateSettings``: what to generate). Their property names are part of saved files: keep them.
"""

import bpy

from . import blender_data, generation_request, preferences, rendering
from .engine.pipeline.settings import MAX_SEED

MAX_SEED_UI = MAX_SEED  # the engine keeps seeds within Blender's 32-bit int properties

_BASE_SPLAT_MODE_ITEMS = (
    ("AUTO", "Automatic", "Blender's own Gaussian splats where available, otherwise point-cloud spheres", 0),
    (
        "POINTS",
        "Point cloud",
        "Cycles spheres showing each splat's exact Gaussian footprint (fast, little memory)",
        1,
    ),
    (
        "ELLIPSOIDS",
        "Ellipsoids",
        "Instanced ellipsoids around each splat, the same footprint (slower, more memory)",
        2,
    ),
)
_NATIVE_ITEM = ("NATIVE", "Native splats", "Blender's own Gaussian-splat point cloud, rendered by Blender itself", 3)


def splat_mode_items(_self=None, _context=None):
    """The splat modes this Blender offers: "Native splats" only where it has them (feature-detected)."""
    return _BASE_SPLAT_MODE_ITEMS + ((_NATIVE_ITEM,) if blender_data.native_splat_type() else ())


# Dynamic enum items must stay referenced from Python while Blender shows them.
SPLAT_MODE_ITEMS = splat_mode_items()


def _is_generated_camera(_settings, obj):
    return obj.type == "CAMERA" and obj.get(blender_data.KIND_PROPERTY) == "camera"


class VIST3ASceneSettings(bpy.types.PropertyGroup):
    """Per-scene panel state (stored in the .blend as ``scene.vist3a``)."""

    render_camera: bpy.props.PointerProperty(
        name="Camera",
        description="Generated camera to render from",
        type=bpy.types.Object,
        poll=_is_generated_camera,
    )
    render_samples: bpy.props.IntProperty(
        name="Samples", default=rendering.DEFAULT_SAMPLES, min=1, soft_max=1024, description="Cycles samples"
    )
    render_path: bpy.props.StringProperty(
        name="Output",
        description="PNG to write (empty: renders/<camera>.png next to the .blend)",
        subtype="FILE_PATH",
    )


def _model_defaults_toggled(settings, context):
    """Unticking "Model Defaults" starts the fields from the model's values (when the model can be read)."""
    if settings.use_model_defaults:
        return
    try:
        defaults = preferences.get(context).model_defaults()
    except preferences.ModelConfigError:
        return  # no usable model yet: the fields keep their values; Generate will say what is missing
    for name, value in generation_request.model_panel_values(defaults).items():
        setattr(settings, name, value)


class VIST3AGenerateSettings(bpy.types.PropertyGroup):
    """What to generate (stored per scene as ``scene.vist3a_generate``)."""

    prompt: bpy.props.StringProperty(name="Prompt", description="The scene to generate")
    negative_prompt: bpy.props.StringProperty(
        name="Negative",
        description="What to steer away from (empty: the model's own negative prompt)",
        default="",
    )
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, max=MAX_SEED_UI)
    random_seed: bpy.props.BoolProperty(
        name="Random Seed", description="Draw a new seed for every generation (the one used is recorded)", default=True
    )
    use_model_defaults: bpy.props.BoolProperty(
        name="Model Defaults",
        description="Generate at the resolution, frame count, steps and guidance the model was made for. "
        "Untick to choose them yourself (the fields start from the model's values)",
        default=True,
        update=_model_defaults_toggled,
    )
    steps: bpy.props.IntProperty(name="Steps", description="Denoising steps", default=50, min=1, max=1000)
    guidance: bpy.props.FloatProperty(
        name="Guidance", description="Classifier-free guidance scale (1: off)", default=7.5, min=1.0, max=30.0
    )
    frames: bpy.props.IntProperty(
        name="Frames", description="Video frames: 4k+1 (5, 9, 13, ...)", default=13, min=5, max=161, step=4
    )
    width: bpy.props.IntProperty(name="Width", description="Multiple of 16", default=512, min=16, max=2048, step=16)
    height: bpy.props.IntProperty(name="Height", description="Multiple of 16", default=512, min=16, max=2048, step=16)
    output_kind: bpy.props.EnumProperty(
        name="Output",
        items=(
            ("gaussians", "Gaussian Splats", "3D Gaussian splats"),
            (
                "points",
                "Point Cloud",
                "Coloured points: the model's pointmap decoder (a stitched VGGT) when it has one, "
                "else the centres of its Gaussians",
            ),
        ),
        default="gaussians",
    )
    splat_mode: bpy.props.EnumProperty(name="Splats As", items=splat_mode_items)
    show_history: bpy.props.BoolProperty(name="History", default=False)

    def panel_values(self) -> dict:
        """The values ``generation_request.request_settings`` reads."""
        values = {name: getattr(self, name) for name in generation_request.MODEL_DEFAULT_PANEL_FIELDS}
        values.update(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=None if self.random_seed else self.seed,
            output_kind=self.output_kind,
        )
        return values

    def request_settings(self) -> dict:
        """The engine request's settings: what the artist chose (the model's defaults fill in the rest)."""
        return generation_request.request_settings(self.panel_values(), self.use_model_defaults)


def register_properties():
    """Attaches the settings to every scene (after the classes are registered)."""
    bpy.types.Scene.vist3a = bpy.props.PointerProperty(type=VIST3ASceneSettings)
    bpy.types.Scene.vist3a_generate = bpy.props.PointerProperty(type=VIST3AGenerateSettings)


def unregister_properties():
    del bpy.types.Scene.vist3a_generate
    del bpy.types.Scene.vist3a
