"""The add-on's generation side when things go wrong, and its environment setup and history helpers.

* In Blender (one subprocess): a missing engine environment, a worker that prints garbage at start
  or in the middle of a run, and a worker that stops answering (hung), each with real subprocesses
  (small fake workers that speak, or break, the protocol); the scene must stay unchanged and the
  next request must start a fresh worker. The "Check engine" operator on the project's Python.
* Outside Blender (the modules are standard library only): the setup job's streaming, progress,
  failure and cancellation with injected commands (no network), the plan of setup steps, a venv
  made by its first step, and the history scan.
"""

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest
from addon_modules import load_addon_module
from blender_env import run_in_blender

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"vist3a_addon_{name}", ROOT / "addon" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup_env = _load("setup_env")
history = load_addon_module("history")

FAKE_WORKER = Path(__file__).resolve().parent / "blender_scripts" / "fake_worker.py"


def _wrapper(tmp_path, mode):
    """An executable that stands in for an engine Python: it runs the fake worker in ``mode``."""
    path = tmp_path / f"python-{mode}"
    started = tmp_path / f"started-{mode}.json"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_WORKER}" {mode} "{started}" "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.blender
@pytest.mark.slow
def test_generate_faults_leave_the_scene_and_blender_intact(extension_zip, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = {
        "format": "vist3a-bundle",
        "version": 1,
        "name": "fake",
        "wan": "wan",
        "decoder": {"kind": "fake", "checkpoint": "decoder.safetensors"},
    }
    (bundle / "vist3a.json").write_text(json.dumps(manifest))
    wrappers = {mode: _wrapper(tmp_path, mode) for mode in ("garbage-start", "garbage-mid", "hang")}
    parameters = {
        "root": str(ROOT),
        "zip": str(extension_zip),
        "bundle": str(bundle),
        "not_a_bundle": str(tmp_path),
        "wrappers": wrappers,
        "python": sys.executable,
    }
    result = run_in_blender("generate_faults", parameters, tmp_path=tmp_path, timeout=240).result

    assert not result["engine_in_sys_modules"], "the add-on left a top-level 'engine' module in Blender"
    outcome, message = result["missing_poll"]
    assert outcome == ["CANCELLED"] and "not set up" in message and "Preferences" in message
    outcome, message = result["missing_python"]
    assert outcome == ["CANCELLED"] and "/nonexistent/engine/python" in message and "Preferences" in message
    outcome, message = result["missing_model"]
    assert outcome == ["CANCELLED"] and "No model" in message and "Preferences" in message and str(tmp_path) in message

    outcome, message = result["garbage_start"]
    assert outcome == ["CANCELLED"] and "did not start the VIST3A engine worker" in message
    assert "not a protocol line" in message and not result["garbage_start_busy"]

    assert result["garbage_mid"] == [["FINISHED"], ""]
    kind, message = result["garbage_mid_outcome"]
    assert kind == "error" and "not the worker protocol" in message and "some library printed" in message
    assert result["garbage_mid_status"][0] == "ERROR"
    assert result["garbage_mid_worker_gone"]

    assert result["hang"] == [["FINISHED"], ""]
    kind, message, seconds = result["hang_outcome"]
    assert kind == "error" and "stopped responding" in message and seconds < 15
    assert not result["hang_worker_running"]

    assert result["again"] == [["FINISHED"], ""] and result["again_new_pid"]
    assert result["unchanged"], "a failed generation changed the scene"

    # The worker ran the extension's bundled engine, offline, with a log file in the user folder.
    started = json.loads((tmp_path / "started-garbage-mid.json").read_text())
    assert started["offline"] == "1" and started["cwd"] == result["extension_dir"]
    assert started["omp_threads"] == "3"  # the "CPU Threads" preference
    assert started["pythonpath"].split(os.pathsep)[0] == result["extension_dir"]
    assert started["args"][:3] == ["-m", "engine.worker", "--log-file"] and started["args"][3].endswith("worker.log")
    for name in ("setup_engine", "download_models"):
        assert "online access" in result[name].lower(), result[name]

    assert result["check"] == ["FINISHED"], result["check"]
    assert any(line.startswith("Device: cpu") for line in result["check_lines"])
    assert any("torch" in line and "diffusers" in line for line in result["check_lines"])
    assert result["disabled_cleanly"]


# ----------------------------------------------------------------------------- environment setup


def _step(label, code):
    return setup_env.SetupStep(label, (sys.executable, "-c", code))


def test_setup_job_streams_lines_and_progress_then_succeeds():
    steps = [
        _step(
            "one",
            "import sys; print('hello'); print('Progress 5 of 10\\rProgress 10 of 10'); print('err', file=sys.stderr)",
        ),
        _step("two", "print('second')"),
    ]
    job = setup_env.SetupJob(steps).start()
    assert job.wait(timeout=60) == "succeeded"
    assert job.lines == ["== one", "hello", "Progress 5 of 10", "Progress 10 of 10", "err", "== two", "second"]
    assert job.fraction == 1.0 and job.error == ""


def test_setup_job_follows_hub_download_progress_bars():
    code = "import sys, time; sys.stderr.write('Fetching 4 files:  50%|#####     | 2/4\\r'); sys.stderr.flush(); time.sleep(30)"
    job = setup_env.SetupJob([_step("download", code)]).start()
    deadline = time.monotonic() + 30
    while not any("50%" in line for line in job.lines) and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    assert job.fraction == pytest.approx(0.5)
    job.cancel()
    assert job.wait(timeout=20) == "cancelled"


def test_setup_job_stops_at_a_failing_step_and_says_which():
    steps = [_step("breaks", "import sys; print('bad thing'); sys.exit(3)"), _step("never", "print('ran')")]
    job = setup_env.SetupJob(steps).start()
    assert job.wait(timeout=60) == "failed"
    assert job.error == "breaks failed (exit status 3)"
    assert "bad thing" in job.lines and "ran" not in job.lines


def test_setup_job_cancel_kills_the_running_step_and_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    # the step starts a grandchild (as pip does for builds) and both sleep
    code = (
        "import subprocess, sys, time; "
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(marker)!r}, 'w').write(str(child.pid)); print('started', flush=True); time.sleep(60)"
    )
    job = setup_env.SetupJob([_step("slow", code), _step("after", "print('ran')")]).start()
    deadline = time.monotonic() + 30
    while "started" not in job.lines and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    assert job.status == "running" and job.step_label == "slow"
    started = time.monotonic()
    job.cancel()
    assert job.wait(timeout=20) == "cancelled"
    assert time.monotonic() - started < 10 and "ran" not in job.lines
    child = int(marker.read_text())
    time.sleep(0.3)
    alive = os.path.exists(f"/proc/{child}") and open(f"/proc/{child}/stat").read().split()[2] != "Z"
    assert not alive, "the step's child process survived the cancel"


def test_setup_plan_cpu_and_cuda_and_its_first_step_makes_a_venv(tmp_path):
    requirements = setup_env.engine_requirements(ROOT / "pyproject.toml")
    assert requirements[0] == f"torch=={setup_env.TORCH_VERSION}"
    assert "diffusers>=0.33" in requirements and not any(r.startswith("torch>") for r in requirements)
    env_dir = tmp_path / "engine env"
    cpu = setup_env.setup_steps(env_dir, requirements, base_python=sys.executable, cuda=False)
    cuda = setup_env.setup_steps(env_dir, requirements, base_python=sys.executable, cuda=True)
    torch_cpu, torch_cuda = cpu[2].argv, cuda[2].argv
    assert setup_env.CPU_TORCH_INDEX in torch_cpu and setup_env.CPU_TORCH_INDEX not in torch_cuda
    assert requirements[0] in torch_cpu and requirements[0] in torch_cuda
    assert "gsplat>=1.4" in cpu[3].argv and requirements[0] not in cpu[3].argv

    # Run the real first and last steps (no network): a venv without the stamp is not "set up" until the end.
    job = setup_env.SetupJob([cpu[0], cpu[-1]]).start()
    job.poll()
    assert not setup_env.is_set_up(env_dir)
    assert job.wait(timeout=180) == "succeeded", job.lines
    assert setup_env.venv_python(env_dir).is_file() and setup_env.is_set_up(env_dir)
    stamp = json.loads((env_dir / setup_env.SETUP_STAMP).read_text())
    assert stamp["cuda"] is False and stamp["requirements"] == requirements


def test_check_engine_reports_a_missing_interpreter_and_packages(tmp_path):
    with pytest.raises(setup_env.SetupError, match="does not exist"):
        setup_env.check_engine(tmp_path / "no-python")
    bare = tmp_path / "bare"
    setup_env.SetupJob(
        [setup_env.SetupStep("venv", (sys.executable, "-m", "venv", "--without-pip", str(bare)))]
    ).start().wait(120)
    report = setup_env.check_engine(setup_env.venv_python(bare))
    assert "torch" in report["missing"] and report["device"] == "cpu"


# ----------------------------------------------------------------------------- history


def _run_folder(root, name, prompt, created, mtime, *, scene=True, metadata=None):
    folder = root / name
    folder.mkdir()
    data = (
        metadata
        if metadata is not None
        else {
            "format": "vist3a-run",
            "version": 1,
            "created": created,
            "seed": 42,
            "settings": {"prompt": prompt, "output_kind": "gaussians"},
        }
    )
    (folder / "metadata.json").write_text(data if isinstance(data, str) else json.dumps(data))
    if scene:
        (folder / "scene.ply").write_bytes(b"ply\n")
    os.utime(folder, (mtime, mtime))
    return folder


def test_history_lists_complete_runs_newest_first_and_reports_broken_ones(tmp_path):
    _run_folder(tmp_path, "old", "an old barn", "2025-01-01T10:00:00+0000", 1000)
    _run_folder(tmp_path, "new", "a new castle", "2025-02-01T11:30:00+0000", 2000)
    _run_folder(tmp_path, ".in-progress", "hidden", "", 3000)
    _run_folder(tmp_path, "no-scene", "half", "", 1500, scene=False)
    _run_folder(tmp_path, "bad-json", "", "", 1600, metadata="{not json")
    (tmp_path / "unrelated").mkdir()
    runs, problems = history.scan_runs(str(tmp_path))
    assert [run.prompt for run in runs] == ["a new castle", "an old barn"]
    assert runs[0].label == "2025-02-01 11:30  a new castle" and runs[0].seed == 42
    assert runs[0].path == str(tmp_path / "new")
    assert len(problems) == 2 and any("no-scene" in p and "scene.ply" in p for p in problems)
    assert any("bad-json" in p for p in problems)
    assert history.scan_runs(str(tmp_path / "missing")) == ([], [])


def test_worker_threads_leave_blender_a_core_unless_told():
    client = load_addon_module("client")
    assert client.worker_threads(0, 8) == 7
    assert client.worker_threads(0, 2) == 1
    assert client.worker_threads(0, 1) == 1 and client.worker_threads(0, None) == 1
    assert client.worker_threads(4, 2) == 4
