#!/usr/bin/env python3
"""The project's task runner (standard library only).

    python build.py setup            create .venv and install the engine + test dependencies
    python build.py test [ARGS]      set up if needed, then run pytest (ARGS go to pytest)
    python build.py build            validate and build the Blender extension zip into dist/
    python build.py demo "PROMPT"    generate a scene with the best local model, import it into
                                     Blender and render it with Cycles
    python build.py train-default ARGS  train the embedded default model stage by stage (resumable):
                                     python -m engine train default ARGS (--help lists them)

Run ``python build.py COMMAND --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
DIST = ROOT / "dist"
STAMP = VENV / ".vist3a-setup.json"
MANIFEST = ROOT / "blender_manifest.toml"
# The embedded default model: shipped inside the extension at the same place relative to the engine package
# (models/default next to engine/), where engine.pipeline.model_choice finds it.
DEFAULT_MODEL = ROOT / "models" / "default"
DEFAULT_MODEL_IN_EXTENSION = Path("models") / "default"

# The CPU build of torch that machines without CUDA install. Where a GPU is present, the CUDA build of
# the same version is installed instead (the default wheel on PyPI for Linux).
TORCH_VERSION = "2.13.0"
# Blender as a Python module, for the tests (Python 3.11 only; it pins numpy < 2).
BPY_REQUIREMENT = "bpy==5.0.1"

# The other Blender versions the add-on is tested on (install, import, Cycles render): version ->
# (Python it needs, pip requirements). Each gets a virtual environment of its own, created on first use and
# cached in BLENDER_ENVS (reused while its requirements stay the same). 5.0 is BPY_REQUIREMENT in .venv.
BLENDER_MATRIX = {
    "4.2": ("3.11", ["bpy==4.2.*", "numpy<2"]),  # LTS; the manifest's blender_version_min
    "4.5": ("3.11", ["bpy==4.5.*", "numpy<2"]),  # LTS
    "5.2": ("3.13", ["bpy==5.2.*"]),
}
BLENDER_ENVS = Path(os.environ.get("VIST3A_CACHE", Path.home() / ".cache" / "vist3a")) / "blender"
# Tells the tests where each Blender's Python is: "4.2=/path/python;5.2=SKIP:reason;..."
MATRIX_ENV_VAR = "VIST3A_BLENDER_MATRIX"


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"[build] error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def has_cuda() -> bool:
    """True when an NVIDIA driver answers; decides between the CUDA and the CPU torch build."""
    if os.environ.get("VIST3A_FORCE_CPU"):
        return False
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def requirements(cuda: bool) -> list[str]:
    """Engine and test requirements from pyproject.toml, with torch pinned for this machine."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [r for r in project["dependencies"] if not r.startswith("torch")]
    reqs += project["optional-dependencies"]["test"]
    reqs.insert(0, f"torch=={TORCH_VERSION}")
    return reqs


def setup_fingerprint(reqs: list[str], cuda: bool) -> str:
    text = json.dumps({"reqs": reqs, "cuda": cuda, "python": sys.version.split()[0]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cmd_setup(args: argparse.Namespace) -> int:
    cuda = has_cuda()
    reqs = requirements(cuda)
    fingerprint = setup_fingerprint(reqs, cuda)
    if STAMP.exists() and venv_python().exists() and not args.force:
        if json.loads(STAMP.read_text()).get("fingerprint") == fingerprint:
            log(f"environment up to date: {VENV}")
            return 0
    if sys.version_info[:2] != (3, 11):
        log(f"warning: Python {sys.version.split()[0]}; the test dependency {BPY_REQUIREMENT} needs Python 3.11")
    if not venv_python().exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # torch first and alone: on a machine without CUDA the pinned CPU wheel must win before anything
    # else can ask for a torch build and drag in the CUDA packages.
    log(f"installing torch=={TORCH_VERSION} ({'CUDA' if cuda else 'CPU'} build)")
    run_checked(pip + [reqs[0]])
    if not cuda:
        check_no_cuda_packages()
    log("installing engine and test dependencies")
    # Constrain torch to the installed version so that no dependency can swap it for another build.
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(f"torch=={TORCH_VERSION}\n")
    try:
        run_checked(pip + ["-c", constraints.name] + reqs[1:])
    finally:
        os.unlink(constraints.name)
    if not cuda:
        check_no_cuda_packages()
    STAMP.write_text(json.dumps({"fingerprint": fingerprint, "cuda": cuda, "requirements": reqs}, indent=2))
    log("environment ready")
    return 0


def run_checked(command: list[str]) -> None:
    result = subprocess.run(command)
    if result.returncode != 0:
        fail(f"command failed ({result.returncode}): {' '.join(command)}")


def check_no_cuda_packages() -> None:
    """Fails when CUDA runtime packages were pulled onto a machine without CUDA (gigabytes for nothing)."""
    out = subprocess.run(
        [str(venv_python()), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cuda_pkgs = sorted(p["name"] for p in json.loads(out) if p["name"].lower().startswith(("nvidia-", "cuda-")))
    if cuda_pkgs:
        fail(
            "this machine has no CUDA, yet CUDA packages were installed: "
            + ", ".join(cuda_pkgs)
            + f". Make the CPU wheel torch=={TORCH_VERSION}+cpu available to pip (e.g. PIP_FIND_LINKS or "
            "PIP_EXTRA_INDEX_URL pointing at the PyTorch CPU wheels), delete .venv and run setup again."
        )


def ensure_setup() -> None:
    rc = cmd_setup(argparse.Namespace(force=False))
    if rc:
        sys.exit(rc)


def find_python(version: str) -> str | None:
    """An interpreter for Python ``version`` ("3.13"): on PATH, or one pyenv has installed."""
    if sys.version_info[:2] == tuple(int(p) for p in version.split(".")):
        return sys.executable
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
        return found
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for candidate in sorted(pyenv_root.glob(f"versions/{version}*/bin/python{version}"), reverse=True):
        if subprocess.run([str(candidate), "-c", "pass"], capture_output=True).returncode == 0:
            return str(candidate)
    return None


def blender_env(version: str) -> tuple[str, str]:
    """(python, "") of the cached environment for Blender ``version``, set up when missing or stale, or
    ("", reason) when it cannot be set up here ("SKIP:" + reason when this machine lacks the Python)."""
    python_version, reqs = BLENDER_MATRIX[version]
    interpreter = find_python(python_version)
    if interpreter is None:
        return "", f"SKIP:Python {python_version} (for Blender {version}) is not installed"
    env = BLENDER_ENVS / f"bpy-{version}"
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = env / ".vist3a-setup.json"
    fingerprint = hashlib.sha256(json.dumps({"reqs": reqs, "python": python_version}).encode()).hexdigest()
    if stamp.exists() and python.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        return str(python), ""
    log(f"setting up Blender {version} (Python {python_version}) in {env}")
    if env.exists():
        shutil.rmtree(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    steps = [[interpreter, "-m", "venv", str(env)], [str(python), "-m", "pip", "install", "--quiet"]]
    steps[1] += ["--disable-pip-version-check", *reqs]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            return "", f"setting up Blender {version} failed: {' '.join(step)}: {(done.stdout + done.stderr)[-600:]}"
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "requirements": reqs}))
    return str(python), ""


def setup_blender_matrix() -> str:
    """Sets up every version of BLENDER_MATRIX (in parallel) and returns the MATRIX_ENV_VAR value."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(BLENDER_MATRIX)) as pool:
        results = dict(zip(BLENDER_MATRIX, pool.map(blender_env, BLENDER_MATRIX)))
    entries = []
    for version, (python, problem) in results.items():
        if problem:
            log(problem.removeprefix("SKIP:"))
        entries.append(f"{version}={python or (problem if problem.startswith('SKIP:') else 'ERROR:' + problem)}")
    return ";".join(entries)


def cmd_test(args: argparse.Namespace) -> int:
    ensure_setup()
    env = dict(os.environ)
    if MATRIX_ENV_VAR not in env:
        start = time.monotonic()
        env[MATRIX_ENV_VAR] = setup_blender_matrix()
        log(f"Blender matrix ready in {time.monotonic() - start:.0f} s: {env[MATRIX_ENV_VAR]}")
    command = [str(venv_python()), "-m", "pytest", *args.pytest_args]
    log("running " + " ".join(command[1:]))
    code = subprocess.run(command, cwd=ROOT, env=env).returncode
    if code == 5:
        log("pytest collected no tests: that is a failure")
        return 1
    return code


def bpy_root() -> Path:
    """The installed bpy package directory inside .venv (it ships Blender's extension tool)."""
    out = subprocess.run(
        [
            str(venv_python()),
            "-c",
            "import importlib.util as u; print(u.find_spec('bpy').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        fail("bpy is not installed in .venv: run `python build.py setup`")
    return Path(out.stdout.strip())


def extension_tool() -> tuple[Path, Path]:
    """Blender's blender_ext.py and its tags file, from the bpy wheel."""
    root = bpy_root()
    versions = sorted(p for p in root.iterdir() if p.is_dir() and p.name[:1].isdigit())
    if not versions:
        fail(f"no Blender data directory found in {root}")
    scripts = versions[-1] / "scripts"
    return scripts / "addons_core/bl_pkg/cli/blender_ext.py", scripts / "modules/_bpy_internal/extensions/tags.py"


class BuildError(RuntimeError):
    """The extension could not be validated or built; the message says why."""


def default_model_files(bundle_dir: Path) -> list[Path]:
    """The files of the default model bundle in ``bundle_dir`` that the extension ships, relative to it:
    its ``vist3a.json`` and every file of the parts it names (Wan pipeline folder, LoRA, decoder
    checkpoint, points decoder checkpoint). Files the manifest does not name (e.g. the teachers trained on the way) stay out.

    Returns [] when ``bundle_dir`` has no ``vist3a.json`` (no default model assembled yet). Raises
    BuildError when the manifest is malformed, names a missing part, or a part outside the folder (a hub
    id or a path elsewhere): the shipped model must work offline, from the extension alone.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from engine.pipeline.settings import BUNDLE_MANIFEST, ModelBundle, ModelBundleError, ModelNotFoundError

    if not (bundle_dir / BUNDLE_MANIFEST).is_file():
        return []
    try:
        bundle = ModelBundle.load(bundle_dir)
        bundle.check_files()
    except (ModelBundleError, ModelNotFoundError) as exc:
        raise BuildError(f"the default model cannot be shipped: {exc}") from exc
    root = bundle_dir.resolve()
    parts = {"wan": bundle.wan, "decoder.checkpoint": bundle.decoder_checkpoint}
    if bundle.lora is not None:
        parts["lora"] = bundle.lora
    if bundle.points_decoder_checkpoint is not None:
        parts["points_decoder.checkpoint"] = bundle.points_decoder_checkpoint
    files = [Path(BUNDLE_MANIFEST)]
    for key, reference in parts.items():
        path = (root / reference).resolve()
        if Path(reference).is_absolute() or not path.is_relative_to(root) or path == root or not path.exists():
            raise BuildError(
                f"the default model cannot be shipped: {bundle_dir / BUNDLE_MANIFEST}: {key!r} ({reference}) must be "
                "a path inside the bundle folder (not a hub id), so that the extension holds the whole model"
            )
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p.relative_to(root) for p in found if "__pycache__" not in p.parts]
    return sorted(set(files))


def stage_extension(stage: Path, manifest: Path, default_model: Path | None = DEFAULT_MODEL) -> list[Path]:
    """Lays out the extension source: the add-on at the root, the engine beside it for the worker, and the
    default model bundle (``default_model_files``) at ``models/default`` beside the engine. Returns the
    model files shipped ([] when there is no default model)."""
    shutil.copytree(ROOT / "addon", stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(manifest, stage / "blender_manifest.toml")
    shutil.copytree(ROOT / "engine", stage / "engine", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("README.md", "pyproject.toml"):
        shutil.copy2(ROOT / name, stage / name)
    files = default_model_files(default_model) if default_model is not None else []
    for relative in files:
        target = stage / DEFAULT_MODEL_IN_EXTENSION / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(default_model / relative, target)
    return files


def build_extension(
    manifest: Path = MANIFEST, out_dir: Path = DIST, default_model: Path | None = DEFAULT_MODEL
) -> Path:
    """Validates and builds the extension zip with Blender's own tool; returns the zip's path.

    ``default_model``: the bundle folder shipped as the add-on's default model (None: none).
    """
    tool, tags = extension_tool()
    out_dir.mkdir(parents=True, exist_ok=True)
    python = str(venv_python())
    with tempfile.TemporaryDirectory(prefix="vist3a-ext-") as tmp:
        stage = Path(tmp) / "extension"
        shipped = stage_extension(stage, manifest, default_model)
        if shipped:
            size = sum((default_model / f).stat().st_size for f in shipped) / 1e6
            log(f"shipping the default model {default_model} ({len(shipped)} files, {size:.1f} MB)")
        elif default_model is not None:
            log(f"no default model to ship: {default_model} has no vist3a.json (the add-on will ask for a model)")
        result = subprocess.run(
            [python, str(tool), "validate", "--valid-tags", str(tags), str(stage)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise BuildError("Blender's validator rejected the extension:\n" + (result.stdout + result.stderr).strip())
        result = subprocess.run(
            [
                python,
                str(tool),
                "build",
                "--valid-tags",
                str(tags),
                "--source-dir",
                str(stage),
                "--output-dir",
                str(out_dir),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BuildError("Blender's extension build failed:\n" + (result.stdout + result.stderr).strip())
    info = tomllib.loads(manifest.read_text())
    zip_path = out_dir / f"{info['id']}-{info['version']}.zip"
    if not zip_path.exists():
        raise BuildError(f"the extension tool reported success but {zip_path} is missing")
    return zip_path


def cmd_build(args: argparse.Namespace) -> int:
    ensure_setup()
    log("validating and building the extension with Blender's extension tool")
    try:
        zip_path = build_extension(args.manifest, args.out_dir)
    except BuildError as exc:
        fail(str(exc))
    log(f"built {zip_path}")
    return 0


# Runs inside Blender-as-a-module: installs the built extension into a throwaway profile, imports the
# run folder with the add-on's own operator and renders the first generated camera with Cycles.
BLENDER_DEMO_SCRIPT = ROOT / "tools" / "blender_demo.py"


def blender_available() -> bool:
    check = subprocess.run([str(venv_python()), "-c", "import bpy"], capture_output=True)
    return check.returncode == 0


def cmd_demo(args: argparse.Namespace) -> int:
    ensure_setup()
    out = args.out or Path("outputs") / time.strftime("%Y%m%d-%H%M%S")
    command = [str(venv_python()), "-m", "engine", "demo", args.prompt, "--out", str(out), "--seed", str(args.seed)]
    if args.model:
        command += ["--model", str(args.model)]
    for option in ("frames", "size", "steps"):
        if getattr(args, option) is not None:
            command += [f"--{option}", str(getattr(args, option))]
    log("generating: " + " ".join(command[1:]))
    start = time.monotonic()
    code = subprocess.run(command, cwd=ROOT).returncode
    if code:
        return code
    log(f"generated {out} in {time.monotonic() - start:.1f} s")
    if not blender_available():
        log("Blender (the bpy module) is not available: skipping the import and the Cycles render")
        return 0
    zip_path = build_extension()
    png = (ROOT / out / "render.png").resolve()
    with tempfile.TemporaryDirectory(prefix="vist3a-blender-") as profile:
        env = dict(os.environ, BLENDER_USER_RESOURCES=profile)
        log("importing into Blender with the add-on and rendering with Cycles")
        result = subprocess.run(
            [str(venv_python()), str(BLENDER_DEMO_SCRIPT), str(zip_path), str((ROOT / out).resolve()), str(png)],
            cwd=profile,
            env=env,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0 or not png.is_file():
        fail("the Blender step failed:\n" + (result.stdout + result.stderr)[-4000:])
    log(f"Cycles render: {png}")
    return 0


def cmd_train_default(engine_args: list[str]) -> int:
    """Sets up if needed, then runs ``python -m engine train default ENGINE_ARGS`` in the current folder
    (relative paths stay the caller's); its exit status is returned."""
    ensure_setup()
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    command = [str(venv_python()), "-m", "engine", "train", "default", *engine_args]
    return subprocess.run(command, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setup", help="create .venv and install dependencies (idempotent)")
    p.add_argument("--force", action="store_true", help="reinstall even if the environment is up to date")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("test", help="run the test suite (sets up first if needed)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra arguments for pytest")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("build", help="build the Blender extension zip into dist/")
    p.add_argument("--manifest", type=Path, default=MANIFEST, help="manifest to build with (default: the project's)")
    p.add_argument("--out-dir", type=Path, default=DIST, help="where the zip goes (default: dist/)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("demo", help="generate a scene from a prompt, import it into Blender, render it")
    p.add_argument("prompt", help="what to generate")
    p.add_argument("--out", type=Path, help="run folder to create (default: outputs/<time>)")
    p.add_argument("--model", type=Path, help="model bundle (default: the best one available locally)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--frames", type=int, help="video frames (4k+1; default: the model's)")
    p.add_argument("--size", type=int, help="square frame size in pixels (default: the model's)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train-default",
        help="train the embedded default model from data to bundle, stage by stage (resumable); "
        "ARGS go to 'python -m engine train default' (see its --help)",
    )
    p.add_argument("engine_args", nargs=argparse.REMAINDER, help="e.g. --work runs/default [--plan] [--scale smoke]")
    p.set_defaults(func=lambda args: cmd_train_default(args.engine_args))

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-default"]:
        # Everything after "train-default" goes to the engine verbatim (--help included).
        return cmd_train_default(argv[1:])
    if argv[:1] == ["test"] and not {"-h", "--help"} & set(argv[1:2]):
        # Everything after "test" goes to pytest verbatim (options such as -k NAME included).
        return cmd_test(argparse.Namespace(pytest_args=argv[1:]))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
