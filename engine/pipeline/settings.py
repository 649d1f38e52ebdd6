"""Generation settings, runtime options and model bundles: validated, JSON-friendly, torch-free.

Pure standard library, so that the worker can check a request before importing torch and the Blender
add-on can validate its panel values with the same rules.

Defaults follow the VIST3A inference recipe (Wan 2.1 + stitched AnySplat): 13 frames at 512 x 512,
50 UniPC flow-matching steps with flow shift 5, classifier-free guidance 7.5, the prompt wrapped in an
orbit-camera template and a long negative prompt. A model bundle may set its own defaults (its manifest's
``defaults`` object, e.g. the embedded default model's 13 frames of 128 x 128): a setting takes, in order,
the value the user gave, the model's default, the default here (``ModelBundle.generation_settings``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..strict_config import dataclass_from_dict  # relative: the add-on imports this module from its bundled engine

# Conditioning presets (prompt template, negative prompt, sampler schedule), kept as data with their
# provenance in conditioning_presets.json: "released" is the official VIST3A inference's text verbatim,
# "ours" this project's wording.
PRESETS_FILE = Path(__file__).with_name("conditioning_presets.json")


def _read_presets() -> dict:
    data = json.loads(PRESETS_FILE.read_text(encoding="utf-8"))
    presets = data["presets"]
    for name, preset in presets.items():
        if "{prompt}" not in preset["prompt_template"] or preset["sampler_schedule"] not in (
            "diffusers-0.33.1",
            "installed",
        ):
            raise ValueError(f"{PRESETS_FILE}: preset {name!r} is malformed")
    return presets


CONDITIONING_PRESETS: dict = _read_presets()
CONDITIONINGS = ("auto", *CONDITIONING_PRESETS)
RELEASED_CONDITIONING = "released"
OWN_CONDITIONING = "ours"
ORBIT_PROMPT_TEMPLATE = CONDITIONING_PRESETS[OWN_CONDITIONING]["prompt_template"]
DEFAULT_NEGATIVE_PROMPT = CONDITIONING_PRESETS[OWN_CONDITIONING]["negative_prompt"]

OUTPUT_KINDS = ("gaussians", "points")
DEVICES_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps|meta)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")

BUNDLE_MANIFEST = "vist3a.json"
BUNDLE_FORMAT = "vist3a-bundle"
BUNDLE_VERSION = 1

# Seeds stay within a signed 32-bit int: Blender's integer properties (the add-on's Seed field) hold no more.
MAX_SEED = 2**31 - 1

# The generation settings a model bundle may give defaults for (its manifest's "defaults" object): what
# the model was made for. The prompt and the seed are the user's alone; reusing text embeddings is a
# runtime choice.
MODEL_DEFAULT_FIELDS = (
    "negative_prompt",
    "orbit_template",
    "num_frames",
    "height",
    "width",
    "num_steps",
    "guidance_scale",
    "flow_shift",
    "output_kind",
    "conditioning",
    "voxel_merge",
)


class SettingsError(ValueError):
    """A generation setting or runtime option is invalid; the message names it and the allowed range."""


def in_option_terms(error: Exception, options: dict[str, str]) -> str:
    """The message of ``error`` (a SettingsError) with each setting's field name replaced by the command-line
    option that sets it, e.g. ``{"num_frames": "--frames"}``: "--frames must be 4k+1 ...". Two fields set
    by one option ("height and width", both ``--size``) are named once."""
    text = str(error)
    for field_name, option in options.items():
        text = re.sub(rf"(?<![\w-]){re.escape(field_name)}(?![\w-])", option, text)
    return re.sub(r"(?<!\S)(--[\w-]+) and \1(?![\w-])", r"\1", text)


class ModelNotFoundError(FileNotFoundError):
    """A model bundle, one of its folders or a required file does not exist."""


def _check_manifest_header(data, fail: Callable[[str], None]) -> None:
    """A bundle manifest is a JSON object of this format and version, with known keys only."""
    if not isinstance(data, dict):
        fail("the manifest must be a JSON object")
    if data.get("format") != BUNDLE_FORMAT:
        fail(f"'format' must be {BUNDLE_FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != BUNDLE_VERSION:
        fail(f"'version' must be {BUNDLE_VERSION}, got {data.get('version')!r}")
    known = {
        "format",
        "version",
        "name",
        "wan",
        "wan_revision",
        "lora",
        "decoder",
        "points_decoder",
        "extra",
        "defaults",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        fail(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


class ModelBundleError(ValueError):
    """A model bundle manifest is malformed."""


class ModelLoadError(RuntimeError):
    """A model part exists but cannot be loaded (wrong format, shapes that do not match, bad adapter)."""


class GenerationCancelled(Exception):
    """Raised between steps when the cancel flag is set; nothing was written."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _from_dict(cls, data: dict, what: str):
    """``engine.strict_config.dataclass_from_dict`` with its errors as ``SettingsError``."""
    try:
        return dataclass_from_dict(cls, data, what)
    except TypeError as exc:
        raise SettingsError(f"{what}: {exc}") from exc
    except ValueError as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(str(exc)) from exc


@dataclass(frozen=True)
class GenerationSettings:
    """What to generate. Validated on construction (raises SettingsError).

    Attributes:
        prompt: the scene description (non-empty).
        negative_prompt: what to steer away from (used with guidance_scale > 1); None: the conditioning
            preset's negative prompt.
        orbit_template: wrap the prompt in the conditioning preset's orbit-camera template.
        num_frames: video frames, 4k + 1 (the Wan VAE compresses time by 4 after the first frame); 5..161.
        height, width: pixels, multiples of 16 (VAE factor 8 x transformer patch 2); 16..2048.
        num_steps: denoising steps, 1..1000.
        guidance_scale: classifier-free guidance scale, 1..30 (1 disables guidance: one model pass per step).
        flow_shift: timestep shift of the flow-matching sigmas, (0, 100].
        seed: 0..2**31-1, or None for a random seed (the one drawn is recorded in the outputs).
        output_kind: "gaussians" (3DGS PLY) or "points" (coloured point PLY).
        reuse_text_embeddings: keep text embeddings of recent prompts, so runs with the same prompt skip
            the text encoder.
        conditioning: "released" (the official VIST3A inference: its orbit template, its negative prompt
            and diffusers 0.33.1's UniPC flow-sigma schedule), "ours" (this project's wording and the
            installed diffusers' schedule), or "auto": the model's default (``released`` for the released
            decoder kind ``anysplat-stitched``, ``ours`` otherwise); the pipeline resolves "auto" and
            records the preset used.
        voxel_merge: merge the Gaussians in voxels (AnySplat's released configuration, edge 0.002): None
            uses the model's default (on for the released kind), False writes one Gaussian per pixel.
    """

    prompt: str
    negative_prompt: Optional[str] = None
    orbit_template: bool = True
    num_frames: int = 13
    height: int = 512
    width: int = 512
    num_steps: int = 50
    guidance_scale: float = 7.5
    flow_shift: float = 5.0
    seed: Optional[int] = None
    output_kind: str = "gaussians"
    reuse_text_embeddings: bool = True
    conditioning: str = "auto"
    voxel_merge: Optional[bool] = None

    def __post_init__(self):
        self._check_texts_and_choices()
        self._check_numbers()
        if self.output_kind not in OUTPUT_KINDS:
            raise SettingsError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, got {self.output_kind!r}")

    def _check_texts_and_choices(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise SettingsError("prompt must be a non-empty string")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise SettingsError(f"negative_prompt must be a string or null, got {type(self.negative_prompt).__name__}")
        if self.conditioning not in CONDITIONINGS:
            raise SettingsError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {self.conditioning!r}")
        if self.voxel_merge is not None and not isinstance(self.voxel_merge, bool):
            raise SettingsError(f"voxel_merge must be true, false or null, got {self.voxel_merge!r}")
        for name in ("orbit_template", "reuse_text_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def _check_numbers(self) -> None:
        frames = self.num_frames
        if not _is_int(frames) or frames < 5 or frames > 161 or (frames - 1) % 4:
            raise SettingsError(f"num_frames must be 4k+1 in 5..161 (5, 9, 13, ...), got {frames!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if not _is_int(value) or value < 16 or value > 2048 or value % 16:
                raise SettingsError(f"{name} must be a multiple of 16 in 16..2048, got {value!r}")
        if not _is_int(self.num_steps) or not 1 <= self.num_steps <= 1000:
            raise SettingsError(f"num_steps must be an integer in 1..1000, got {self.num_steps!r}")
        if not _is_number(self.guidance_scale) or not 1.0 <= self.guidance_scale <= 30.0:
            raise SettingsError(f"guidance_scale must be a number in 1..30, got {self.guidance_scale!r}")
        if not _is_number(self.flow_shift) or not 0.0 < self.flow_shift <= 100.0:
            raise SettingsError(f"flow_shift must be a number in (0, 100], got {self.flow_shift!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise SettingsError(f"seed must be an integer in 0..{MAX_SEED} or null, got {self.seed!r}")

    @property
    def preset(self) -> dict:
        """The conditioning preset's data ("auto" not yet resolved by a pipeline reads as "ours")."""
        return CONDITIONING_PRESETS[OWN_CONDITIONING if self.conditioning == "auto" else self.conditioning]

    def resolved(self, default_conditioning: str) -> GenerationSettings:
        """These settings with "auto" replaced by ``default_conditioning`` and the negative prompt filled in."""
        conditioning = default_conditioning if self.conditioning == "auto" else self.conditioning
        if conditioning not in CONDITIONING_PRESETS:
            raise SettingsError(f"unknown conditioning preset {conditioning!r}")
        negative = self.negative_prompt
        if negative is None:
            negative = CONDITIONING_PRESETS[conditioning]["negative_prompt"]
        return self.replace(conditioning=conditioning, negative_prompt=negative)

    @property
    def full_prompt(self) -> str:
        """The text given to the text encoder (the prompt, wrapped in the preset's template if enabled)."""
        prompt = self.prompt.strip()
        return self.preset["prompt_template"].format(prompt=prompt) if self.orbit_template else prompt

    @property
    def negative_text(self) -> str:
        """The negative prompt used (the preset's when ``negative_prompt`` is None)."""
        return self.preset["negative_prompt"] if self.negative_prompt is None else self.negative_prompt

    @property
    def uses_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    def replace(self, **changes) -> GenerationSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationSettings:
        return _from_dict(cls, data, "settings")


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how the models run (they do not change what is generated, apart from float rounding).

    Attributes:
        device: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:N" or "mps"; "meta" is a dry
            run that emulates CUDA with shapes and dtypes only (no values; ``engine.testing.dry_run``).
        dtype: "auto" (bfloat16 on CUDA, float32 elsewhere), "float32", "bfloat16" or "float16"; used
            for the text encoder and the transformer. The VAE always runs in float32.
        cpu_offload: keep models in CPU memory and move each to the GPU only while it runs (CUDA only);
            None: decided from the free GPU memory when the models load (``engine.pipeline.memory``).
        vae_tiling: decode the video in overlapping tiles to bound the VAE's memory; None: decided
            from the free GPU memory.
    """

    device: str = "auto"
    dtype: str = "auto"
    cpu_offload: Optional[bool] = None
    vae_tiling: Optional[bool] = None

    def __post_init__(self):
        if not isinstance(self.device, str) or not DEVICES_PATTERN.match(self.device):
            raise SettingsError(f"device must be auto, cpu, cuda, cuda:N, mps or meta, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise SettingsError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("cpu_offload", "vae_tiling"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be true, false or null (automatic), got {getattr(self, name)!r}")
        if self.cpu_offload and not (self.device in ("auto", "meta") or self.device.startswith("cuda")):
            raise SettingsError(f"cpu_offload needs a CUDA device, but device is {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RuntimeOptions:
        return _from_dict(cls, data, "runtime")


def check_model_defaults(defaults) -> dict:
    """Validates a bundle's ``defaults`` object; returns it (a copy). Raises ModelBundleError naming the bad key.

    Keys are ``MODEL_DEFAULT_FIELDS``; values follow the rules of :class:`GenerationSettings` (e.g.
    ``num_frames`` 4k+1, ``height`` a multiple of 16).
    """
    if not isinstance(defaults, dict):
        raise ModelBundleError(f"'defaults' must be an object, got {type(defaults).__name__}")
    unknown = sorted(set(defaults) - set(MODEL_DEFAULT_FIELDS))
    if unknown:
        raise ModelBundleError(
            f"'defaults' has unknown key(s) {', '.join(unknown)}; known: {', '.join(MODEL_DEFAULT_FIELDS)}"
        )
    try:
        GenerationSettings(prompt="-", **defaults)
    except SettingsError as exc:
        raise ModelBundleError(f"'defaults': {exc}") from exc
    return dict(defaults)


def looks_like_hub_id(reference: str) -> bool:
    """ "owner/name" with no path-like start is a Hugging Face hub id (when no such local folder exists)."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", reference)) and not reference.startswith(".")


@dataclass(frozen=True)
class ModelBundle:
    """One complete model: which Wan pipeline, which LoRA adapter, which stitched decoder.

    A bundle is a folder holding a ``vist3a.json`` manifest (and usually the parts themselves)::

        {
          "format": "vist3a-bundle", "version": 1,
          "name": "vist3a-wan2.1-1.3b-anysplat",
          "wan": "wan",                        # diffusers WanPipeline folder, or a hub id
          "wan_revision": null,                # hub revision (commit/tag) when "wan" is a hub id
          "lora": "vist3a_1.3b_lora_ema",      # PEFT adapter folder for the transformer, or null
          "decoder": {"kind": "anysplat-stitched", "checkpoint": "anysplat_stitched.safetensors"},
          "points_decoder": {"kind": "stitched", "checkpoint": "vggt_stitched"},   # optional, see below
          "defaults": {"num_frames": 13, "height": 128, "width": 128}   # optional: what the model was made for
        }

    ``points_decoder`` (optional) is a second 3D decoder, a pointmap network (a stitched VGGT), that makes
    the scene when a generation asks for points (``output_kind`` "points"): the text-to-pointmap path.
    Without it, points are derived from the main decoder's Gaussians.

    Relative paths are relative to the bundle folder. Attributes hold the manifest's values; the
    ``*_path`` properties resolve them. ``defaults`` (optional) holds generation settings
    (``MODEL_DEFAULT_FIELDS``) that the model works best with; settings a user leaves out take them
    (:meth:`generation_settings`). Raises ModelBundleError on construction for invalid defaults.
    """

    root: Path
    name: str
    wan: str
    decoder_kind: str
    decoder_checkpoint: str
    lora: Optional[str] = None
    wan_revision: Optional[str] = None
    extra: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    points_decoder_kind: Optional[str] = None
    points_decoder_checkpoint: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "defaults", check_model_defaults(self.defaults))
        if (self.points_decoder_kind is None) != (self.points_decoder_checkpoint is None):
            raise ModelBundleError("a points decoder needs both its kind and its checkpoint")

    @property
    def has_points_decoder(self) -> bool:
        return self.points_decoder_checkpoint is not None

    def points_decoder_bundle(self) -> ModelBundle:
        """This bundle with its points decoder in the main decoder's place (what the decoder loaders read).
        Raises ValueError when the bundle has no points decoder."""
        if not self.has_points_decoder:
            raise ValueError(f"bundle {self.name!r} has no points decoder")
        return dataclasses.replace(
            self,
            decoder_kind=self.points_decoder_kind,
            decoder_checkpoint=self.points_decoder_checkpoint,
            points_decoder_kind=None,
            points_decoder_checkpoint=None,
        )

    def generation_settings(self, given: dict) -> GenerationSettings:
        """The settings of a generation with this model: ``given`` (the fields the user set, by
        GenerationSettings field name; a field present with null counts as given), else the model's
        ``defaults``, else GenerationSettings' own defaults. Raises SettingsError naming a bad value."""
        if not isinstance(given, dict):
            raise SettingsError(f"settings must be a JSON object, got {type(given).__name__}")
        return GenerationSettings.from_dict({**self.defaults, **given})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelBundle:
        """Reads a bundle from its folder or manifest file. Raises ModelNotFoundError / ModelBundleError."""
        path = Path(path).expanduser()
        manifest = path / BUNDLE_MANIFEST if path.is_dir() else path
        if not path.exists():
            raise ModelNotFoundError(f"model bundle {path} does not exist")
        if not manifest.is_file():
            raise ModelNotFoundError(f"{path} is not a model bundle: it has no {BUNDLE_MANIFEST} manifest")
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelBundleError(f"{manifest}: not valid JSON ({exc})") from exc
        return cls.from_manifest(data, manifest.parent.resolve(), source=str(manifest))

    @classmethod
    def from_manifest(cls, data: dict, root: Path, source: str = "manifest") -> ModelBundle:
        def fail(message: str):
            raise ModelBundleError(f"{source}: {message}")

        _check_manifest_header(data, fail)
        for key in ("name", "wan"):
            if not isinstance(data.get(key), str) or not data[key]:
                fail(f"{key!r} must be a non-empty string")
        for key in ("lora", "wan_revision"):
            if data.get(key) is not None and (not isinstance(data[key], str) or not data[key]):
                fail(f"{key!r} must be a non-empty string or null")
        decoders = {"decoder": data.get("decoder")}
        if data.get("points_decoder") is not None:
            decoders["points_decoder"] = data["points_decoder"]
        for key, decoder in decoders.items():
            if not isinstance(decoder, dict) or set(decoder) != {"kind", "checkpoint"}:
                fail(f"{key!r} must be an object with exactly the keys 'kind' and 'checkpoint'")
            if not all(isinstance(decoder[k], str) and decoder[k] for k in ("kind", "checkpoint")):
                fail(f"'{key}.kind' and '{key}.checkpoint' must be non-empty strings")
        decoder = decoders["decoder"]
        points = decoders.get("points_decoder") or {}
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            fail("'extra' must be an object")
        try:
            defaults = check_model_defaults(data.get("defaults", {}))
        except ModelBundleError as exc:
            fail(str(exc))
        return cls(
            root=Path(root),
            name=data["name"],
            wan=data["wan"],
            decoder_kind=decoder["kind"],
            decoder_checkpoint=decoder["checkpoint"],
            lora=data.get("lora"),
            wan_revision=data.get("wan_revision"),
            extra=extra,
            defaults=defaults,
            points_decoder_kind=points.get("kind"),
            points_decoder_checkpoint=points.get("checkpoint"),
        )

    def to_manifest(self) -> dict:
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "name": self.name,
            "wan": self.wan,
            "wan_revision": self.wan_revision,
            "lora": self.lora,
            "decoder": {"kind": self.decoder_kind, "checkpoint": self.decoder_checkpoint},
            "extra": self.extra,
        }
        if self.has_points_decoder:  # written only when set, as the defaults
            manifest["points_decoder"] = {
                "kind": self.points_decoder_kind,
                "checkpoint": self.points_decoder_checkpoint,
            }
        if self.defaults:  # written only when set, so bundles without defaults keep their manifest
            manifest["defaults"] = dict(self.defaults)
        return manifest

    def save(self) -> Path:
        """Writes the manifest into ``root`` (created if needed); returns the manifest path."""
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / BUNDLE_MANIFEST
        manifest.write_text(json.dumps(self.to_manifest(), indent=2) + "\n", encoding="utf-8")
        return manifest

    def _local(self, reference: str) -> Path:
        path = Path(reference).expanduser()
        return path if path.is_absolute() else self.root / path

    def portable_reference(self, reference: str) -> str:
        """``reference`` (a part of this bundle) as another bundle folder can use it: an existing local part
        by its absolute path, anything else (a hub id) unchanged."""
        local = self._local(reference)
        return str(local.resolve()) if local.exists() else reference

    @property
    def wan_is_hub_id(self) -> bool:
        return not self._local(self.wan).exists() and looks_like_hub_id(self.wan)

    @property
    def wan_source(self) -> str:
        """A local folder path (str) or a hub id for the Wan diffusers pipeline."""
        return self.wan if self.wan_is_hub_id else str(self._local(self.wan))

    @property
    def lora_path(self) -> Optional[Path]:
        return None if self.lora is None else self._local(self.lora)

    @property
    def decoder_path(self) -> Path:
        return self._local(self.decoder_checkpoint)

    @property
    def points_decoder_path(self) -> Optional[Path]:
        return None if self.points_decoder_checkpoint is None else self._local(self.points_decoder_checkpoint)

    def check_files(self) -> None:
        """Raises ModelNotFoundError naming the first local part that is missing."""
        if not self.wan_is_hub_id:
            wan = Path(self.wan_source)
            if not (wan / "model_index.json").is_file():
                what = "does not exist" if not wan.exists() else "has no model_index.json"
                raise ModelNotFoundError(f"bundle {self.name!r}: Wan pipeline folder {wan} {what}")
        lora = self.lora_path
        if lora is not None:
            if not lora.is_dir():
                raise ModelNotFoundError(f"bundle {self.name!r}: LoRA adapter folder {lora} does not exist")
            for required in ("adapter_config.json", "adapter_model.safetensors"):
                if not (lora / required).is_file():
                    raise ModelNotFoundError(f"bundle {self.name!r}: LoRA adapter folder {lora} has no {required}")
        if not self.decoder_path.exists():
            raise ModelNotFoundError(f"bundle {self.name!r}: decoder checkpoint {self.decoder_path} does not exist")
        points = self.points_decoder_path
        if points is not None and not points.exists():
            raise ModelNotFoundError(f"bundle {self.name!r}: points decoder checkpoint {points} does not exist")


_QUICK_HASH_BYTES = 1 << 20


def quick_file_hash(path: Path) -> str:
    """sha256 over a file's size, first MiB and last MiB.

    Cheap even for multi-GB weights; it tells different checkpoints apart in practice (any retraining
    changes the first tensors), though it is not a full content hash.
    """
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(_QUICK_HASH_BYTES))
        if size > 2 * _QUICK_HASH_BYTES:
            f.seek(size - _QUICK_HASH_BYTES)
            digest.update(f.read(_QUICK_HASH_BYTES))
    return digest.hexdigest()


def fingerprint(path: Path) -> dict:
    """Identity of a local model part (file or folder): its path and a quick hash over all its files."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        relative = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(relative.encode() + b"\0" + quick_file_hash(file).encode() + b"\0")
    return {"path": str(path.resolve()), "quick_sha256": digest.hexdigest(), "files": len(files)}


def bundle_identity(bundle: ModelBundle) -> dict:
    """JSON-ready identity of every part of a bundle, recorded in each run's metadata."""
    if bundle.wan_is_hub_id:
        wan = {"hub_id": bundle.wan, "revision": bundle.wan_revision}
    else:
        wan = fingerprint(Path(bundle.wan_source))
    return {
        "name": bundle.name,
        "bundle": str(bundle.root),
        "manifest": bundle.to_manifest(),
        "wan": wan,
        "lora": None if bundle.lora_path is None else fingerprint(bundle.lora_path),
        "decoder": {"kind": bundle.decoder_kind, **fingerprint(bundle.decoder_path)},
        "points_decoder": None
        if bundle.points_decoder_path is None
        else {"kind": bundle.points_decoder_kind, **fingerprint(bundle.points_decoder_path)},
    }
