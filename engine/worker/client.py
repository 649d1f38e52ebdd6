"""A client for the worker process, in pure standard library (usable from Blender's Python).

``WorkerProcess`` starts ``python -m engine.worker`` (or any command speaking ``engine.worker.protocol``),
sends requests on its stdin and reads its events on a background thread into a queue, and tells a
worker that died (process exit, closed stdout) or hangs (no answer to ``ping``) from a slow one.

Example::

    worker = WorkerProcess(python="/path/to/engine-venv/bin/python", cwd="/path/to/project")
    worker.start()
    final = worker.request("generate", settings={"prompt": "a red barn"}, model="models/default",
                           output_root="runs", on_event=print, timeout=None)
    if final["type"] == "result":
        print(final["output_dir"])
    worker.close()
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Optional

from . import protocol


class WorkerError(RuntimeError):
    """Base class of the client's errors."""


class WorkerDied(WorkerError):
    """The worker process exited or closed its stdout. ``returncode`` is its exit status (None if unknown)."""

    def __init__(self, message: str, returncode: Optional[int] = None):
        super().__init__(message)
        self.returncode = returncode


class WorkerTimeout(WorkerError, TimeoutError):
    """No awaited event arrived in time."""


class WorkerProtocolMismatch(WorkerError):
    """The worker speaks another protocol version or sent something that is not the protocol."""


_EOF = object()  # queue marker: the worker's stdout was closed
# Seconds close() waits for the reader thread to see the end of a killed worker's stdout.
READER_JOIN_TIMEOUT = 5.0


class WorkerProcess:
    """One worker subprocess and its event stream.

    Args:
        python: interpreter that runs the engine (default: this one).
        command: full command line instead of ``[python, "-m", "engine.worker"]``.
        extra_args: appended to the command (e.g. ``["--log-file", path]``).
        cwd, env: passed to ``subprocess.Popen``.
        stderr: where the worker's stderr goes (a file object, ``subprocess.DEVNULL``, or None to inherit).
    """

    def __init__(
        self,
        python: Optional[str] = None,
        *,
        command: Optional[Sequence[str]] = None,
        extra_args: Sequence[str] = (),
        cwd: Optional[str] = None,
        env: Optional[dict] = None,
        stderr=None,
    ):
        base = list(command) if command is not None else [python or sys.executable, "-m", "engine.worker"]
        self.command = base + list(extra_args)
        self.cwd = cwd
        self.env = env
        self.stderr = stderr
        self.process: Optional[subprocess.Popen] = None
        self.hello: Optional[dict] = None
        self._events: queue.Queue = queue.Queue()
        self._held: collections.deque = collections.deque()  # events read while waiting for another id
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._reader: Optional[threading.Thread] = None
        self._eof = False

    # ---------------------------------------------------------------- process life

    def start(self, timeout: float = 60.0) -> dict:
        """Starts the process and waits for its ``hello``; returns it. Raises on a version mismatch."""
        if self.process is not None:
            raise WorkerError("worker already started")
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=self.cwd,
            env=self.env,
            bufsize=0,
        )
        self._reader = threading.Thread(target=self._read_events, name="worker-events", daemon=True)
        self._reader.start()
        hello = self._next(timeout=timeout, request_id=None, want_hello=True)
        if hello.get("protocol") != protocol.PROTOCOL_VERSION:
            self.kill()
            raise WorkerProtocolMismatch(
                f"worker speaks protocol {hello.get('protocol')!r}, this client {protocol.PROTOCOL_VERSION}"
            )
        self.hello = hello
        return hello

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and not self._eof

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """Ends the process at once (SIGKILL / TerminateProcess)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self, timeout: float = 10.0) -> Optional[int]:
        """Asks the worker to shut down, waits up to ``timeout`` s, kills it otherwise; returns its exit status."""
        if self.process is None:
            return None
        if self.alive:
            try:
                self.send(protocol.SHUTDOWN)
                self.process.wait(timeout=timeout)
            except (WorkerError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()
        # stdout belongs to the reader thread, which closes it at end of stream. Closing it here while the
        # thread still reads would free its descriptor number for the next pipe this process opens (the
        # next worker's stdout), and the thread's pending read would steal that worker's first bytes.
        # A killed worker's stdout ends at once, unless a child it started still holds it: then the
        # thread keeps it until that child exits.
        if self._reader is not None:
            self._reader.join(timeout=READER_JOIN_TIMEOUT)
        return self.process.returncode

    def __enter__(self) -> WorkerProcess:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- messages

    def new_id(self) -> str:
        return f"r{next(self._ids)}"

    def send(self, kind: str, request_id: Optional[str] = None, **fields) -> str:
        """Sends one request; returns its id. Raises WorkerDied if the worker is gone."""
        request_id = request_id or self.new_id()
        line = protocol.encode_message(protocol.make_request(kind, request_id, **fields))
        self.send_raw(line)
        return request_id

    def send_raw(self, line: str | bytes) -> None:
        """Writes a raw line (no validation; for tests and debugging)."""
        if self.process is None or self.process.stdin is None:
            raise WorkerError("worker not started")
        data = line.encode("utf-8") if isinstance(line, str) else line
        with self._write_lock:
            try:
                self.process.stdin.write(data)
                self.process.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise WorkerDied(f"cannot write to the worker: {exc}", self.returncode) from exc

    def next_event(self, timeout: Optional[float] = None, request_id: Optional[str] = None) -> dict:
        """The next event (for ``request_id`` only, if given; others are kept for later calls).

        Raises WorkerTimeout after ``timeout`` seconds (None: wait forever) and WorkerDied once the
        worker has exited and every event it sent has been consumed.
        """
        return self._next(timeout=timeout, request_id=request_id)

    def wait_for(
        self, request_id: str, timeout: Optional[float] = None, on_event: Optional[Callable[[dict], None]] = None
    ) -> dict:
        """Reads the events of ``request_id`` until its terminal event, which it returns.

        ``on_event`` is called with every non-terminal event (progress). ``timeout`` bounds the whole wait.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = self._next(timeout=remaining, request_id=request_id)
            if event["type"] in protocol.TERMINAL_EVENT_TYPES:
                return event
            if on_event is not None:
                on_event(event)

    def request(
        self,
        kind: str,
        timeout: Optional[float] = None,
        on_event: Optional[Callable[[dict], None]] = None,
        **fields,
    ) -> dict:
        """Sends a request and waits for its terminal event (see ``wait_for``)."""
        return self.wait_for(self.send(kind, **fields), timeout=timeout, on_event=on_event)

    def ping(self, timeout: float = 5.0) -> bool:
        """True if the worker answers a ping within ``timeout`` s (it does so even while generating).

        False means hung or dead; ``alive`` tells which.
        """
        try:
            return self.request(protocol.PING, timeout=timeout)["type"] == protocol.DONE
        except (WorkerTimeout, WorkerDied):
            return False

    # ---------------------------------------------------------------- internals

    def _read_events(self) -> None:
        """Reader thread: parses each stdout line into the queue; a bad line ends the stream with an error."""
        stream = self.process.stdout
        try:
            for line in iter(stream.readline, b""):
                try:
                    self._events.put(protocol.parse_event(line))
                except protocol.ProtocolError as exc:
                    self._events.put(WorkerProtocolMismatch(f"worker sent an invalid line {line[:200]!r}: {exc}"))
        except (OSError, ValueError):  # the stream failed under us: the worker is gone either way
            pass
        finally:
            stream.close()
            self._events.put(_EOF)

    def _take_held(self, request_id: Optional[str]) -> Optional[dict]:
        for index, event in enumerate(self._held):
            if request_id is None or event.get("id") == request_id:
                del self._held[index]
                return event
        return None

    def _next(self, timeout: Optional[float], request_id: Optional[str], want_hello: bool = False) -> dict:
        held = self._take_held(request_id)
        if held is not None:
            return held
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._eof:
                raise self._died()
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                # A spent (or zero) timeout still takes what is already queued.
                if remaining is not None and remaining <= 0:
                    item = self._events.get_nowait()
                else:
                    item = self._events.get(timeout=remaining)
            except queue.Empty:
                if remaining is not None and remaining <= 0:
                    what = "hello" if want_hello else f"an event for {request_id}" if request_id else "an event"
                    raise WorkerTimeout(f"no {what} from the worker within {timeout:.1f} s") from None
                continue
            if item is _EOF:
                self._eof = True
                continue
            if isinstance(item, Exception):
                raise item
            if want_hello:
                if item["type"] != protocol.HELLO:
                    raise WorkerProtocolMismatch(f"worker's first message is {item['type']!r}, not hello")
                return item
            if request_id is None or item.get("id") == request_id:
                return item
            self._held.append(item)

    def _died(self) -> WorkerDied:
        code = None
        if self.process is not None:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        how = f"exited with status {code}" if code is not None else "closed its output"
        if code is not None and code < 0 and os.name == "posix":
            how = f"was killed by signal {-code}"
        return WorkerDied(f"the worker process {how}", code)
