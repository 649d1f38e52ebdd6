"""The engine's Python environment: creating it, and checking what an environment has.

Standard library only (no bpy), so it can be tested outside Blender.

"Set up engine" creates a virtual environment under the extension's *user* directory (upgrading
the extension replaces its own folder, so the environment must not live there) and installs the
engine's packages into it. The steps run one after another in child processes on a background
thread (``SetupJob``); their output lines go to a queue that the UI drains on the main thread, and
``cancel`` stops the running step (and everything it started) at once.

An environment counts as set up only once every step succeeded: the last step writes a stamp file
(``SETUP_STAMP``) into it, so a cancelled or failed setup is never mistaken for a usable one.
"""

import dataclasses
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Optional

# The torch release the engine is tested with (build.py pins the same one for the project's own venv).
TORCH_VERSION = "2.13.0"
# Machines without an NVIDIA GPU get the CPU build (a fraction of the download); the default PyPI
# wheel for Linux and Windows is the CUDA build.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
SETUP_STAMP = ".vist3a-setup.json"

# Packages the check reports, by import name (the engine needs all of them to generate).
CHECKED_MODULES = ("torch", "numpy", "safetensors", "huggingface_hub", "diffusers", "transformers", "peft", "imageio")

# Runs in the checked environment's Python; prints one JSON object.
_CHECK_SCRIPT = r"""
import importlib, json, platform, sys
report = {"python": sys.executable, "python_version": platform.python_version(), "packages": {}}
for name in %r:
    try:
        module = importlib.import_module(name)
        report["packages"][name] = getattr(module, "__version__", "installed")
    except Exception as exc:
        report["packages"][name] = None
        report.setdefault("import_errors", {})[name] = f"{type(exc).__name__}: {exc}"
device = "cpu"
if report["packages"].get("torch"):
    import torch
    report["cuda_available"] = torch.cuda.is_available()
    report["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        device = "cuda: " + torch.cuda.get_device_name(0)
report["device"] = device
print("@@VIST3A_CHECK@@" + json.dumps(report))
"""
_CHECK_MARKER = "@@VIST3A_CHECK@@"


class SetupError(RuntimeError):
    """The environment cannot be set up or checked; the message says why (shown to the user)."""


# ---------------------------------------------------------------------------------------------------
# What to install


def venv_python(env_dir) -> Path:
    """The interpreter of a virtual environment folder."""
    env_dir = Path(env_dir)
    return env_dir / "Scripts" / "python.exe" if os.name == "nt" else env_dir / "bin" / "python"


def is_set_up(env_dir) -> bool:
    """True when a setup ran to completion in ``env_dir`` (its stamp exists) and its Python is there."""
    env_dir = Path(env_dir)
    return (env_dir / SETUP_STAMP).is_file() and venv_python(env_dir).is_file()


def has_nvidia_gpu() -> bool:
    """True when an NVIDIA driver answers ``nvidia-smi -L``; decides between the CUDA and CPU torch."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def engine_requirements(pyproject) -> list:
    """The engine's runtime requirements from the bundled pyproject.toml, torch pinned first.

    Raises SetupError if the file is missing or has no ``project.dependencies``.
    """
    pyproject = Path(pyproject)
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        dependencies = project["dependencies"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise SetupError(f"cannot read the engine's requirements from {pyproject}: {exc}") from exc
    others = [r for r in dependencies if not re.match(r"torch\b", r)]
    return [f"torch=={TORCH_VERSION}", *others]


@dataclasses.dataclass(frozen=True)
class SetupStep:
    """One command of the setup: ``label`` is shown in the UI while it runs."""

    label: str
    argv: tuple


def setup_steps(env_dir, requirements, *, base_python: str, cuda: bool) -> list:
    """The commands that build the engine environment in ``env_dir``.

    1. create the virtual environment with ``base_python`` (Blender's own Python when run from the UI);
    2. upgrade pip (older pips have no line-by-line progress output);
    3. install torch: the CPU build from PyTorch's index without ``cuda``, the default (CUDA) wheel with it;
    4. install the other requirements;
    5. write the stamp that marks the environment complete.
    """
    env_dir = Path(env_dir)
    python = str(venv_python(env_dir))
    pip = (python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "raw")
    torch_requirement, others = requirements[0], list(requirements[1:])
    torch_source = () if cuda else ("--index-url", CPU_TORCH_INDEX)
    stamp = {"requirements": list(requirements), "cuda": cuda, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    stamp_code = "import json, sys; open(sys.argv[1], 'w', encoding='utf-8').write(json.dumps(json.loads(sys.argv[2])))"
    return [
        SetupStep("Creating the virtual environment", (base_python, "-m", "venv", str(env_dir))),
        SetupStep(
            "Upgrading pip",
            (python, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "pip"),
        ),
        SetupStep(
            f"Installing {torch_requirement} ({'CUDA' if cuda else 'CPU'})", (*pip, torch_requirement, *torch_source)
        ),
        SetupStep("Installing the engine's packages", (*pip, *others)),
        SetupStep(
            "Finishing",
            (python, "-c", stamp_code, str(env_dir / SETUP_STAMP), json.dumps(stamp)),
        ),
    ]


# ---------------------------------------------------------------------------------------------------
# Running the steps


class SetupJob:
    """Runs setup steps in order on a background thread, streaming their output; cancellable.

    The main thread calls ``poll()`` (from a timer in the UI, or in a loop in tests and background
    mode): it returns the output lines that arrived since the last call and keeps ``lines`` (the most
    recent ones), ``status``, ``step_index`` and ``fraction`` up to date.

    ``status`` is "running", then one of "succeeded", "failed" (``error`` says why) or "cancelled".
    """

    KEPT_LINES = 200
    RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"

    def __init__(self, steps, *, env: Optional[dict] = None):
        if not steps:
            raise SetupError("no setup steps to run")
        self.steps = list(steps)
        self.env = env
        self.status = self.RUNNING
        self.error = ""
        self.step_index = 0
        self.step_fraction = 0.0
        self.lines = []
        self._queue = queue.Queue()
        self._cancel = threading.Event()
        self._process = None
        self._process_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="vist3a-setup", daemon=True)

    def start(self) -> "SetupJob":
        self._thread.start()
        return self

    @property
    def finished(self) -> bool:
        return self.status != self.RUNNING

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1]: finished steps plus pip's progress within the running one."""
        if self.status == self.SUCCEEDED:
            return 1.0
        return min(1.0, (self.step_index + self.step_fraction) / len(self.steps))

    @property
    def step_label(self) -> str:
        return self.steps[min(self.step_index, len(self.steps) - 1)].label

    def cancel(self) -> None:
        """Stops the running step and every process it started; the job ends as "cancelled"."""
        self._cancel.set()
        with self._process_lock:
            if self._process is not None and self._process.poll() is None:
                _kill_tree(self._process)

    def poll(self) -> list:
        """New output lines since the last call (main thread); updates the job's state."""
        new_lines = []
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "line":
                new_lines.append(value)
                self._track_progress(value)
            elif kind == "step":
                self.step_index, self.step_fraction = value, 0.0
            elif kind == "end":
                self.status, self.error = value
        self.lines = (self.lines + new_lines)[-self.KEPT_LINES :]
        return new_lines

    def wait(self, timeout: Optional[float] = None) -> str:
        """Blocks until the job ends (or ``timeout`` s pass), polling; returns ``status``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self._thread.join(timeout=0.05)
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                break
        return self.status

    # pip with --progress-bar raw prints "Progress 1234 of 5678" per download chunk; the hub's
    # downloads print tqdm bars ("Fetching 12 files:  42%|████      | 5/12 [...]").
    _PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)")
    _TQDM_PROGRESS = re.compile(r"(\d{1,3})%\|")

    def _track_progress(self, line: str) -> None:
        match = self._PIP_PROGRESS.match(line)
        if match and int(match.group(2)) > 0:
            self.step_fraction = min(1.0, int(match.group(1)) / int(match.group(2)))
            return
        match = self._TQDM_PROGRESS.search(line)
        if match:
            self.step_fraction = min(1.0, int(match.group(1)) / 100)

    def _run(self) -> None:
        try:
            for index, step in enumerate(self.steps):
                if self._cancel.is_set():
                    break
                self._queue.put(("step", index))
                self._queue.put(("line", f"== {step.label}"))
                code = self._run_step(step)
                if self._cancel.is_set():
                    break
                if code != 0:
                    self._queue.put(("end", (self.FAILED, f"{step.label} failed (exit status {code})")))
                    return
            if self._cancel.is_set():
                self._queue.put(("end", (self.CANCELLED, "cancelled")))
            else:
                self._queue.put(("end", (self.SUCCEEDED, "")))
        except OSError as exc:
            self._queue.put(("end", (self.FAILED, f"cannot run {self.steps[self.step_index].label!r}: {exc}")))

    def _run_step(self, step: SetupStep) -> int:
        popen_options = {"start_new_session": True} if os.name == "posix" else {}
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"
        with self._process_lock:
            if self._cancel.is_set():
                return -1
            process = subprocess.Popen(
                list(step.argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                **popen_options,
            )
            self._process = process
        # pip redraws some lines with carriage returns: treat those as line ends too.
        buffer = b""
        while True:
            chunk = process.stdout.read1(4096) if hasattr(process.stdout, "read1") else process.stdout.read(4096)
            if not chunk:
                break
            buffer += chunk
            parts = re.split(rb"\r\n|\r|\n", buffer)
            buffer = parts.pop()
            for part in parts:
                if part.strip():
                    self._queue.put(("line", part.decode("utf-8", "replace").rstrip()))
        if buffer.strip():
            self._queue.put(("line", buffer.decode("utf-8", "replace").rstrip()))
        process.stdout.close()
        return process.wait()


def _kill_tree(process) -> None:
    """Kills a step and the processes it started (pip builds run in children of their own)."""
    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
        process.kill()


def start_setup(env_dir, pyproject, *, base_python: Optional[str] = None, cuda: Optional[bool] = None) -> SetupJob:
    """Starts building the engine environment in ``env_dir`` from the requirements in ``pyproject``."""
    requirements = engine_requirements(pyproject)
    # A setup that starts over must not leave the old stamp vouching for a half-changed environment.
    Path(env_dir, SETUP_STAMP).unlink(missing_ok=True)
    cuda = has_nvidia_gpu() if cuda is None else cuda
    steps = setup_steps(env_dir, requirements, base_python=base_python or sys.executable, cuda=cuda)
    return SetupJob(steps).start()


# Runs in the engine's Python: downloads one hub repository into the hub cache (where the engine's
# loaders look for it), with tqdm's progress bars on stderr.
_DOWNLOAD_SCRIPT = r"""
import sys
from huggingface_hub import snapshot_download
path = snapshot_download(repo_id=sys.argv[1], revision=sys.argv[2] or None)
print("Downloaded to " + path)
"""


def download_step(python, repo_id: str, revision: str = "") -> SetupStep:
    """A step that downloads hub repository ``repo_id`` with the engine's Python (for a ``SetupJob``)."""
    return SetupStep(f"Downloading {repo_id}", (str(python), "-c", _DOWNLOAD_SCRIPT, repo_id, revision))


# ---------------------------------------------------------------------------------------------------
# Checking an environment


def check_engine(python, timeout: float = 120.0) -> dict:
    """What an engine Python has: its version, the engine's packages, and the device torch sees.

    Returns the report dict (``packages`` maps import names to versions, None when missing; ``device``
    is "cpu" or "cuda: <name>"; ``missing`` lists the missing packages). Raises SetupError when the
    interpreter cannot be run or does not answer.
    """
    python = str(python)
    if not os.path.isfile(python):
        raise SetupError(f"engine Python {python} does not exist")
    try:
        completed = subprocess.run(
            [python, "-c", _CHECK_SCRIPT % (CHECKED_MODULES,)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"cannot run engine Python {python}: {exc}") from exc
    for line in completed.stdout.splitlines():
        if line.startswith(_CHECK_MARKER):
            report = json.loads(line[len(_CHECK_MARKER) :])
            report["missing"] = [name for name, version in report["packages"].items() if version is None]
            return report
    tail = (completed.stderr or completed.stdout).strip()[-500:]
    raise SetupError(f"engine Python {python} did not run the check (exit status {completed.returncode}): {tail}")
