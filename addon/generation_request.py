"""What Generate asks the engine for: the values the artist chose, with the model's defaults for the rest.

No bpy here (unit-tested without Blender); ``properties`` and ``generation`` call it with the panel's values.

The Generate panel's "Model Defaults" (on by default) leaves the resolution, frame count, steps and
guidance to the model: its manifest's ``defaults`` (the embedded default model's 13 frames of 128 x 128),
else the engine's (the released VIST3A's 512 x 512). So a value meant for one model never reaches another
model unnoticed: the request simply leaves those settings out and the engine fills them in. With it
unticked, the panel's own values are sent; unticking first copies the model's values into the fields
(:func:`model_panel_values`), so the artist starts from what the model was made for.
"""

from .engine.pipeline.settings import GenerationSettings, SettingsError

# Panel property -> GenerationSettings field: the values "Model Defaults" hands to the model.
MODEL_DEFAULT_PANEL_FIELDS = {
    "frames": "num_frames",
    "width": "width",
    "height": "height",
    "steps": "num_steps",
    "guidance": "guidance_scale",
}

# GenerationSettings field -> the label the artist sees, for messages about a setting.
_LABELS = {
    "prompt": "Prompt",
    "negative_prompt": "Negative",
    "seed": "Seed",
    "output_kind": "Output",
    "num_frames": "Frames",
    "width": "Width",
    "height": "Height",
    "num_steps": "Steps",
    "guidance_scale": "Guidance",
}


def request_settings(panel: dict, use_model_defaults: bool) -> dict:
    """The ``settings`` of the engine's generate request (GenerationSettings field names).

    Args:
        panel: the panel's values: ``prompt``, ``negative_prompt`` ("" for the model's own), ``seed``
            (None for a random one), ``output_kind`` and the keys of MODEL_DEFAULT_PANEL_FIELDS.
        use_model_defaults: leave MODEL_DEFAULT_PANEL_FIELDS out of the request (the model's defaults apply).
    """
    request = {"prompt": panel["prompt"], "seed": panel["seed"], "output_kind": panel["output_kind"]}
    if panel["negative_prompt"]:
        request["negative_prompt"] = panel["negative_prompt"]
    if not use_model_defaults:
        request.update({field: panel[prop] for prop, field in MODEL_DEFAULT_PANEL_FIELDS.items()})
        request["guidance_scale"] = round(float(request["guidance_scale"]), 4)  # Blender floats are 32-bit
    return request


def checked_settings(request: dict, model_defaults: dict) -> GenerationSettings:
    """The settings the engine will use for ``request`` with a model of these defaults.

    Raises ValueError with a message in the panel's words ("Invalid setting: Frames must be 4k+1 ...").
    """
    try:
        return GenerationSettings.from_dict({**model_defaults, **request})
    except SettingsError as exc:
        raise ValueError(f"Invalid setting: {artist_message(str(exc))}") from exc


def artist_message(message: str) -> str:
    """A settings message with the setting's field name replaced by the panel's label."""
    name, _, rest = message.partition(" ")
    return f"{_LABELS[name]} {rest}" if name in _LABELS and rest else message


def model_panel_values(model_defaults: dict) -> dict:
    """The model's values of the panel fields MODEL_DEFAULT_PANEL_FIELDS: its defaults, else the engine's."""
    settings = GenerationSettings(prompt="-", **model_defaults)
    return {prop: getattr(settings, field) for prop, field in MODEL_DEFAULT_PANEL_FIELDS.items()}


def summary(values: dict) -> str:
    """One line for the panel, e.g. "13 frames of 128 × 128 px, 30 steps, guidance 5"."""
    return (
        f"{values['frames']} frames of {values['width']} × {values['height']} px, "
        f"{values['steps']} steps, guidance {values['guidance']:g}"
    )
