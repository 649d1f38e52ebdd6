"""Add-on preferences: the engine environment, the models, the device and memory options.

Files the add-on owns live in the extension's user directory (``bpy.utils.extension_path_user``),
which survives upgrades of the extension: the engine environment (``engine-env``), a default model
bundle the user copied there (``models/default``), the manifest written for models given part by part
(``models/custom``), the generations (``outputs``) and the worker's logs (``logs``).

The default model (the "Bundle" field left empty) is that user copy when it holds a ``vist3a.json``, else
the *embedded default model* the extension ships in its own folder (``models/default`` beside the bundled
engine; ``engine.pipeline.model_choice.EMBEDDED_BUNDLE``): it works right after installing, with no download.

The preferences' buttons name their operators (``setup_operators``) by ``bl_idname``: those operators
read the preferences, so this module does not import them (dependencies point one way).
"""

import os

import bpy

from . import client, setup_env
from .engine.pipeline import model_choice
from .engine.pipeline.settings import ModelBundle, ModelBundleError, ModelNotFoundError
from .state import SETUP
from .ui_text import wrapped_label

ENGINE_ENV_FOLDER = "engine-env"
DEFAULT_BUNDLE_FOLDER = os.path.join("models", "default")
CUSTOM_BUNDLE_FOLDER = os.path.join("models", "custom")
OUTPUTS_FOLDER = "outputs"
LOGS_FOLDER = "logs"

# The stitched decoder kind the released VIST3A models use.
DEFAULT_DECODER_KIND = "anysplat-stitched"


def base_package() -> str:
    return __package__


def user_path(*parts: str, create: bool = False) -> str:
    """A path in the extension's user directory (kept across upgrades, unlike the extension folder)."""
    return bpy.utils.extension_path_user(base_package(), path=os.path.join(*parts) if parts else "", create=create)


def extension_dir() -> str:
    """The installed extension's folder: it holds the bundled ``engine`` package the worker runs."""
    return os.path.dirname(os.path.abspath(__file__))


def get(context=None) -> "VIST3AAddonPreferences":
    context = context or bpy.context
    return context.preferences.addons[base_package()].preferences


class ModelConfigError(ValueError):
    """The model preferences do not describe a usable model; the message says which field and why."""


class VIST3AAddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    # --- engine environment
    engine_python: bpy.props.StringProperty(
        name="Engine Python",
        description=(
            "Python interpreter of an environment that has the VIST3A engine's packages (torch, diffusers). "
            "Empty: the environment made by 'Set up engine'"
        ),
        subtype="FILE_PATH",
        default="",
    )

    # --- models
    model_source: bpy.props.EnumProperty(
        name="Model",
        items=(
            ("BUNDLE", "Bundle", "A model bundle folder (with vist3a.json); empty: the default model"),
            ("PARTS", "Parts", "The Wan pipeline, LoRA adapter and stitched decoder given one by one"),
        ),
        default="BUNDLE",
    )
    bundle_path: bpy.props.StringProperty(
        name="Bundle",
        description="Model bundle folder (with vist3a.json). Empty: the default model that comes with the add-on",
        subtype="DIR_PATH",
    )
    wan_model: bpy.props.StringProperty(
        name="Wan Pipeline",
        description="Wan 2.1 diffusers pipeline: a local folder or a Hugging Face hub id (owner/name)",
        default="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    )
    lora_path: bpy.props.StringProperty(
        name="LoRA", description="PEFT LoRA adapter folder for the Wan transformer (optional)", subtype="DIR_PATH"
    )
    decoder_path: bpy.props.StringProperty(
        name="Stitched Decoder", description="Checkpoint file of the stitched 3D decoder", subtype="FILE_PATH"
    )
    decoder_kind: bpy.props.StringProperty(
        name="Decoder Kind", description="Kind of the stitched decoder checkpoint", default=DEFAULT_DECODER_KIND
    )

    # --- device and memory
    device: bpy.props.EnumProperty(
        name="Device",
        items=(
            ("auto", "Automatic", "CUDA when the engine sees a GPU, else the CPU"),
            ("cuda", "CUDA", "The first NVIDIA GPU"),
            ("cpu", "CPU", "The processor (very slow for full-size models)"),
        ),
        default="auto",
    )
    dtype: bpy.props.EnumProperty(
        name="Precision",
        items=(
            ("auto", "Automatic", "bfloat16 on CUDA, float32 elsewhere"),
            ("bfloat16", "bfloat16", "Half the memory of float32"),
            ("float16", "float16", "Half the memory of float32 (older GPUs)"),
            ("float32", "float32", "Full precision"),
        ),
        default="auto",
    )
    cpu_offload: bpy.props.BoolProperty(
        name="CPU Offload",
        description="Always keep models in system memory and move each to the GPU only while it runs (less GPU "
        "memory, slower). Off: the engine decides from the free GPU memory",
        default=False,
    )
    vae_tiling: bpy.props.BoolProperty(
        name="VAE Tiling",
        description="Always decode the video in tiles to bound the memory it takes. Off: the engine decides "
        "from the free GPU memory",
        default=False,
    )
    cpu_threads: bpy.props.IntProperty(
        name="CPU Threads",
        description="Threads the engine uses on the processor. 0: automatic, every core but one (Blender keeps "
        "one, and a core that is busy elsewhere slows all of the engine's threads down)",
        default=0,
        min=0,
        soft_max=64,
    )
    preview_every: bpy.props.IntProperty(
        name="Preview Every",
        description="Show a preview of the first frame every N denoising steps (0: no previews)",
        default=5,
        min=0,
        soft_max=50,
    )
    outputs_path: bpy.props.StringProperty(
        name="Outputs",
        description="Folder for the generations' run folders. Empty: 'outputs' in the add-on's user folder",
        subtype="DIR_PATH",
    )

    # ------------------------------------------------------------------ resolved values

    def managed_env_dir(self) -> str:
        return user_path(ENGINE_ENV_FOLDER)

    def resolved_python(self) -> str:
        """The engine Python to use: the one set here, else the set-up environment's, else ""."""
        if self.engine_python:
            return os.path.abspath(bpy.path.abspath(self.engine_python))
        env_dir = self.managed_env_dir()
        return str(setup_env.venv_python(env_dir)) if setup_env.is_set_up(env_dir) else ""

    def outputs_dir(self) -> str:
        if self.outputs_path:
            return os.path.abspath(bpy.path.abspath(self.outputs_path))
        return user_path(OUTPUTS_FOLDER, create=True)

    def engine_config(self) -> client.EngineConfig:
        return client.EngineConfig(
            python=self.resolved_python(),
            extension_dir=extension_dir(),
            log_dir=user_path(LOGS_FOLDER, create=True),
            allow_download=bool(bpy.app.online_access),
            cpu_threads=self.cpu_threads,
        )

    def runtime(self) -> dict:
        return {
            "device": self.device,
            "dtype": self.dtype,
            # unchecked = automatic (null): the engine's memory policy decides from the free GPU memory
            "cpu_offload": True if self.cpu_offload else None,
            "vae_tiling": True if self.vae_tiling else None,
        }

    def default_bundle_dir(self) -> str:
        """The default model's folder: the user's copy (``models/default`` in the user folder) when it holds
        a bundle, else the embedded default model shipped in the extension's folder."""
        user = user_path(DEFAULT_BUNDLE_FOLDER)
        return user if model_choice.holds_bundle(user) else str(model_choice.embedded_bundle())

    def bundle_dir(self) -> str:
        """The bundle folder "Bundle" names (the default model's when empty), as an absolute path."""
        if self.bundle_path:
            return os.path.abspath(bpy.path.abspath(self.bundle_path))
        return os.path.abspath(self.default_bundle_dir())

    def load_bundle(self) -> ModelBundle:
        """The model bundle "Bundle" names. Raises ModelConfigError saying what to do."""
        path = self.bundle_dir()
        try:
            return ModelBundle.load(path)
        except ModelNotFoundError as exc:
            if not self.bundle_path:
                raise ModelConfigError(
                    f"No model: this copy of the add-on has no default model ({path} has no vist3a.json). "
                    "Choose a model bundle (a folder with vist3a.json, e.g. the released VIST3A weights) in "
                    "Preferences > Add-ons > VIST3A > Models > Bundle, or copy one to "
                    f"{user_path(DEFAULT_BUNDLE_FOLDER)}"
                ) from exc
            raise ModelConfigError(
                f"No model: the bundle folder {path} has no model bundle ({exc}). Choose a folder with "
                "vist3a.json in Preferences > Add-ons > VIST3A > Models > Bundle"
            ) from exc
        except ModelBundleError as exc:
            raise ModelConfigError(f"The model bundle is malformed: {exc}") from exc

    def model_defaults(self) -> dict:
        """The chosen model's generation defaults (its manifest's ``defaults``; none for "Parts").
        Raises ModelConfigError when "Bundle" names no usable bundle. Reads only the manifest."""
        return self.load_bundle().defaults if self.model_source == "BUNDLE" else {}

    def model_reference(self) -> str:
        """The bundle folder to pass to the engine. Raises ModelConfigError for unusable settings.

        With "Bundle": the folder named there, or the default model (``default_bundle_dir``) when empty.
        With "Parts", a manifest naming the given parts (absolute paths, or the hub id) is written to
        ``models/custom`` in the user folder and that folder is the bundle.
        """
        if self.model_source == "BUNDLE":
            self.load_bundle()
            return self.bundle_dir()
        if not self.wan_model.strip():
            raise ModelConfigError("Model parts: 'Wan Pipeline' is empty (a folder or a hub id)")
        if not self.decoder_path.strip():
            raise ModelConfigError("Model parts: 'Stitched Decoder' is empty (the decoder checkpoint file)")
        if not self.decoder_kind.strip():
            raise ModelConfigError("Model parts: 'Decoder Kind' is empty")
        wan = self.wan_model.strip()
        local_wan = bpy.path.abspath(wan)
        if os.path.exists(local_wan):
            wan = os.path.abspath(local_wan)
        bundle = ModelBundle(
            root=user_path(CUSTOM_BUNDLE_FOLDER, create=True),
            name="custom",
            wan=wan,
            decoder_kind=self.decoder_kind.strip(),
            decoder_checkpoint=os.path.abspath(bpy.path.abspath(self.decoder_path)),
            lora=os.path.abspath(bpy.path.abspath(self.lora_path)) if self.lora_path else None,
        )
        try:
            bundle.check_files()
        except ModelNotFoundError as exc:
            raise ModelConfigError(f"Model parts: {exc}") from exc
        bundle.save()
        return str(bundle.root)

    # ------------------------------------------------------------------ drawing

    def draw(self, context):
        layout = self.layout
        python = self._draw_engine(layout.box(), context)
        self._draw_models(layout.box(), context, python)
        self._draw_device(layout.box())

    def _draw_engine(self, box, context) -> str:
        """The engine environment box; returns the engine Python in use ("" when none)."""
        box.label(text="Engine Environment", icon="CONSOLE")
        box.prop(self, "engine_python")
        python = self.resolved_python()
        box.label(text=f"Using: {python}" if python else "Not set up: click 'Set up engine' or set Engine Python")
        row = box.row()
        job = SETUP.job
        if job is not None and not job.finished:
            row.operator("vist3a.cancel_setup", icon="CANCEL")
        else:
            row.operator("vist3a.setup_engine", icon="IMPORT")
        row.operator("vist3a.check_engine", icon="VIEWZOOM")
        if not bpy.app.online_access and (job is None or job.finished):
            wrapped_label(
                box,
                context,
                "Set up engine needs online access (it downloads packages): allow it in Preferences > System > Network",
                icon="INFO",
            )
        if job is not None:
            status = job.step_label if not job.finished else f"{job.step_label}: {job.status}"
            if job.status == job.FAILED:
                status = job.error
            box.progress(factor=job.fraction, type="BAR", text=status)
            column = box.column(align=True)
            column.scale_y = 0.7
            for line in job.lines[-8:]:
                column.label(text=line[-160:])
        for line in SETUP.check_lines:
            box.label(text=line)
        return python

    def _draw_models(self, box, context, python: str) -> None:
        box.label(text="Models", icon="FILE_BLEND")
        box.row().prop(self, "model_source", expand=True)
        if self.model_source == "BUNDLE":
            box.prop(self, "bundle_path")
            if not self.bundle_path:
                default = self.default_bundle_dir()
                if not model_choice.holds_bundle(default):
                    wrapped_label(
                        box, context, "This copy of the add-on has no default model: choose a bundle", icon="ERROR"
                    )
                elif default == user_path(DEFAULT_BUNDLE_FOLDER):
                    box.label(text=f"Default model (your copy): {default}")
                else:
                    box.label(text=f"Default model (comes with the add-on): {default}")
        else:
            box.prop(self, "wan_model")
            box.prop(self, "lora_path")
            box.prop(self, "decoder_path")
            box.prop(self, "decoder_kind")
        if not bpy.app.online_access:
            box.label(text="Online access is off (Preferences > System): hub models are not downloaded", icon="ERROR")
        else:
            box.label(text="Hub models download on first use, or now:", icon="INFO")
        box.operator("vist3a.download_models", icon="IMPORT")
        if bpy.app.online_access and not python:
            wrapped_label(box, context, "Download Models needs the engine: set it up first", icon="INFO")
        box.prop(self, "outputs_path")

    def _draw_device(self, box) -> None:
        box.label(text="Device and Memory", icon="MEMORY")
        box.prop(self, "device")
        box.prop(self, "dtype")
        box.prop(self, "cpu_threads")
        box.prop(self, "cpu_offload")
        box.prop(self, "vae_tiling")
        box.prop(self, "preview_every")
