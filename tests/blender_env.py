"""Run a script of tests/blender_scripts under Blender (the ``bpy`` module) in a child process, for tests.

``bpy`` must never be imported into the pytest process: it brings its own copies of libraries that
clash with torch's, keeps global state between tests, and a crash in it would take the whole test
run down. Tests instead name a script in ``tests/blender_scripts/`` (real files, linted like the rest),
which :func:`run_in_blender` runs with the same Python (``sys.executable``, where the ``bpy`` wheel is
installed) in a fresh subprocess:

* the test's parameters go to the script as a JSON file (its first argument; ``script_io.params()``);
* ``BLENDER_USER_RESOURCES`` points at a throw-away folder under the test's ``tmp_path``, set in the
  child's environment so it is in place before the script's ``import bpy``: Blender's user
  configuration, extensions and caches go there and no real profile is read or touched.
* the working directory is the repository root and the root is on ``PYTHONPATH``, so the script can
  ``import engine.io``.
* the script calls ``script_io.emit_result(value)`` once with a JSON-serialisable value, and
  :attr:`BlenderRun.result` gives it back parsed. Everything else the script prints (Blender prints a
  lot) is ignored.
* a non-zero exit, a timeout, or a script that never calls ``emit_result`` fails the test with the
  script's stdout and stderr in the message.

Example::

    @pytest.mark.blender
    def test_something(tmp_path):
        run = run_in_blender("count_objects", {"cube": True}, tmp_path=tmp_path)
        assert run.result["objects"] >= 1

Tests using it must be marked ``@pytest.mark.blender``. When ``bpy`` is not installed they are
skipped (with the reason shown by ``-ra``), since Blender is an optional test dependency.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from blender_scripts.script_io import RESULT_MARKER

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "blender_scripts"


@dataclass
class BlenderRun:
    """What a script run under Blender produced.

    Attributes:
        completed: the finished process (args, returncode, stdout, stderr as text).
        result: the value the script passed to ``emit_result``, parsed from JSON.
    """

    completed: subprocess.CompletedProcess
    result: Any

    @property
    def stdout(self) -> str:
        return self.completed.stdout

    @property
    def stderr(self) -> str:
        return self.completed.stderr


def bpy_available() -> bool:
    """Whether the ``bpy`` module is installed (checked without importing it)."""
    return importlib.util.find_spec("bpy") is not None


def _report(completed_or_error, script: str) -> str:
    """The script and its output, for a failing test's message."""
    stdout = completed_or_error.stdout or ""
    stderr = completed_or_error.stderr or ""
    if isinstance(stdout, bytes):
        stdout, stderr = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    return (
        f"--- script ---\n{script}\n--- stdout (last 4000 chars) ---\n{stdout[-4000:]}"
        f"\n--- stderr (last 8000 chars) ---\n{stderr[-8000:]}"
    )


def run_in_blender(
    script: str,
    params: Optional[dict] = None,
    *,
    tmp_path: Path,
    timeout: float = 120,
    env: Optional[dict[str, str]] = None,
    expect_result: bool = True,
    python: Optional[str] = None,
) -> BlenderRun:
    """Runs ``tests/blender_scripts/<script>.py`` with ``sys.executable`` under a clean Blender user profile.

    Args:
        script: the script's name in ``tests/blender_scripts`` (without ``.py``); it imports ``bpy``
            itself, reads ``script_io.params()`` and calls ``script_io.emit_result(value)`` once.
        params: JSON-serialisable parameters for the script (written to ``tmp_path/<script>-params.json``).
        tmp_path: the test's temporary folder; the Blender profile goes to ``tmp_path/blender_user``.
        timeout: seconds before the child is killed and the test fails.
        env: extra environment variables for the child (on top of this process's environment).
        expect_result: fail if the script exits without calling ``emit_result`` (default True).
        python: the interpreter with ``bpy`` (another Blender version's environment); default: this one.

    Returns:
        A :class:`BlenderRun` with the finished process and the parsed result (None when the script
        emitted none and ``expect_result`` is False).
    """
    if python is None and not bpy_available():
        pytest.skip("bpy (Blender as a Python module) is not installed")
    path = SCRIPTS / f"{script}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no Blender script {path}")
    params_file = Path(tmp_path) / f"{script}-params.json"
    params_file.write_text(json.dumps(params or {}))
    source = f"{path} with {json.dumps(params or {})[:2000]}"
    user_resources = Path(tmp_path) / "blender_user"
    user_resources.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ)
    child_env["BLENDER_USER_RESOURCES"] = str(user_resources)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    child_env.update(env or {})
    try:
        completed = subprocess.run(
            [python or sys.executable, str(path), str(params_file)],
            cwd=REPO_ROOT,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"Blender script timed out after {timeout} s\n{_report(error, source)}", pytrace=False)
    if completed.returncode != 0:
        pytest.fail(
            f"Blender script exited with code {completed.returncode}\n{_report(completed, source)}", pytrace=False
        )
    result_lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if len(result_lines) > 1:
        pytest.fail(
            f"Blender script called emit_result {len(result_lines)} times\n{_report(completed, source)}", pytrace=False
        )
    if not result_lines:
        if expect_result:
            pytest.fail(f"Blender script never called emit_result\n{_report(completed, source)}", pytrace=False)
        return BlenderRun(completed, None)
    return BlenderRun(completed, json.loads(result_lines[0][len(RESULT_MARKER) :]))
