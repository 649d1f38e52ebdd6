"""The worker protocol: newline-delimited JSON between a client (the Blender add-on) and ``engine.worker``.

Pure standard library (no torch, no numpy), so Blender's own Python and any other client can import it.

Transport
---------
The client starts ``python -m engine.worker`` and talks to it over its stdin (requests) and stdout
(events). Every message is one JSON object on one line, UTF-8, terminated by ``\\n``. Nothing else is
ever written to the worker's stdout (its logging goes to stderr and a log file).

Every message has a ``"type"``. Every request has an ``"id"``: a client-chosen non-empty string (at
most 200 characters); every event that answers a request carries the same ``"id"``.

Session
-------
1. On start the worker sends ``hello`` (no id) with ``protocol`` (= PROTOCOL_VERSION). A client must
   check that the version is the one it speaks and stop the worker otherwise.
2. The client sends requests; each request ends with exactly one *terminal* event for its id:
   ``result`` (a finished ``generate``), ``done`` (any other request), ``cancelled`` (a ``generate``
   or ``load`` stopped by ``cancel``) or ``error``. ``progress`` events may come before it.
3. ``load``, ``generate`` and ``release`` run one at a time, in the order they were sent.
   ``ping``, ``cancel`` and ``shutdown`` are answered at once, even while a generation runs, so that
   ``ping`` doubles as a heartbeat: a worker that does not answer a ping within seconds is hung.
4. A message that cannot be parsed is answered with an ``error`` whose ``id`` is the request's id if
   it could be read, else null. The worker keeps serving after every error.

Requests (client -> worker)
---------------------------
``ping``       {}                                       -> ``done``
``load``       {model, runtime?}                        -> ``progress``* then ``done`` {model, reused}
``generate``   {settings, model?, runtime?, output_dir | output_root, preview_every?, flythrough?}
                                                        -> ``progress``* then ``result``
``cancel``     {target?}                                -> ``done`` {cancelled: [ids]}; the cancelled
               request then ends with ``cancelled``. Without ``target`` it cancels the request running
               now; with it, that request (running or still queued).
``release``    {}                                       -> ``done``: models dropped, GPU memory freed
``shutdown``   {}                                       -> ``done``, then the worker exits (status 0)

Fields:
- ``model``: path of a model bundle folder (or its ``vist3a.json`` manifest). ``generate`` without
  ``model`` uses the model loaded last.
- ``runtime``: {device: "auto"|"cpu"|"cuda"|"cuda:N", dtype: "auto"|"float32"|"bfloat16"|"float16",
  cpu_offload: bool|null, vae_tiling: bool|null}; missing keys take their defaults; null (the default)
  lets the engine's memory policy decide from the free GPU memory (recorded in metadata.json).
- ``settings``: the generation settings (``engine.pipeline.settings.GenerationSettings`` field names): prompt,
  negative_prompt, orbit_template, num_frames, height, width, num_steps, guidance_scale, flow_shift,
  seed, output_kind ("gaussians" | "points"), reuse_text_embeddings. Only ``prompt`` is required; a field
  left out takes the model's default (the bundle manifest's ``defaults``), else the engine's.
- ``output_dir``: the run folder to create (must not exist); or ``output_root``: a folder in which
  the worker creates a new, uniquely named run folder.
- ``preview_every``: send a low-resolution preview image every N denoising steps (0 or absent: none).
- ``flythrough``: false leaves ``flythrough.mp4`` out of the run folder (true or absent: written).
  Rendering it is most of the writing time on a CPU; the Blender add-on renders the scene itself and
  sends false.

Events (worker -> client)
-------------------------
``hello``      {protocol, engine_version, pid}
``progress``   {id, stage, step, total, preview?, message?}: ``stage`` is one of STAGES; ``step`` counts
               from 1 to ``total`` within the stage; ``preview`` is the path of a PNG file (the current
               estimate of the first frame, at low resolution), valid until the request ends.
``result``     {id, output_dir, seed, timings}: the run folder, complete (written atomically).
``done``       {id, command, ...}: the request succeeded; extra fields depend on the command.
``cancelled``  {id}: the request was cancelled; for ``generate`` no output folder was left behind.
``error``      {id, error_type, message, traceback?, hint?}: ``error_type`` is one of ERROR_TYPES;
               ``hint`` says what to do for known causes (out of memory, missing model file, bad setting).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

PROTOCOL_VERSION = 1

# Request types.
PING = "ping"
LOAD = "load"
GENERATE = "generate"
CANCEL = "cancel"
RELEASE = "release"
SHUTDOWN = "shutdown"
REQUEST_TYPES = (PING, LOAD, GENERATE, CANCEL, RELEASE, SHUTDOWN)

# Event types.
HELLO = "hello"
PROGRESS = "progress"
RESULT = "result"
DONE = "done"
CANCELLED = "cancelled"
ERROR = "error"
EVENT_TYPES = (HELLO, PROGRESS, RESULT, DONE, CANCELLED, ERROR)
TERMINAL_EVENT_TYPES = (RESULT, DONE, CANCELLED, ERROR)

# Stages named in progress events, in the order a generation passes through them.
STAGES = ("load", "encode_prompt", "denoise", "decode_video", "decode_scene", "write_outputs")

# error_type values of error events.
ERROR_TYPES = (
    "bad_json",  # the line is not a JSON object
    "bad_request",  # a field is missing, unexpected or of the wrong type
    "unknown_command",  # "type" names no request
    "invalid_settings",  # a generation setting or runtime option is out of range
    "model_not_found",  # a model folder or file does not exist
    "model_invalid",  # a model folder exists but cannot be loaded
    "output_exists",  # output_dir already exists
    "out_of_memory",  # the device ran out of memory
    "internal",  # anything else (a bug): see traceback
)

MAX_ID_LENGTH = 200


class ProtocolError(ValueError):
    """A message does not follow the protocol.

    Attributes:
        error_type: the ``error_type`` to report ("bad_json", "bad_request" or "unknown_command").
        request_id: the message's id when it could be read, else None.
    """

    def __init__(self, message: str, error_type: str = "bad_request", request_id: Optional[str] = None):
        super().__init__(message)
        self.error_type = error_type
        self.request_id = request_id


# Field schemas: message type -> (required fields, optional fields), each a {name: allowed types} dict.
# "id" is checked separately (required on requests and on every event but hello, where it is absent;
# error events may carry id null when the request's id could not be read).
_STR, _INT, _BOOL, _DICT = (str,), (int,), (bool,), (dict,)
_NUM = (int, float)

_REQUEST_FIELDS: dict[str, tuple[dict, dict]] = {
    PING: ({}, {}),
    LOAD: ({"model": _STR}, {"runtime": _DICT}),
    GENERATE: (
        {"settings": _DICT},
        {
            "model": _STR,
            "runtime": _DICT,
            "output_dir": _STR,
            "output_root": _STR,
            "preview_every": _INT,
            "flythrough": _BOOL,
        },
    ),
    CANCEL: ({}, {"target": _STR}),
    RELEASE: ({}, {}),
    SHUTDOWN: ({}, {}),
}

_EVENT_FIELDS: dict[str, tuple[dict, dict]] = {
    HELLO: ({"protocol": _INT, "engine_version": _STR, "pid": _INT}, {}),
    PROGRESS: ({"stage": _STR, "step": _INT, "total": _INT}, {"preview": _STR, "message": _STR}),
    RESULT: ({"output_dir": _STR}, {"seed": _INT, "timings": _DICT, "unknown_words": (list,)}),
    DONE: ({"command": _STR}, None),  # None: any further fields are allowed (command specific)
    CANCELLED: ({}, {}),
    ERROR: ({"error_type": _STR, "message": _STR}, {"traceback": _STR, "hint": _STR}),
}


@dataclass(frozen=True)
class Request:
    """One parsed request: its type, id and the remaining fields."""

    type: str
    id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def to_message(self) -> dict:
        return {"type": self.type, "id": self.id, **self.fields}


def encode_message(message: dict) -> str:
    """One message -> one JSON line (ending in ``\\n``). Raises ProtocolError for non-JSON content.

    NaN and infinity are refused (they are not JSON); newlines inside strings are escaped by JSON, so
    the result is always exactly one line.
    """
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a message must be a dict with a string 'type'")
    try:
        text = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"message of type {message['type']!r} cannot be encoded as JSON: {exc}") from exc
    return text + "\n"


def decode_message(line: str | bytes) -> dict:
    """One JSON line -> a dict with a string ``type``. Raises ProtocolError ("bad_json" / "bad_request")."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"message is not valid UTF-8: {exc}", "bad_json") from exc
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"message is not valid JSON: {exc.msg} at column {exc.colno}", "bad_json") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a JSON object, got {type(message).__name__}", "bad_json")
    raw_id = message.get("id")
    request_id = raw_id if isinstance(raw_id, str) else None
    if not isinstance(message.get("type"), str):
        raise ProtocolError("message has no string field 'type'", "bad_request", request_id)
    return message


def _check_fields(kind: str, message: dict, schema: tuple[dict, Optional[dict]], request_id) -> None:
    required, optional = schema
    name = message["type"]
    for key in required:
        if key not in message:
            raise ProtocolError(f"{kind} {name!r} lacks the required field {key!r}", "bad_request", request_id)
    known = {"type", "id", *required, *(optional or {})}
    if optional is not None:
        unexpected = sorted(set(message) - known)
        if unexpected:
            raise ProtocolError(
                f"{kind} {name!r} has unexpected field(s) {', '.join(unexpected)}; "
                f"allowed: {', '.join(sorted(known - {'type', 'id'})) or 'none'}",
                "bad_request",
                request_id,
            )
    for key, types in {**required, **(optional or {})}.items():
        if key not in message:
            continue
        value = message[key]
        # bool is an int in Python; a JSON true must not pass for a number.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(t.__name__ for t in types)
            raise ProtocolError(
                f"{kind} {name!r}: field {key!r} must be {expected}, got {type(value).__name__}",
                "bad_request",
                request_id,
            )


def _check_id(message: dict, required: bool) -> Optional[str]:
    value = message.get("id")
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ProtocolError(
            f"field 'id' must be a non-empty string of at most {MAX_ID_LENGTH} characters, got {value!r}",
            "bad_request",
            None,
        )
    return value


def parse_request(line: str | bytes | dict) -> Request:
    """A line (or an already decoded dict) -> Request, validated. Raises ProtocolError."""
    message = decode_message(line) if not isinstance(line, dict) else line
    request_id = _check_id(message, required=True)
    kind = message["type"]
    if kind not in _REQUEST_FIELDS:
        raise ProtocolError(
            f"unknown command {kind!r}; known commands: {', '.join(REQUEST_TYPES)}", "unknown_command", request_id
        )
    _check_fields("request", message, _REQUEST_FIELDS[kind], request_id)
    if kind == GENERATE and ("output_dir" in message) == ("output_root" in message):
        raise ProtocolError(
            "request 'generate' needs exactly one of 'output_dir' (the run folder) or 'output_root' "
            "(a folder to create the run folder in)",
            "bad_request",
            request_id,
        )
    if kind == GENERATE and message.get("preview_every", 0) < 0:
        raise ProtocolError("request 'generate': preview_every must be >= 0", "bad_request", request_id)
    fields_ = {k: v for k, v in message.items() if k not in ("type", "id")}
    return Request(type=kind, id=request_id, fields=fields_)


def make_request(kind: str, request_id: str, **fields_) -> dict:
    """A validated request message (a dict ready for ``encode_message``)."""
    message = {"type": kind, "id": request_id, **fields_}
    parse_request(message)
    return message


def validate_event(message: dict) -> dict:
    """Checks an event dict against its schema; returns it. Raises ProtocolError."""
    kind = message.get("type")
    if kind not in _EVENT_FIELDS:
        raise ProtocolError(f"unknown event type {kind!r}; known events: {', '.join(EVENT_TYPES)}")
    if kind != HELLO:
        # error events answer unparsable requests with id null
        _check_id(message, required=kind != ERROR)
    _check_fields("event", message, _EVENT_FIELDS[kind], message.get("id"))
    if kind == ERROR and message["error_type"] not in ERROR_TYPES:
        raise ProtocolError(f"error event: unknown error_type {message['error_type']!r}")
    if kind == PROGRESS and message["stage"] not in STAGES:
        raise ProtocolError(f"progress event: unknown stage {message['stage']!r}; stages: {', '.join(STAGES)}")
    return message


def parse_event(line: str | bytes) -> dict:
    """A line from the worker -> a validated event dict. Raises ProtocolError."""
    return validate_event(decode_message(line))


def make_event(kind: str, request_id: Optional[str] = None, **fields_) -> dict:
    """A validated event message; fields whose value is None are left out."""
    message = {"type": kind}
    if kind != HELLO:
        message["id"] = request_id
    message.update({k: v for k, v in fields_.items() if v is not None})
    return validate_event(message)
