"""The worker protocol module: encoding, validation, and that it stays pure standard library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.worker import protocol
from engine.worker.protocol import ProtocolError, encode_message, make_event, make_request, parse_event, parse_request


def test_protocol_and_client_import_without_torch_or_numpy():
    code = (
        "import sys, engine.worker.protocol, engine.worker.client, engine.pipeline.settings; "
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_request_round_trip_is_one_line():
    message = make_request(
        "generate",
        "r1",
        settings={"prompt": "two\nlines, ünïcode"},
        output_root="/tmp/x",
        preview_every=2,
        flythrough=False,
    )
    line = encode_message(message)
    assert line.endswith("\n") and line.count("\n") == 1
    request = parse_request(line)
    assert request.type == "generate" and request.id == "r1"
    assert request.get("settings") == {"prompt": "two\nlines, ünïcode"} and request.to_message() == message
    assert parse_request(line.encode("utf-8")).id == "r1"


@pytest.mark.parametrize(
    "line, error_type, request_id",
    [
        ("{not json", "bad_json", None),
        ("[1, 2]", "bad_json", None),
        (b"\xff\xfe", "bad_json", None),
        ('{"id": "a"}', "bad_request", "a"),
        ('{"type": "ping"}', "bad_request", None),
        ('{"type": "ping", "id": ""}', "bad_request", None),
        ('{"type": "explode", "id": "b"}', "unknown_command", "b"),
        ('{"type": "load", "id": "c"}', "bad_request", "c"),
        ('{"type": "load", "id": "c", "model": 3}', "bad_request", "c"),
        ('{"type": "ping", "id": "d", "extra": 1}', "bad_request", "d"),
        ('{"type": "generate", "id": "e", "settings": {}}', "bad_request", "e"),
        ('{"type": "generate", "id": "e", "settings": {}, "output_dir": "a", "output_root": "b"}', "bad_request", "e"),
        (
            '{"type": "generate", "id": "f", "settings": {}, "output_dir": "a", "preview_every": true}',
            "bad_request",
            "f",
        ),
        ('{"type": "generate", "id": "f", "settings": {}, "output_dir": "a", "preview_every": -1}', "bad_request", "f"),
        ('{"type": "generate", "id": "g", "settings": {}, "output_dir": "a", "flythrough": 0}', "bad_request", "g"),
    ],
)
def test_bad_requests_are_classified(line, error_type, request_id):
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert info.value.error_type == error_type and info.value.request_id == request_id
    assert str(info.value)


def test_events_are_validated():
    event = make_event("progress", "r1", stage="denoise", step=3, total=50, preview=None)
    assert event == {"type": "progress", "id": "r1", "stage": "denoise", "step": 3, "total": 50}
    assert parse_event(encode_message(event)) == event
    assert "id" not in make_event("hello", protocol=1, engine_version="0", pid=5)
    assert make_event("error", None, error_type="bad_json", message="m")["id"] is None
    assert make_event("done", "r", command="load", reused=True, anything=[1])["reused"] is True
    with pytest.raises(ProtocolError, match="stage"):
        make_event("progress", "r1", stage="dreaming", step=1, total=1)
    with pytest.raises(ProtocolError, match="error_type"):
        make_event("error", "r1", error_type="oops", message="m")
    with pytest.raises(ProtocolError, match="output_dir"):
        make_event("result", "r1")
    with pytest.raises(ProtocolError, match="unknown event"):
        parse_event('{"type": "telemetry"}')


def test_non_json_values_are_refused():
    with pytest.raises(ProtocolError, match="cannot be encoded"):
        encode_message({"type": "progress", "value": float("nan")})
    with pytest.raises(ProtocolError, match="cannot be encoded"):
        encode_message({"type": "progress", "value": object()})


def test_vocabulary_is_consistent():
    assert set(protocol.TERMINAL_EVENT_TYPES) <= set(protocol.EVENT_TYPES)
    assert protocol.STAGES[0] == "load" and "denoise" in protocol.STAGES
    assert json.loads(encode_message(make_request("cancel", "x", target="y"))) == {
        "type": "cancel",
        "id": "x",
        "target": "y",
    }
