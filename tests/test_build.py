"""The task runner: idempotent setup, the extension build and its validation, the CI entry point."""

import importlib.util
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_build_module():
    spec = importlib.util.spec_from_file_location("vist3a_build", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_module()


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, str(ROOT / "build.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("setup", "test", "build"):
        assert command in out.stdout


def test_second_setup_is_a_fast_no_op():
    # The suite itself runs inside the environment that setup made, so it is up to date here.
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "build.py"), "setup"], capture_output=True, text=True)
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert "environment up to date" in out.stdout
    assert "installing" not in out.stdout
    assert elapsed < 5, f"no-op setup took {elapsed:.1f} s"


def test_requirements_pin_the_cpu_torch_and_bpy():
    reqs = build.requirements(cuda=False)
    assert reqs[0] == f"torch=={build.TORCH_VERSION}"
    assert sum(r.startswith("torch") for r in reqs) == 1
    assert "bpy==5.0.1" in reqs
    assert any(re.fullmatch(r"numpy.*<2", r) for r in reqs)


def test_cuda_packages_on_a_cpu_machine_fail_setup(monkeypatch, capsys):
    listing = '[{"name": "torch", "version": "2.13.0"}, {"name": "nvidia-cublas", "version": "13.0"}]'

    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=listing, stderr="")

    monkeypatch.setattr(build.subprocess, "run", fake_run)
    with pytest.raises(SystemExit):
        build.check_no_cuda_packages()
    assert "nvidia-cublas" in capsys.readouterr().err


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "python3 build.py test" in ci
    assert "python3 build.py test" in readme


@pytest.mark.slow
def test_build_produces_a_valid_extension_zip(tmp_path):
    zip_path = build.build_extension(out_dir=tmp_path)
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
    assert {"blender_manifest.toml", "__init__.py", "engine/__init__.py", "engine/scene.py"} <= names
    assert not any("__pycache__" in n for n in names)


@pytest.mark.slow
def test_invalid_manifest_fails_the_build_with_the_validators_message(tmp_path):
    text = (ROOT / "blender_manifest.toml").read_text()
    bad = tmp_path / "blender_manifest.toml"
    bad.write_text(re.sub(r"(?m)^tagline = .*$", 'tagline = "Ends with a full stop."', text))
    with pytest.raises(build.BuildError, match="tagline"):
        build.build_extension(manifest=bad, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_test_command_fails_when_pytest_collects_nothing():
    # pytest exits 5 when nothing ran; CI must read that as a failure, not a pass.
    command = [sys.executable, str(ROOT / "build.py"), "test", "tests/test_scene.py", "-k", "no_such_test_name"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "collected no tests" in out.stdout


def test_test_command_passes_options_to_pytest_verbatim():
    command = [sys.executable, str(ROOT / "build.py"), "test", "-k", "look_at", "-q", "tests/test_scene.py"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout and "deselected" in out.stdout


def test_blender_matrix_covers_the_manifests_minimum_and_the_test_version():
    import tomllib

    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    tested = set(build.BLENDER_MATRIX) | {build.BPY_REQUIREMENT.split("==")[1].rsplit(".", 1)[0]}
    minimum = ".".join(manifest["blender_version_min"].split(".")[:2])
    assert minimum in tested, f"blender_version_min {minimum} is not tested (matrix: {sorted(tested)})"
    assert min(tested, key=lambda v: tuple(map(int, v.split(".")))) == minimum
    for version, (python, reqs) in build.BLENDER_MATRIX.items():
        assert reqs[0].startswith(f"bpy=={version}"), (version, reqs)
        assert python in ("3.11", "3.13")


def test_blender_matrix_environments_are_made_once_and_reused(tmp_path, monkeypatch):
    # A fake interpreter stands in for Python; the "venv" it makes has a python that logs pip calls.
    log = tmp_path / "calls.txt"
    fake = tmp_path / "python-fake"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; fi\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(build, "BLENDER_ENVS", tmp_path / "envs")
    monkeypatch.setattr(build, "BLENDER_MATRIX", {"9.9": ("3.11", ["bpy==9.9.*"])})
    monkeypatch.setattr(build, "find_python", lambda version: str(fake))
    python, problem = build.blender_env("9.9")
    assert problem == "" and python == str(tmp_path / "envs" / "bpy-9.9" / "bin" / "python")
    assert "install --quiet --disable-pip-version-check bpy==9.9.*" in log.read_text()
    calls = log.read_text()
    assert build.blender_env("9.9") == (python, "")  # cached: nothing runs again
    assert log.read_text() == calls
    assert build.setup_blender_matrix() == f"9.9={python}"
    monkeypatch.setattr(build, "find_python", lambda version: None)
    assert build.setup_blender_matrix().startswith("9.9=SKIP:Python 3.11")
