"""The worker through a real subprocess, driven by the stdlib client (engine.worker.client).

Two kinds of worker: the plain ``python -m engine.worker`` for protocol-level behaviour (it answers
without ever importing torch), and one started through a small launcher that wraps the stitched
decoder's loader in one that writes to stdout, for end-to-end generation on the tiny bundle.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from test_pipeline_tiny import build_tiny_bundle

from engine.io.run_format import read_run_metadata
from engine.pipeline.run_folder import OUTPUT_FILES
from engine.worker import protocol
from engine.worker.client import WorkerDied, WorkerProcess

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TINY = {"prompt": "a red house", "num_frames": 5, "height": 32, "width": 32, "num_steps": 2, "seed": 3}

# The launcher makes the stitched decoder's loader print to stdout both through Python and straight to
# file descriptor 1: the protocol stream must stay clean regardless.
LAUNCHER = """
import os, sys
from engine.pipeline import decoders
def noisy_loader(*args):
    print("stray print from a library")
    os.write(1, b"stray write to fd 1\\n")
    return decoders.load_stitched(*args)
decoders.register_decoder_loader(decoders.STITCHED_KIND, noisy_loader)
from engine.worker.server import main
main(sys.argv[1:])
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("PYTHONSTARTUP", None)
    return env


def start_worker(tmp_path: Path, tiny_decoder: bool) -> WorkerProcess:
    command = [sys.executable, "-c", LAUNCHER] if tiny_decoder else [sys.executable, "-m", "engine.worker"]
    worker = WorkerProcess(
        command=command,
        extra_args=["--log-file", str(tmp_path / "worker.log")],
        cwd=str(REPO),
        env=_env(),
        stderr=open(tmp_path / "stderr.txt", "wb"),  # noqa: SIM115 - closed with the process
    )
    worker.start(timeout=120)
    return worker


@pytest.fixture(scope="module")
def plain_worker(tmp_path_factory):
    worker = start_worker(tmp_path_factory.mktemp("plain"), tiny_decoder=False)
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.getbasetemp() / "tiny-bundle")


@pytest.fixture(scope="module")
def tiny_worker(tmp_path_factory):
    worker = start_worker(tmp_path_factory.mktemp("tiny"), tiny_decoder=True)
    yield worker
    worker.close()


def _collect(worker: WorkerProcess, request_id: str, timeout: float = 180) -> tuple[dict, list[dict]]:
    events: list[dict] = []
    final = worker.wait_for(request_id, timeout=timeout, on_event=events.append)
    return final, events


# ----------------------------------------------------------------------------- protocol level (no torch)


def test_hello_and_ping(plain_worker):
    assert plain_worker.hello["protocol"] == protocol.PROTOCOL_VERSION and plain_worker.hello["pid"] > 0
    assert plain_worker.ping(timeout=10)


def test_bad_json_unknown_command_and_bad_fields_keep_the_worker_serving(plain_worker):
    plain_worker.send_raw("{this is not json\n")
    event = plain_worker.next_event(timeout=10)
    assert event["type"] == "error" and event["error_type"] == "bad_json" and event["id"] is None
    assert event["hint"] and event["traceback"]

    plain_worker.send_raw('{"type": "fly", "id": "u1"}\n')
    event = plain_worker.next_event(timeout=10, request_id="u1")
    assert event["error_type"] == "unknown_command" and "fly" in event["message"]

    plain_worker.send_raw('{"type": "load", "id": "u2", "model": 5}\n')
    assert plain_worker.next_event(timeout=10, request_id="u2")["error_type"] == "bad_request"
    assert plain_worker.ping(timeout=10)


def test_invalid_settings_and_missing_model_are_error_events(plain_worker, tmp_path):
    final = plain_worker.request(
        "generate", timeout=30, settings={**TINY, "num_frames": 6}, output_dir=str(tmp_path / "run")
    )
    assert final["type"] == "error" and final["error_type"] == "invalid_settings" and "num_frames" in final["message"]

    final = plain_worker.request("load", timeout=30, model=str(tmp_path / "no-such-model"))
    assert final["error_type"] == "model_not_found" and "no-such-model" in final["message"] and final["hint"]

    final = plain_worker.request("generate", timeout=30, settings=TINY, output_dir=str(tmp_path / "run"))
    assert final["error_type"] == "invalid_settings" and "no model" in final["message"]

    (tmp_path / "taken").mkdir()
    final = plain_worker.request("generate", timeout=30, settings=TINY, output_dir=str(tmp_path / "taken"))
    assert final["error_type"] == "output_exists"
    assert plain_worker.ping(timeout=10)


def test_cancel_with_nothing_running(plain_worker):
    final = plain_worker.request("cancel", timeout=10)
    assert final["type"] == "done" and final["cancelled"] == []


def test_shutdown_exits_cleanly(tmp_path):
    worker = start_worker(tmp_path, tiny_decoder=False)
    final = worker.request("shutdown", timeout=30)
    assert final["type"] == "done" and final["command"] == "shutdown"
    assert worker.process.wait(timeout=30) == 0
    with pytest.raises(WorkerDied):
        worker.next_event(timeout=10)
    assert (tmp_path / "worker.log").read_text().count("worker started") == 1


def test_client_detects_a_hung_worker(tmp_path):
    # A fake worker: says hello, then never answers.
    fake = (
        "import json, os, sys, time; "
        f"sys.stdout.write(json.dumps({{'type': 'hello', 'protocol': {protocol.PROTOCOL_VERSION}, "
        "'engine_version': 'x', 'pid': os.getpid()}) + '\\n'); sys.stdout.flush(); time.sleep(60)"
    )
    worker = WorkerProcess(command=[sys.executable, "-c", fake])
    worker.start(timeout=30)
    try:
        assert not worker.ping(timeout=0.5) and worker.alive
    finally:
        worker.kill()
    assert not worker.alive


def _hello_then_sleep(extra: str = "pass") -> list[str]:
    """A fake worker: runs ``extra``, says hello (engine_version = the value of ``tag``), never answers."""
    code = (
        "import json, os, subprocess, sys, time; tag = 'x'; " + extra + "; "
        f"sys.stdout.write(json.dumps({{'type': 'hello', 'protocol': {protocol.PROTOCOL_VERSION}, "
        "'engine_version': tag, 'pid': os.getpid()}) + '\\n'); sys.stdout.flush(); time.sleep(60)"
    )
    return [sys.executable, "-c", code]


def test_close_waits_for_the_reader_before_the_next_worker_starts():
    # The reader thread must be done with the old stdout when close() returns: were the descriptor closed
    # under a pending read, the next pipe would reuse its number and the old thread would eat the next
    # worker's first bytes (seen as a hello that starts with '"type"' instead of '{').
    for _ in range(5):
        worker = WorkerProcess(command=_hello_then_sleep())
        worker.start(timeout=30)
        worker.close(timeout=0)
        assert not worker._reader.is_alive()
        assert worker.process.stdout.closed
        following = WorkerProcess(command=_hello_then_sleep())
        assert following.start(timeout=30)["type"] == "hello"
        following.close(timeout=0)


def test_close_leaves_stdout_to_the_reader_while_a_child_of_the_worker_holds_it(monkeypatch):
    monkeypatch.setattr("engine.worker.client.READER_JOIN_TIMEOUT", 0.5)
    spawn = "tag = str(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']).pid)"
    worker = WorkerProcess(command=_hello_then_sleep(spawn))
    child = int(worker.start(timeout=30)["engine_version"])
    try:
        worker.close(timeout=0)
        assert worker.returncode is not None  # the worker itself is gone ...
        assert worker._reader.is_alive() and not worker.process.stdout.closed  # ... its child keeps the pipe
    finally:
        os.kill(child, signal.SIGKILL)
    worker._reader.join(timeout=30)
    assert not worker._reader.is_alive() and worker.process.stdout.closed


# ----------------------------------------------------------------------------- end to end (tiny models)


@pytest.mark.slow
def test_generate_writes_every_output_and_reuses_the_loaded_model(tiny_worker, bundle, tmp_path):
    request_id = tiny_worker.send(
        "generate", settings=TINY, model=str(bundle), output_dir=str(tmp_path / "a"), preview_every=1
    )
    final, events = _collect(tiny_worker, request_id)
    assert final["type"] == "result", final
    out = Path(final["output_dir"])
    assert out == tmp_path / "a" and sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    stages = [e["stage"] for e in events]
    assert stages[0] == "load" and stages.index("encode_prompt") < stages.index("denoise") < stages.index(
        "write_outputs"
    )
    previews = [e["preview"] for e in events if "preview" in e]
    assert len(previews) == 2 and all(p.endswith(".png") for p in previews)
    assert not Path(previews[0]).exists()  # previews are cleaned up when the request ends
    stderr = Path(tiny_worker.stderr.name).read_text(errors="replace")
    assert "stray print from a library" in stderr and "stray write to fd 1" in stderr  # not on the protocol stream

    # same model again: no reload, and the same seed gives the same scene
    final, events = _collect(tiny_worker, tiny_worker.send("generate", settings=TINY, output_dir=str(tmp_path / "b")))
    assert final["type"] == "result" and "load" not in [e["stage"] for e in events]
    assert (tmp_path / "a" / "scene.ply").read_bytes() == (tmp_path / "b" / "scene.ply").read_bytes()
    final = tiny_worker.request("load", timeout=60, model=str(bundle))
    assert final["type"] == "done" and final["reused"] is True

    # output_root: a new uniquely named folder per run
    final = tiny_worker.request("generate", timeout=180, settings={**TINY, "seed": None}, output_root=str(tmp_path))
    assert final["type"] == "result" and Path(final["output_dir"]).parent == tmp_path
    assert str(final["seed"]) in Path(final["output_dir"]).name
    assert 0 <= final["seed"] <= 2**31 - 1  # a drawn seed fits Blender's Seed field


@pytest.mark.slow
def test_cancel_mid_run_leaves_no_folder_and_the_worker_usable(tiny_worker, bundle, tmp_path):
    settings = {**TINY, "num_steps": 400}
    request_id = tiny_worker.send("generate", settings=settings, model=str(bundle), output_dir=str(tmp_path / "c"))
    while True:
        event = tiny_worker.next_event(timeout=180, request_id=request_id)
        assert event["type"] == "progress", event
        if event["stage"] == "denoise":
            break
    queued = tiny_worker.send("generate", settings=TINY, output_dir=str(tmp_path / "d"))
    assert tiny_worker.request("cancel", timeout=10, target=queued)["cancelled"] == [queued]
    assert tiny_worker.request("cancel", timeout=10)["cancelled"] == [request_id]
    final, _ = _collect(tiny_worker, request_id)
    assert final["type"] == "cancelled"
    assert tiny_worker.wait_for(queued, timeout=60)["type"] == "cancelled"
    assert list(tmp_path.iterdir()) == []
    final = tiny_worker.request("generate", timeout=180, settings=TINY, output_dir=str(tmp_path / "e"))
    assert final["type"] == "result"


@pytest.mark.slow
def test_release_then_generate_reloads(tiny_worker, bundle, tmp_path):
    assert tiny_worker.request("load", timeout=180, model=str(bundle))["type"] == "done"
    final = tiny_worker.request("release", timeout=60)
    assert final["type"] == "done" and final["released"] is True
    final, events = _collect(tiny_worker, tiny_worker.send("generate", settings=TINY, output_dir=str(tmp_path / "f")))
    assert final["type"] == "result" and events[0]["stage"] == "load"


@pytest.mark.slow
def test_generate_takes_the_models_defaults_for_settings_left_out(tiny_worker, bundle, tmp_path):
    # The tiny bundle's parts under a manifest that carries defaults (small, and unlike TINY).
    manifest = json.loads((bundle / "vist3a.json").read_text())
    manifest["wan"], manifest["decoder"]["checkpoint"] = str(bundle / "wan"), str(bundle / "decoder")
    manifest["defaults"] = {"num_frames": 9, "height": 48, "width": 32, "num_steps": 1, "guidance_scale": 2.0}
    with_defaults = tmp_path / "with-defaults"
    with_defaults.mkdir()
    (with_defaults / "vist3a.json").write_text(json.dumps(manifest))
    settings = {"prompt": "a red house", "seed": 3, "width": 16}  # the width given wins
    final = tiny_worker.request(
        "generate", timeout=180, settings=settings, model=str(with_defaults), output_dir=str(tmp_path / "run")
    )
    assert final["type"] == "result", final
    used = read_run_metadata(tmp_path / "run")["settings"]
    assert (used["num_frames"], used["height"], used["width"], used["num_steps"]) == (9, 48, 16, 1)
    assert used["guidance_scale"] == 2.0 and used["flow_shift"] == 5.0  # no default for it: the engine's


@pytest.mark.slow
def test_generate_without_the_flythrough_leaves_only_that_video_out(tiny_worker, bundle, tmp_path):
    final, events = _collect(
        tiny_worker,
        tiny_worker.send(
            "generate", settings=TINY, model=str(bundle), output_dir=str(tmp_path / "h"), flythrough=False
        ),
    )
    assert final["type"] == "result", final
    out = Path(final["output_dir"])
    assert sorted(p.name for p in out.iterdir()) == sorted(set(OUTPUT_FILES) - {"flythrough.mp4"})
    assert read_run_metadata(out)["outputs"]["flythrough_frames"] == 0
    writing = [e for e in events if e["stage"] == "write_outputs"]
    assert writing[-1]["step"] == writing[-1]["total"] == len(OUTPUT_FILES) - 1


@pytest.mark.slow
def test_client_detects_a_worker_killed_mid_request(bundle, tmp_path):
    worker = start_worker(tmp_path, tiny_decoder=True)
    try:
        request_id = worker.send(
            "generate", settings={**TINY, "num_steps": 400}, model=str(bundle), output_dir=str(tmp_path / "g")
        )
        event = worker.next_event(timeout=180, request_id=request_id)
        assert event["type"] == "progress"
        os.kill(worker.process.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(WorkerDied) as info:
            worker.wait_for(request_id, timeout=60)
        assert time.monotonic() - started < 30
        assert info.value.returncode == -signal.SIGKILL and "signal" in str(info.value)
        assert not worker.alive and not worker.ping(timeout=1)
    finally:
        worker.close()
