"""Shared fixtures."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    """The Blender extension zip, built once per test session with build.py (Blender's own tool)."""
    spec = importlib.util.spec_from_file_location("vist3a_build_for_tests", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.build_extension(out_dir=tmp_path_factory.mktemp("extension"))
