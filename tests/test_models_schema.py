"""Full-size VGGT and AnySplat, built on the meta device, have the official state-dict layout.

The reference lists are ``../shared/models/{vggt,anysplat}_schema.json`` (official classes built on the
meta device: [key, shape, dtype] in state-dict order). Nothing is allocated here.
"""

import json
from pathlib import Path

import pytest
import torch

from engine.models.checkpoint import load_state_dict_strict
from engine.models.config import AnySplatConfig, VGGTConfig
from engine.models.loading import build_model

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = next((p for p in (ROOT.parent / "shared" / "models", ROOT / "shared" / "models") if p.is_dir()), None)
pytestmark = pytest.mark.skipif(SCHEMA_DIR is None, reason="shared/models (official schemas) not present")


def _schema(name):
    data = json.loads((SCHEMA_DIR / name).read_text())
    return data["state_dict"] if isinstance(data, dict) else data


def _layout(model):
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def _meta_state(entries):
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, shape, dtype in entries}


def test_vggt_matches_the_official_schema_without_the_track_head():
    official = _schema("vggt_schema.json")
    model = build_model(VGGTConfig(), device="meta")
    assert all(p.is_meta for p in model.parameters())
    kept = [(k, shape) for k, shape, _ in official if not k.startswith("track_head.")]
    assert _layout(model) == kept
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert sum(p.numel() for p in model.parameters()) == 1_256_537_516 - 65_941_396


def test_vggt_loads_the_full_official_key_set_and_reports_the_track_head():
    official = _schema("vggt_schema.json")
    model = build_model(VGGTConfig(), device="meta")
    report = load_state_dict_strict(model, _meta_state(official), source="vggt_schema")
    assert report.dropped == {"track_head.": sum(k.startswith("track_head.") for k, _, _ in official)}
    assert report.num_loaded == len(official) - report.dropped["track_head."]


def test_anysplat_matches_the_official_schema():
    official = _schema("anysplat_schema.json")
    model = build_model(AnySplatConfig(), device="meta")
    assert _layout(model) == [(k, shape) for k, shape, _ in official]
    # Official in-memory dtypes: the aggregator is bfloat16 (cast by EncoderAnySplat), the rest float32.
    # We keep float32 everywhere (the exact reference); loading casts whatever the file holds.
    dtypes = {k: d for k, _, d in official}
    assert {dtypes[k] for k in dtypes if k.startswith("encoder.aggregator.")} == {"bfloat16"}
    assert {dtypes[k] for k in dtypes if not k.startswith("encoder.aggregator.")} == {"float32"}
    report = load_state_dict_strict(model, _meta_state(official), source="anysplat_schema")
    assert report.cast == {"bfloat16->float32": sum(k.startswith("encoder.aggregator.") for k in dtypes)}


def test_anysplat_with_teacher_copies_loads_and_reports_them():
    official = _schema("anysplat_schema_distill_true.json")
    model = build_model(AnySplatConfig(), device="meta")
    report = load_state_dict_strict(model, _meta_state(official), source="anysplat_schema_distill_true")
    assert set(report.dropped) == {
        "encoder.distill_aggregator.",
        "encoder.distill_camera_head.",
        "encoder.distill_depth_head.",
    }
    assert report.num_loaded + sum(report.dropped.values()) == len(official)
