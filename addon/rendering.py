"""One-click Cycles stills from a generated camera (synchronous, so it works headless too)."""

import os

import bpy

from . import blender_data

DEFAULT_SAMPLES = 32


def default_render_path(camera) -> str:
    """Next to the saved .blend (``//renders/``), or in the temp folder for an unsaved file."""
    filename = bpy.path.clean_name(camera.name) + ".png"
    if bpy.data.filepath:
        return os.path.join(bpy.path.abspath("//renders"), filename)
    return os.path.join(bpy.app.tempdir or os.path.abspath("."), "vist3a_renders", filename)


def render_from_camera(scene, camera, filepath: str = "", samples: int = DEFAULT_SAMPLES, denoise: bool = False) -> str:
    """Renders ``scene`` through ``camera`` with Cycles and writes a PNG; returns its absolute path.

    The camera becomes the scene camera, with the resolution it was generated for. Splat scenes
    converge fast (emission and transparency, no lighting), so a few dozen samples are plenty, and
    the denoiser stays off unless ``denoise``: it smears splat detail and shifts flat colours (on a
    small render, a flat world of 0.3 came out as 0.26). The render settings splats need are applied
    as well; the scene's own denoising setting is restored afterwards.
    """
    if camera is None or camera.type != "CAMERA":
        raise ValueError("choose a camera object to render from")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    path = os.path.abspath(bpy.path.abspath(filepath or default_render_path(camera)))
    if not path.lower().endswith(".png"):
        path += ".png"
    os.makedirs(os.path.dirname(path), exist_ok=True)

    blender_data.use_camera(scene, camera)
    blender_data.configure_render_settings(scene)
    scene.cycles.samples = samples
    render = scene.render
    render.image_settings.file_format = "PNG"
    render.filepath = path
    denoising = scene.cycles.use_denoising
    scene.cycles.use_denoising = denoise
    try:
        with bpy.context.temp_override(scene=scene):
            bpy.ops.render.render(write_still=True)
    finally:
        scene.cycles.use_denoising = denoising
    if not os.path.isfile(path):
        raise RuntimeError(f"Cycles finished but no image was written to {path}")
    return path
