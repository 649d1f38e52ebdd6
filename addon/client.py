"""The Blender side of the engine: one worker process per Blender session, and the state the UI shows.

No bpy here: the caller passes an ``EngineConfig`` (built from the preferences) and drives
``EngineSession`` from the main thread.

* The worker (``python -m engine.worker``, in the engine's Python, running the engine code bundled
  with the extension) starts on the first request and is kept for the next ones, models loaded.
* Its events are read on a thread (``engine.worker.client``) into a queue; ``poll()`` drains that
  queue without blocking. The UI calls it from a timer; background mode and tests use ``wait()``.
* A worker that exits, is killed, or writes something that is not the protocol ends the running
  generation with an error; one that stops answering pings is killed as hung. Either way the next
  request starts a fresh worker. Nothing here touches the scene: a failed run leaves it as it was.
"""

import dataclasses
import os
import time
from typing import Optional

from .engine.worker import client as worker_client
from .engine.worker import protocol

# Seconds a worker has to send its hello after it starts (it imports no torch before that).
START_TIMEOUT = 60.0
# While a request runs: after this many seconds without any event, ask the worker for a ping...
PING_AFTER = 5.0
# ...and declare it hung if the ping is not answered within this many seconds (the worker answers
# pings from its reading thread, even in the middle of a denoising step).
HANG_TIMEOUT = 30.0
# How long ``close`` waits for a worker to shut down before killing it.
SHUTDOWN_TIMEOUT = 10.0


class EngineUnavailable(RuntimeError):
    """The worker cannot be started; the message says why and what to do (shown to the user)."""


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How to start the worker.

    Attributes:
        python: the engine's Python interpreter, or "" when none is set up.
        extension_dir: the folder that holds the bundled ``engine`` package (the worker's cwd).
        log_dir: where the worker's log and captured stderr go.
        allow_download: whether the worker may download models from the hub (Blender's online access).
        cpu_threads: torch threads of the worker on the processor (``OMP_NUM_THREADS``); 0: automatic
            (:func:`worker_threads`).
    """

    python: str
    extension_dir: str
    log_dir: str
    allow_download: bool
    cpu_threads: int = 0


def worker_threads(requested: int, cpu_count: Optional[int]) -> int:
    """The worker's CPU thread count: ``requested`` when positive, else every core but one (at least one).

    Blender keeps a core for its interface, and torch's parallel operations wait for their slowest thread:
    on the 2-core development machine, a matmul of the default model took 0.07 ms on one thread and 7.8 ms
    on two while another process used a core, and denoising was about 40 times slower
    (``benchmarks/prompt_to_blender.py``, docs/default_model.md).
    """
    if requested > 0:
        return requested
    return max(1, (cpu_count or 1) - 1)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a request ended.

    ``kind`` is "result" (``output_dir`` is the run folder; ``unknown_words`` the prompt's words the
    model does not know), "cancelled" or "error" (``message`` and ``hint`` say what happened and what to do).
    """

    kind: str
    request_id: str
    output_dir: str = ""
    seed: Optional[int] = None
    message: str = ""
    hint: str = ""
    unknown_words: tuple = ()


# What the UI shows for each stage of a generation.
STAGE_LABELS = {
    "load": "Loading models",
    "encode_prompt": "Encoding the prompt",
    "denoise": "Denoising",
    "decode_video": "Decoding the video",
    "decode_scene": "Decoding the 3D scene",
    "write_outputs": "Writing outputs",
}


@dataclasses.dataclass
class Job:
    """The request that is running: what the progress bar shows."""

    request_id: str
    kind: str
    started: float
    stage: str = ""
    step: int = 0
    total: int = 0
    preview: str = ""
    cancel_requested: bool = False

    @property
    def label(self) -> str:
        if self.cancel_requested:
            return "Cancelling…"
        if not self.stage:
            return "Starting the engine…"
        label = STAGE_LABELS.get(self.stage, self.stage)
        return f"{label} {self.step}/{self.total}" if self.stage == "denoise" and self.total else label

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1], the stages weighted by their typical share of the time."""
        weights = {
            "load": 0.1,
            "encode_prompt": 0.02,
            "denoise": 0.68,
            "decode_video": 0.08,
            "decode_scene": 0.07,
            "write_outputs": 0.05,
        }
        done = 0.0
        for stage, weight in weights.items():
            if stage == self.stage:
                return min(1.0, done + weight * (self.step / self.total if self.total else 0.0))
            done += weight
        return 0.0


class EngineSession:
    """The worker process and the running request, driven from Blender's main thread."""

    def __init__(self, hang_timeout: float = HANG_TIMEOUT, ping_after: float = PING_AFTER):
        self.hang_timeout = hang_timeout
        self.ping_after = ping_after
        self.worker = None
        self.job: Optional[Job] = None
        self._config: Optional[EngineConfig] = None
        self._stderr_file = None
        self._stderr_path = ""
        self._last_event_at = 0.0
        self._ping: Optional[tuple] = None  # (id, sent at) of the unanswered heartbeat

    # ------------------------------------------------------------------ state

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def worker_running(self) -> bool:
        return self.worker is not None and self.worker.alive

    @property
    def worker_pid(self) -> Optional[int]:
        return self.worker.process.pid if self.worker_running else None

    # ------------------------------------------------------------------ worker life

    def ensure_worker(self, config: EngineConfig) -> None:
        """Starts a worker unless one with the same configuration runs. Raises EngineUnavailable."""
        if self.worker_running and self._config == config:
            return
        self.close()
        if not config.python:
            raise EngineUnavailable(
                "The VIST3A engine is not set up: open Preferences > Add-ons > VIST3A and click "
                "'Set up engine', or set 'Engine Python' to a Python that has the engine's packages"
            )
        if not os.path.isfile(config.python):
            raise EngineUnavailable(
                f"The engine Python {config.python} does not exist: fix 'Engine Python' in "
                "Preferences > Add-ons > VIST3A, or click 'Set up engine' there"
            )
        os.makedirs(config.log_dir, exist_ok=True)
        env = dict(os.environ)
        # The bundled engine must win over any other copy the engine Python could import.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [config.extension_dir, env.get("PYTHONPATH")]))
        env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into the engine's Python
        env["PYTHONUNBUFFERED"] = "1"
        if not config.allow_download:
            env["HF_HUB_OFFLINE"] = "1"
        # An explicit setting wins; "automatic" respects an OMP_NUM_THREADS the user gave Blender.
        if config.cpu_threads > 0 or "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(worker_threads(config.cpu_threads, os.cpu_count()))
        self._stderr_path = os.path.join(config.log_dir, "worker-stderr.log")
        self._stderr_file = open(self._stderr_path, "wb")  # noqa: SIM115 - kept open for the worker's life
        worker = worker_client.WorkerProcess(
            config.python,
            extra_args=["--log-file", os.path.join(config.log_dir, "worker.log")],
            cwd=config.extension_dir,
            env=env,
            stderr=self._stderr_file,
        )
        try:
            worker.start(timeout=START_TIMEOUT)
        except OSError as exc:
            self._discard(worker)
            raise EngineUnavailable(
                f"The engine Python {config.python} cannot be started ({exc}): fix 'Engine Python' in "
                "Preferences > Add-ons > VIST3A"
            ) from exc
        except worker_client.WorkerProtocolMismatch as exc:
            self._discard(worker)
            raise EngineUnavailable(
                f"{config.python} did not start the VIST3A engine worker ({exc}); check 'Engine Python' in "
                "Preferences > Add-ons > VIST3A"
            ) from exc
        except worker_client.WorkerError as exc:
            self._discard(worker)
            raise EngineUnavailable(f"The engine worker did not start: {exc}.{self._stderr_tail()}") from exc
        self.worker = worker
        self._config = config

    def close(self) -> None:
        """Shuts the worker down (models and GPU memory are freed with it); a running job is dropped."""
        if self.worker is not None:
            self.worker.close(timeout=SHUTDOWN_TIMEOUT)
        self._discard(None)

    def _discard(self, worker) -> None:
        if worker is not None:
            worker.kill()
            worker.close(timeout=0)
        self.worker = None
        self._config = None
        self.job = None
        self._ping = None
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    def _stderr_tail(self, lines: int = 6) -> str:
        """The last lines the worker wrote to stderr, to put in an error message."""
        if not self._stderr_path or not os.path.isfile(self._stderr_path):
            return ""
        with open(self._stderr_path, "rb") as file:
            file.seek(max(0, os.path.getsize(self._stderr_path) - 4000))
            text = file.read().decode("utf-8", "replace")
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        return (" Last worker output: " + " | ".join(tail)) if tail else ""

    # ------------------------------------------------------------------ requests

    def start_generation(
        self,
        config: EngineConfig,
        *,
        settings: dict,
        model: str,
        runtime: dict,
        output_root: str,
        preview_every: int = 0,
    ) -> str:
        """Sends a ``generate`` request (starting the worker if needed); returns its id.

        The request asks for no ``flythrough.mp4``: Blender renders the scene itself and nothing in the
        add-on shows that video, while rendering it on a CPU took longer than the whole rest of a
        generation of the default model (19 of 24 s, benchmarks/prompt_to_blender.py).

        Raises EngineUnavailable when the worker cannot be started, RuntimeError when a request runs.
        """
        if self.busy:
            raise RuntimeError("a generation is already running")
        fields = {
            "settings": settings,
            "model": model,
            "runtime": runtime,
            "output_root": output_root,
            "flythrough": False,
        }
        if preview_every:
            fields["preview_every"] = preview_every
        # Validate here, so a bad request is reported without starting or bothering the worker.
        protocol.make_request(protocol.GENERATE, "check", **fields)
        self.ensure_worker(config)
        try:
            request_id = self.worker.send(protocol.GENERATE, **fields)
        except worker_client.WorkerDied:
            # The kept worker died while idle: start a fresh one and try once more.
            self._discard(self.worker)
            self.ensure_worker(config)
            request_id = self.worker.send(protocol.GENERATE, **fields)
        self.job = Job(request_id=request_id, kind=protocol.GENERATE, started=time.monotonic())
        self._last_event_at = time.monotonic()
        return request_id

    def cancel(self) -> None:
        """Asks the worker to stop the running generation; ``poll`` reports the "cancelled" outcome."""
        if self.job is None or self.job.cancel_requested:
            return
        self.job.cancel_requested = True
        try:
            self.worker.send(protocol.CANCEL, target=self.job.request_id)
        except worker_client.WorkerError:
            pass  # the worker is gone; poll() reports that

    # ------------------------------------------------------------------ events

    def poll(self) -> Optional[Outcome]:
        """Handles every event that arrived (never blocks). Returns the outcome when the job ended."""
        if self.job is None:
            return None
        try:
            while True:
                try:
                    event = self.worker.next_event(timeout=0)
                except worker_client.WorkerTimeout:
                    break
                self._last_event_at = time.monotonic()
                outcome = self._handle(event)
                if outcome is not None:
                    self.job = None
                    return outcome
        except worker_client.WorkerDied as exc:
            return self._fail(f"The engine stopped unexpectedly: {exc}.{self._stderr_tail()}")
        except worker_client.WorkerProtocolMismatch as exc:
            return self._fail(f"The engine sent something that is not the worker protocol: {exc}")
        return self._check_heartbeat()

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> Optional[Outcome]:
        """Polls until the job ends or ``timeout`` s pass (for background mode and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.job is not None:
            outcome = self.poll()
            if outcome is not None:
                return outcome
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(interval)
        return None

    def _handle(self, event: dict) -> Optional[Outcome]:
        kind, request_id = event["type"], event.get("id")
        if self._ping is not None and request_id == self._ping[0]:
            self._ping = None
            return None
        job = self.job
        if request_id != job.request_id:
            if kind == protocol.ERROR and request_id is None:  # the worker could not read something we sent
                return self._fail(f"The engine rejected a request: {event['message']}")
            return None  # an answer to a cancel request, or a late heartbeat
        if kind == protocol.PROGRESS:
            job.stage, job.step, job.total = event["stage"], event["step"], event["total"]
            if event.get("preview"):
                job.preview = event["preview"]
            return None
        if kind == protocol.RESULT:
            return Outcome(
                "result",
                request_id,
                output_dir=event["output_dir"],
                seed=event.get("seed"),
                unknown_words=tuple(event.get("unknown_words", ())),
            )
        if kind == protocol.CANCELLED:
            return Outcome("cancelled", request_id, message="Generation cancelled")
        if kind == protocol.ERROR:
            return Outcome("error", request_id, message=event["message"], hint=self._hint_for(event))
        return Outcome("done", request_id)

    def _hint_for(self, event: dict) -> str:
        text = f"{event['message']}\n{event.get('traceback', '')}"
        if "No module named" in text:
            return (
                "The engine Python lacks one of the engine's packages: click 'Check engine' or 'Set up engine' "
                "in Preferences > Add-ons > VIST3A"
            )
        hint = event.get("hint") or ""
        if event["error_type"] in ("model_not_found", "internal") and self._config and not self._config.allow_download:
            hint += (
                " Blender's online access is off (Preferences > System > Network), so models on the hub "
                "are not downloaded; models already downloaded still work."
            )
        return hint.strip()

    def _check_heartbeat(self) -> Optional[Outcome]:
        now = time.monotonic()
        if self._ping is not None:
            if now - self._ping[1] > self.hang_timeout:
                return self._fail(
                    f"The engine stopped responding (no answer for {self.hang_timeout:.0f} s); it was stopped. "
                    "The next Generate starts it again."
                )
            return None
        if now - self._last_event_at > self.ping_after:
            try:
                self._ping = (self.worker.send(protocol.PING), now)
            except worker_client.WorkerDied as exc:
                return self._fail(f"The engine stopped unexpectedly: {exc}.{self._stderr_tail()}")
        return None

    def _fail(self, message: str) -> Outcome:
        """Ends the job with an error and drops the worker (a fresh one starts on the next request)."""
        request_id = self.job.request_id if self.job else ""
        self._discard(self.worker)
        return Outcome("error", request_id, message=message)
