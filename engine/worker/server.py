"""The engine's worker process: ``python -m engine.worker [--log-file PATH]``.

A long-lived process that keeps models loaded between generations and speaks the protocol of
``engine.worker.protocol`` (newline-delimited JSON: requests on stdin, events on stdout).

Threads:
- the main thread reads stdin, answers ``ping``, ``cancel`` and ``shutdown`` at once and queues
  ``load``, ``generate`` and ``release``;
- one executor thread runs the queued requests in order, so a ``cancel`` is honoured between
  denoising steps of a running generation.

stdout belongs to the protocol alone: at start the real stdout file descriptor is duplicated for the
protocol and descriptor 1 is pointed at stderr, so stray prints of libraries (Python or C) cannot
corrupt the event stream. Logging goes to stderr and to a log file. torch and the models are imported
only when the first ``load`` or ``generate`` arrives, so ``hello`` comes within a second.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import logging.handlers
import os
import queue
import re
import secrets
import shutil
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import IO, NoReturn, Optional

from engine import __version__
from engine.pipeline.settings import (
    MAX_SEED,
    GenerationCancelled,
    GenerationSettings,
    ModelBundle,
    ModelBundleError,
    ModelLoadError,
    ModelNotFoundError,
    RuntimeOptions,
    SettingsError,
)
from engine.worker import protocol

logger = logging.getLogger("engine.worker")

HINTS = {
    "out_of_memory": "The device ran out of memory. Lower the resolution or the number of frames, enable "
    "cpu_offload and vae_tiling, use dtype bfloat16, or close other programs using the GPU; 'release' frees "
    "this worker's models.",
    "model_not_found": "A model file or folder is missing. Check the model path (a bundle folder with "
    "vist3a.json) and that every part it names has been downloaded completely.",
    "model_invalid": "The model files exist but cannot be loaded; they may be incomplete, of another "
    "version, or not match each other. Re-download the model.",
    "invalid_settings": "A setting is out of range; the message names it and the allowed values.",
    "output_exists": "Choose another output folder, or use output_root to get a new folder per run.",
    "bad_json": "Each request must be one JSON object on one line.",
    "bad_request": "See the protocol documentation in engine/worker/protocol.py for the fields of each request.",
    "unknown_command": "See the protocol documentation in engine/worker/protocol.py for the commands.",
}


def default_log_file() -> Path:
    """``$XDG_CACHE_HOME/vist3a/worker.log`` (``%LOCALAPPDATA%`` on Windows, ``~/.cache`` otherwise)."""
    base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "vist3a" / "worker.log"


def classify_error(exc: BaseException) -> str:
    """The protocol ``error_type`` of an exception (torch is not imported to decide)."""
    if isinstance(exc, protocol.ProtocolError):
        return exc.error_type
    if isinstance(exc, SettingsError):
        return "invalid_settings"
    if isinstance(exc, (ModelNotFoundError, FileNotFoundError)):
        return "model_not_found"
    if isinstance(exc, (ModelBundleError, ModelLoadError)):
        return "model_invalid"
    if isinstance(exc, FileExistsError):
        return "output_exists"
    # torch.cuda.OutOfMemoryError, or the RuntimeError older torch and other backends raise
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc):
        return "out_of_memory"
    return "internal"


class Worker:
    """The protocol server. ``serve(stdin)`` runs until ``shutdown`` or the end of stdin."""

    def __init__(self, events_out: IO[str], preview_root: Optional[Path] = None):
        self._out = events_out
        self._out_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._state_lock = threading.Lock()
        self._current: Optional[tuple[str, threading.Event]] = None
        self._cancelled_queued: set[str] = set()
        self._queued: list[str] = []
        self._shutting_down = threading.Event()
        self._pipeline = None
        self._pipeline_key: Optional[tuple] = None
        self._last_model: Optional[str] = None
        self._preview_root = preview_root or Path(tempfile.mkdtemp(prefix="vist3a-previews-"))
        self._executor = threading.Thread(target=self._run_jobs, name="worker-executor", daemon=True)

    # ------------------------------------------------------------------ events

    def send(self, kind: str, request_id: Optional[str] = None, **fields) -> None:
        line = protocol.encode_message(protocol.make_event(kind, request_id, **fields))
        with self._out_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError):
                # The client is gone; nothing can be told to anyone. Stop at the next opportunity.
                self._shutting_down.set()

    def _error_fields(self, request_id: Optional[str], exc: BaseException) -> dict:
        """The fields of the error event for ``exc`` (and a log line: full traceback for unexpected errors)."""
        error_type = classify_error(exc)
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if error_type == "internal":
            logger.error("request %s failed:\n%s", request_id, trace)
        else:
            logger.warning("request %s: %s: %s", request_id, error_type, exc)
        return {
            "error_type": error_type,
            "message": str(exc) or type(exc).__name__,
            "traceback": trace,
            "hint": self._hint(error_type),
        }

    def _hint(self, error_type: str) -> Optional[str]:
        """The hint for an error; out of memory names the option that would help with this model here."""
        if error_type == "out_of_memory" and self._pipeline is not None:
            from engine.pipeline.memory import out_of_memory_hint

            return out_of_memory_hint(self._pipeline.memory_policy)
        return HINTS.get(error_type)

    # ------------------------------------------------------------------ reading requests

    def serve(self, stdin: IO[bytes]) -> int:
        self._executor.start()
        self.send(protocol.HELLO, protocol=protocol.PROTOCOL_VERSION, engine_version=__version__, pid=os.getpid())
        shutdown_id = None
        for line in iter(stdin.readline, b""):
            if not line.strip():
                continue
            try:
                request = protocol.parse_request(line)
            except protocol.ProtocolError as exc:
                self.send(protocol.ERROR, exc.request_id, **self._error_fields(exc.request_id, exc))
                continue
            if request.type == protocol.PING:
                self.send(protocol.DONE, request.id, command=protocol.PING)
            elif request.type == protocol.CANCEL:
                self.send(protocol.DONE, request.id, command=protocol.CANCEL, cancelled=self._cancel(request))
            elif request.type == protocol.SHUTDOWN:
                shutdown_id = request.id
                break
            else:
                with self._state_lock:
                    self._queued.append(request.id)
                self._jobs.put(request)
            if self._shutting_down.is_set():
                break
        else:
            logger.info("stdin closed; shutting down")
        self._stop()
        if shutdown_id is not None:
            self.send(protocol.DONE, shutdown_id, command=protocol.SHUTDOWN)
        return 0

    def _cancel(self, request: protocol.Request) -> list[str]:
        target = request.get("target")
        with self._state_lock:
            if self._current is not None and target in (None, self._current[0]):
                self._current[1].set()
                return [self._current[0]]
            if target is not None and target in self._queued:
                self._cancelled_queued.add(target)
                return [target]
        return []

    def _stop(self) -> None:
        """Cancels the running request and everything queued, waits for the executor, frees the models."""
        self._shutting_down.set()
        with self._state_lock:
            if self._current is not None:
                self._current[1].set()
            self._cancelled_queued.update(self._queued)
        self._jobs.put(None)
        self._executor.join(timeout=60)
        if self._executor.is_alive():
            logger.error("the running request did not stop within 60 s; exiting anyway")
        self._release()
        shutil.rmtree(self._preview_root, ignore_errors=True)

    # ------------------------------------------------------------------ running requests

    def _run_jobs(self) -> None:
        while True:
            request = self._jobs.get()
            if request is None:
                return
            cancel = threading.Event()
            with self._state_lock:
                self._queued.remove(request.id)
                if request.id in self._cancelled_queued:
                    self._cancelled_queued.discard(request.id)
                    cancel.set()
                self._current = (request.id, cancel)
            try:
                if cancel.is_set():
                    raise GenerationCancelled("cancelled before it started")
                handler = {
                    protocol.LOAD: self._handle_load,
                    protocol.GENERATE: self._handle_generate,
                    protocol.RELEASE: self._handle_release,
                }[request.type]
                kind, fields = handler(request, cancel)
            except GenerationCancelled:
                logger.info("request %s cancelled", request.id)
                kind, fields = protocol.CANCELLED, {}
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an error event; the worker lives on
                kind, fields = protocol.ERROR, self._error_fields(request.id, exc)
            # Clean up before the terminal event, so that a client never sees a running request's leftovers.
            shutil.rmtree(self._preview_dir(request.id), ignore_errors=True)
            with self._state_lock:
                self._current = None
            self.send(kind, request.id, **fields)

    def _progress(self, request_id: str, preview_every: int = 0):
        def progress(stage: str, step: int, total: int, preview) -> None:
            path = None
            if preview is not None and preview_every:
                path = self._write_preview(request_id, stage, step, preview)
            self.send(protocol.PROGRESS, request_id, stage=stage, step=step, total=total, preview=path)

        return progress

    def _preview_dir(self, request_id: str) -> Path:
        return self._preview_root / re.sub(r"[^A-Za-z0-9_.-]", "_", request_id)

    def _write_preview(self, request_id: str, stage: str, step: int, image) -> str:
        import imageio.v3 as iio

        folder = self._preview_dir(request_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stage}-{step:04d}.png"
        iio.imwrite(path, image)
        return str(path)

    def _model(self, model: Optional[str]) -> str:
        """The request's model, else the one loaded last. Raises SettingsError when there is neither."""
        model = model or self._last_model
        if model is None:
            raise SettingsError("no model given and none loaded yet: pass 'model' (a bundle folder)")
        return model

    def _pipeline_for(self, model: Optional[str], runtime_fields: Optional[dict], request_id: str, cancel):
        """The loaded pipeline for (model, runtime), loading it (and dropping another) if needed."""
        runtime = RuntimeOptions.from_dict(runtime_fields or {})
        model = self._model(model)
        bundle = ModelBundle.load(model)
        key = (str(bundle.root), json.dumps(bundle.to_manifest(), sort_keys=True), runtime)
        if self._pipeline is not None and self._pipeline_key == key:
            return self._pipeline, True
        self._release()
        from engine.pipeline.vist3a import Vist3aPipeline

        logger.info("loading model %s (%s)", bundle.name, bundle.root)
        self._pipeline = Vist3aPipeline.from_pretrained(
            bundle, runtime=runtime, progress=self._progress(request_id), cancel=cancel
        )
        self._pipeline_key = key
        self._last_model = model
        logger.info("model %s loaded in %.1f s", bundle.name, self._pipeline.load_seconds)
        return self._pipeline, False

    def _handle_load(self, request: protocol.Request, cancel: threading.Event) -> tuple[str, dict]:
        pipeline, reused = self._pipeline_for(request.get("model"), request.get("runtime"), request.id, cancel)
        return protocol.DONE, {
            "command": protocol.LOAD,
            "model": pipeline.model_identity["name"],
            "reused": reused,
            "load_seconds": round(pipeline.load_seconds, 3),
        }

    def _handle_generate(self, request: protocol.Request, cancel: threading.Event) -> tuple[str, dict]:
        given = request.get("settings")
        GenerationSettings.from_dict(given)  # the values given are checked before any model is read
        if request.get("output_dir") is not None:
            out_dir = Path(request.get("output_dir")).expanduser()
            if out_dir.exists():
                raise FileExistsError(f"output folder {out_dir} already exists")
        model = self._model(request.get("model"))
        # Settings left out take the model's defaults (its manifest's "defaults"), then the engine's.
        settings = ModelBundle.load(model).generation_settings(given)
        if settings.seed is None:  # drawn here so that the run folder's name can carry it
            settings = settings.replace(seed=secrets.randbelow(MAX_SEED + 1))
        pipeline, _ = self._pipeline_for(model, request.get("runtime"), request.id, cancel)
        from engine.pipeline.run_folder import unique_run_dir, write_outputs

        if request.get("output_root") is not None:
            out_dir = unique_run_dir(Path(request.get("output_root")).expanduser(), settings)
        pipeline.check_settings(settings)
        progress = self._progress(request.id, request.get("preview_every", 0))
        result = pipeline.generate(
            settings, progress=progress, cancel=cancel, preview_every=request.get("preview_every", 0)
        )
        pipeline.free_gpu_memory()
        write_outputs(result, out_dir, progress=progress, cancel=cancel, flythrough=request.get("flythrough", True))
        logger.info("request %s: wrote %s", request.id, out_dir)
        answer = {"output_dir": str(out_dir), "seed": settings.seed, "timings": result.timings}
        if result.unknown_words:
            answer["unknown_words"] = list(result.unknown_words)
        return protocol.RESULT, answer

    def _handle_release(self, request: protocol.Request, cancel: threading.Event) -> tuple[str, dict]:
        released = self._pipeline is not None
        self._release()
        return protocol.DONE, {"command": protocol.RELEASE, "released": released}

    def _release(self) -> None:
        if self._pipeline is not None:
            logger.info("releasing the loaded model")
            self._pipeline.release()
        self._pipeline = None
        self._pipeline_key = None
        gc.collect()
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def claim_stdout() -> IO[str]:
    """Returns a text stream on the real stdout for the protocol and points fd 1 (and sys.stdout) at stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n", buffering=1)


def setup_logging(log_file: Path, level: int) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handlers.append(logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=2, encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s",
        handlers=handlers,
        force=True,
    )


def main(argv: Optional[list[str]] = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m engine.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-file", type=Path, default=default_log_file(), help="default: %(default)s")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    events_out = claim_stdout()
    setup_logging(args.log_file, logging.DEBUG if args.verbose else logging.INFO)
    logger.info("worker started (engine %s, protocol %d)", __version__, protocol.PROTOCOL_VERSION)
    code = Worker(events_out).serve(sys.stdin.buffer)
    # Everything is released and every output was written atomically; skip the interpreter's teardown
    # of torch and friends, which can take seconds, so a client waiting for the exit is not kept waiting.
    logging.shutdown()
    events_out.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
