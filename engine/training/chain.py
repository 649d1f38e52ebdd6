"""A chain of training stages, each run as ``python -m engine ...`` commands: stage by stage, resumable.

Every command of a stage is a command line of the engine's own CLI, so each stage is exactly what a user
could run by hand; a stage may also hold in-process steps (writing a bundle manifest, assembling a
bundle). The chain keeps, inside its work folder ``WORK``:

* ``WORK/logs/<stage>.log``: everything the stage's commands printed (appended, one header per command);
* ``WORK/state/<stage>.json``: ``{"status": "running" | "done", "settings": [...], "inputs": {...}, ...}``:
  the stage's command lines (without ``--threads`` / ``--resume``, which do not change a result) and a
  quick hash of every input it read (``engine.pipeline.settings.fingerprint``), written when it starts
  and again when it has finished.

A stage is *done* (and skipped) when its state says done with the same settings and the same inputs and
all its output files exist. Otherwise it runs; a command whose run folder already holds a run (its
``resume_probe`` glob matches there) gets ``--resume``, so an interrupted run continues and a run given
more steps is extended. A stage whose inputs changed since its run folder was started (an earlier stage
was trained further) is refused with the folder to delete: resuming would mix two inputs in one run.

A command that fails stops the chain: the report names the stage's log, shows its last lines, the failed
command and the command that resumes the chain.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from engine.io.atomic import atomic_write

# The repository (or installation) root: ``python -m engine`` is run from here.
ENGINE_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 25

# Stage status, as the plan and the progress lines name it.
DONE = "done"
RESUME = "resume"
RUN = "run"
STALE = "stale"
WAITING = "waiting"  # an input is not there yet (an earlier stage has not run)


class ChainError(RuntimeError):
    """The chain cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Command:
    """One ``python -m engine ARGS`` call.

    Args:
        argv: the arguments after ``python -m engine``.
        run_dir: the run folder this command trains in (None: it has no resumable run).
        resume_probe: a glob relative to ``run_dir``; when it matches, ``--resume`` is passed.
        threads: the command has a ``--threads N`` option (the chain passes its thread count).
    """

    argv: tuple[str, ...]
    run_dir: Optional[Path] = None
    resume_probe: Optional[str] = None
    threads: bool = False

    def has_run(self) -> bool:
        """True when ``run_dir`` already holds a run of this command (the resume probe matches)."""
        if self.run_dir is None or self.resume_probe is None:
            return False
        return any(self.run_dir.glob(self.resume_probe))

    def full_argv(self, threads: Optional[int]) -> list[str]:
        """The arguments as they are run now: with ``--threads`` and, for an existing run, ``--resume``."""
        argv = list(self.argv)
        if self.threads and threads:
            argv += ["--threads", str(threads)]
        if self.has_run():
            argv.append("--resume")
        return argv

    def settings(self) -> str:
        return "python -m engine " + shlex.join(self.argv)


@dataclass(frozen=True)
class InProcess:
    """A step done by the chain itself (no subprocess): ``run()`` with a one-line description."""

    description: str
    run: Callable[[], object]

    def settings(self) -> str:
        return self.description


Step = Union[Command, InProcess]


@dataclass(frozen=True)
class Stage:
    """A named unit of the chain: its steps in order, the files it reads and the files it writes.

    ``inputs``: outputs of earlier stages that this one reads (files or folders, hashed to notice a
    change); ``outputs``: files that all exist once the stage is complete.
    """

    name: str
    summary: str
    steps: tuple[Step, ...]
    outputs: tuple[Path, ...]
    inputs: tuple[Path, ...] = ()

    def settings(self) -> list[str]:
        return [step.settings() for step in self.steps]

    def run_dirs_with_runs(self) -> list[Path]:
        return [s.run_dir for s in self.steps if isinstance(s, Command) and s.has_run()]


Runner = Callable[[list[str], Path, dict], int]


def subprocess_runner(argv: list[str], log: Path, env: dict) -> int:
    """Runs ``python -m engine ARGV`` with its output appended to ``log``; returns the exit status."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n$ python -m engine {shlex.join(argv)}\n")
        handle.flush()
        done = subprocess.run(
            [sys.executable, "-m", "engine", *argv],
            cwd=ENGINE_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return done.returncode


def command_env(threads: Optional[int]) -> dict:
    """The environment of every command: unbuffered output and, with ``threads``, the BLAS/OpenMP pools
    sized to it (``torch`` reads ``OMP_NUM_THREADS`` for commands without a ``--threads`` option)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


# ------------------------------------------------------------------------------------------------ state
def state_file(work: Path, stage: Stage) -> Path:
    return work / "state" / f"{stage.name}.json"


def log_file(work: Path, stage: Stage) -> Path:
    return work / "logs" / f"{stage.name}.log"


def read_state(work: Path, stage: Stage) -> Optional[dict]:
    path = state_file(work, stage)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a damaged state file: the stage runs again (resuming its run folder)


def write_state(work: Path, stage: Stage, state: dict) -> None:
    path = state_file(work, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(state, indent=1) + "\n")


def input_fingerprints(stage: Stage) -> Optional[dict]:
    """``{path: quick hash}`` of the stage's inputs, or None when one of them does not exist yet."""
    from engine.pipeline.settings import fingerprint

    if not all(path.exists() for path in stage.inputs):
        return None
    return {str(path): fingerprint(path)["quick_sha256"] for path in stage.inputs}


def stage_status(work: Path, stage: Stage) -> str:
    """DONE, RUN, RESUME (a run folder holds a run to continue), STALE (a run folder was started on other
    inputs) or WAITING (an input is missing)."""
    inputs = input_fingerprints(stage)
    if inputs is None:
        return WAITING
    state = read_state(work, stage)
    if state is not None and state.get("inputs") != inputs and stage.run_dirs_with_runs():
        return STALE
    if (
        state is not None
        and state.get("status") == DONE
        and state.get("settings") == stage.settings()
        and state.get("inputs") == inputs
        and all(path.exists() for path in stage.outputs)
    ):
        return DONE
    return RESUME if stage.run_dirs_with_runs() else RUN


# ------------------------------------------------------------------------------------------------ plan
def describe_step(step: Step, threads: Optional[int]) -> str:
    if isinstance(step, InProcess):
        return f"(in-process) {step.description}"
    return "python -m engine " + shlex.join(step.full_argv(threads))


def plan_text(work: Path, stages: Sequence[Stage], threads: Optional[int]) -> str:
    """The stages and their commands as they would run now, each with its status."""
    lines = []
    for number, stage in enumerate(stages, 1):
        status = stage_status(work, stage)
        lines.append(f"{number:2d}. {stage.name} [{status}]: {stage.summary}")
        lines += [f"      {describe_step(step, threads)}" for step in stage.steps]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ run
@dataclass
class ChainReport:
    """What a chain run did: stage name -> "skipped" | "finished" | "failed", and the seconds each took."""

    outcome: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failed: Optional[str] = None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return "(no log)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _stale_message(stage: Stage) -> str:
    folders = ", ".join(str(path) for path in stage.run_dirs_with_runs())
    return (
        f"stage {stage.name}: its inputs changed since its run was started in {folders} (an earlier stage was "
        f"trained further or again); resuming would mix both. Delete {folders} to train this stage again on "
        "the new inputs."
    )


def _run_steps(stage: Stage, work: Path, threads: Optional[int], runner: Runner) -> Optional[str]:
    """Runs the stage's steps in order; returns None on success, else what failed (for the report)."""
    log = log_file(work, stage)
    env = command_env(threads)
    for step in stage.steps:
        if isinstance(step, InProcess):
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"\n(in-process) {step.description}\n")
            try:
                step.run()
            except (OSError, ValueError, RuntimeError) as error:
                with open(log, "a", encoding="utf-8") as handle:
                    handle.write(f"failed: {error}\n")
                return f"{step.description}: {error}"
            continue
        argv = step.full_argv(threads)
        code = runner(argv, log, env)
        if code != 0:
            return f"exit status {code} of: python -m engine {shlex.join(argv)}"
    missing = [str(path) for path in stage.outputs if not path.exists()]
    if missing:
        return "its commands finished but did not write " + ", ".join(missing)
    return None


def run_stage(
    stage: Stage, work: Path, threads: Optional[int], runner: Runner, say: Callable[[str], None]
) -> tuple[str, float, Optional[str]]:
    """Runs one stage unless it is done: ("skipped" | "finished" | "failed", seconds, failure or None).

    Raises ChainError for a stage that cannot run (stale run folder, missing input)."""
    status = stage_status(work, stage)
    if status == DONE:
        say(f"{stage.name}: skipped (already complete)")
        return "skipped", 0.0, None
    if status == STALE:
        raise ChainError(_stale_message(stage))
    if status == WAITING:
        missing = ", ".join(str(path) for path in stage.inputs if not path.exists())
        raise ChainError(f"stage {stage.name} needs {missing}, which an earlier stage writes: run that stage first")
    log = log_file(work, stage)
    log.parent.mkdir(parents=True, exist_ok=True)
    state = {"status": "running", "settings": stage.settings(), "inputs": input_fingerprints(stage)}
    state["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_state(work, stage, state)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n== {stage.name}: started {state['started']} ({status}) ==\n")
    say(f"{stage.name}: started{' (resuming)' if status == RESUME else ''}; log: {log}")
    began = time.monotonic()
    failure = _run_steps(stage, work, threads, runner)
    seconds = time.monotonic() - began
    if failure is not None:
        return "failed", seconds, failure
    write_state(work, stage, {**state, "status": DONE, "seconds": round(seconds, 1)})
    say(f"{stage.name}: finished in {format_seconds(seconds)}")
    return "finished", seconds, None


def run_chain(
    work: Path,
    stages: Sequence[Stage],
    *,
    threads: Optional[int],
    resume_command: str,
    runner: Runner = subprocess_runner,
    say: Callable[[str], None] = print,
) -> ChainReport:
    """Runs ``stages`` in order (each skipped when done); stops at the first failure, whose report
    (``say``) names the stage's log with its last lines and the command that resumes the chain."""
    report = ChainReport()
    for number, stage in enumerate(stages, 1):
        say(f"[{number}/{len(stages)}] {stage.summary}")
        outcome, seconds, failure = run_stage(stage, work, threads, runner, say)
        report.outcome[stage.name] = outcome
        report.seconds[stage.name] = seconds
        if failure is not None:
            report.failed = stage.name
            log = log_file(work, stage)
            say(
                f"{stage.name}: FAILED after {format_seconds(seconds)}: {failure}\n"
                f"---- last lines of {log} ----\n{_tail(log)}\n----\n"
                f"The chain stopped at stage {stage.name}. Fix the cause, then resume with:\n  {resume_command}"
            )
            return report
    return report


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
