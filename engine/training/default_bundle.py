"""The default model's bundle: assembled from the chain's parts, and installed next to other parts.

A bundle folder (``engine.pipeline.settings.ModelBundle``) holds::

    generator/          the diffusers WanPipeline folder (``train video``'s export, with the trained VAE)
    generator_lora/     the PEFT adapter of reward finetuning (``align train``'s ``adapter_ema``)
    stitched_decoder/   the stitched decoder checkpoint (``stitch train``'s merged export, AnySplat: Gaussians)
    stitched_points_decoder/  optional: the stitched VGGT (pointmaps), the bundle's ``points_decoder``
    vist3a.json         {"wan": "generator", "lora": "generator_lora",
                         "decoder": {"kind": "stitched", "checkpoint": "stitched_decoder"},
                         "points_decoder": {"kind": "stitched", "checkpoint": "stitched_points_decoder"}, ...}

:func:`assemble_bundle` writes such a folder atomically. :func:`install_bundle` copies a bundle's own
entries into a folder that may hold other parts too (the repository's ``models/default`` keeps the 3D
teachers and the caption scorer there): each entry is replaced atomically, the manifest last, and every
other entry of the folder is left as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from engine.io.atomic import atomic_directory, atomic_write
from engine.pipeline.settings import BUNDLE_MANIFEST, ModelBundle

GENERATOR_ENTRY = "generator"
LORA_ENTRY = "generator_lora"
DECODER_ENTRY = "stitched_decoder"
POINTS_DECODER_ENTRY = "stitched_points_decoder"
DECODER_KIND = "stitched"


def assemble_bundle(
    target: Path,
    *,
    generator: Path,
    lora: Optional[Path],
    decoder: Path,
    name: str,
    extra: Optional[dict] = None,
    defaults: Optional[dict] = None,
    points_decoder: Optional[Path] = None,
) -> Path:
    """Copies the parts into ``target`` (replaced atomically) with its ``vist3a.json``; returns it.

    ``lora`` None: a bundle without reward finetuning (the generator as trained). ``defaults``: the
    generation settings the model was made for (the manifest's ``defaults``, e.g. 13 frames of 128²).
    ``points_decoder``: a stitched VGGT export, the bundle's pointmap decoder (None: points are derived
    from the Gaussians).

    Raises:
        FileNotFoundError: a part folder does not exist.
        engine.pipeline.settings.ModelNotFoundError: the assembled bundle lacks a file a loader needs
            (``model_index.json`` of the pipeline, ``adapter_config.json`` / ``adapter_model.safetensors``).
    """
    parts = [("generator", GENERATOR_ENTRY, generator), ("stitched decoder", DECODER_ENTRY, decoder)]
    if lora is not None:
        parts.append(("LoRA adapter", LORA_ENTRY, lora))
    if points_decoder is not None:
        parts.append(("stitched points decoder", POINTS_DECODER_ENTRY, points_decoder))
    for what, _, folder in parts:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"the {what} folder {folder} does not exist")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(target, replace=True) as staging:
        for _, entry, source in parts:
            shutil.copytree(source, staging / entry)
        bundle = ModelBundle(
            root=staging,
            name=name,
            wan=GENERATOR_ENTRY,
            decoder_kind=DECODER_KIND,
            decoder_checkpoint=DECODER_ENTRY,
            lora=LORA_ENTRY if lora is not None else None,
            extra=dict(extra or {}),
            defaults=dict(defaults or {}),
            points_decoder_kind=DECODER_KIND if points_decoder is not None else None,
            points_decoder_checkpoint=POINTS_DECODER_ENTRY if points_decoder is not None else None,
        )
        bundle.save()
        ModelBundle.load(staging).check_files()
    return target


def bundle_entries(bundle: ModelBundle) -> list[str]:
    """The bundle's own top-level entries (its local parts), which must lie directly inside its folder.

    Raises ValueError for a part outside the folder or a hub id (install copies local folders only)."""
    references = [bundle.wan, bundle.decoder_checkpoint] + ([bundle.lora] if bundle.lora else [])
    if bundle.points_decoder_checkpoint:
        references.append(bundle.points_decoder_checkpoint)
    entries = []
    for reference in references:
        path = Path(reference)
        if path.is_absolute() or len(path.parts) != 1 or path.name in ("", ".", ".."):
            raise ValueError(f"bundle {bundle.name!r}: part {reference!r} is not a folder directly inside the bundle")
        if not (bundle.root / path).exists():
            raise ValueError(f"bundle {bundle.name!r}: part {reference!r} is missing from {bundle.root}")
        entries.append(path.name)
    return entries


def install_bundle(bundle_dir: Path, target: Path) -> list[str]:
    """Copies the bundle in ``bundle_dir`` into ``target`` (created if needed); returns the entries copied.

    Each of the bundle's parts replaces the entry of the same name in ``target`` atomically (a reader sees
    the old folder or the new one, never a mix), and ``vist3a.json`` is written last, so the manifest
    never names a part that is not in place. Entries of ``target`` that are not the bundle's (other
    models, teachers, scorers) are left untouched.

    Raises:
        engine.pipeline.settings.ModelNotFoundError / ModelBundleError: ``bundle_dir`` is no complete bundle.
        ValueError: a part is not a folder or file directly inside ``bundle_dir``.
    """
    bundle = ModelBundle.load(bundle_dir)
    bundle.check_files()
    entries = bundle_entries(bundle)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        source = bundle.root / entry
        if source.is_dir():
            with atomic_directory(target / entry, replace=True) as staging:
                shutil.copytree(source, staging, dirs_exist_ok=True)
        else:
            with atomic_write(target / entry) as handle:
                handle.write(source.read_bytes())
    with atomic_write(target / BUNDLE_MANIFEST) as handle:
        handle.write((bundle.root / BUNDLE_MANIFEST).read_bytes())
    return [*entries, BUNDLE_MANIFEST]


def folder_megabytes(folder: Path) -> float:
    """Size of every file under ``folder`` in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6
