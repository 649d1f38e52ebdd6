"""A fake engine worker: speaks the protocol just enough, then misbehaves as its mode says.

Run as ``python fake_worker.py MODE STARTED_JSON [worker arguments...]`` (by the wrapper scripts of
tests/test_addon_generate_faults.py and tests/test_addon_default_model.py, which stand in for an engine
Python). Modes: ``garbage-start`` (the first line is not protocol), ``garbage-mid`` (garbage during a run),
``hang`` (stops answering), ``record`` (appends each generate request to STARTED_JSON + ".requests", one JSON
line each, and answers with a result: the run folder ``$VIST3A_FAKE_RUN``, the unknown word "zebra").
Not run under Blender; it lives here with the scripts that drive it.
"""

import json
import os
import sys
import time


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


mode = sys.argv[1]
if mode == "garbage-start":
    sys.stdout.write("Traceback (most recent call last): not a protocol line\n")
    sys.stdout.flush()
    time.sleep(60)
    sys.exit(0)
with open(sys.argv[2], "w") as file:  # what the add-on started it with
    started = {
        "offline": os.environ.get("HF_HUB_OFFLINE"),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "cwd": os.getcwd(),
        "args": sys.argv[3:],
    }
    json.dump(started, file)
send({"type": "hello", "protocol": 1, "engine_version": "fake", "pid": 0})
for line in sys.stdin:
    request = json.loads(line)
    if request["type"] != "generate":
        if mode != "hang":
            send({"type": "done", "id": request["id"], "command": request["type"]})
        continue
    send({"type": "progress", "id": request["id"], "stage": "load", "step": 1, "total": 1})
    if mode == "record":
        with open(sys.argv[2] + ".requests", "a") as file:
            file.write(json.dumps(request) + "\n")
        run = os.environ["VIST3A_FAKE_RUN"]
        send({"type": "result", "id": request["id"], "output_dir": run, "seed": 5, "unknown_words": ["zebra"]})
        continue
    if mode == "garbage-mid":
        sys.stdout.write("\x00\x01 some library printed this\n")
        sys.stdout.flush()
    # "hang": answers nothing from now on, not even pings
