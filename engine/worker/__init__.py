"""The engine's worker process and its protocol.

- ``protocol``: the newline-delimited JSON messages (standard library only: the add-on imports it);
- ``client``: ``WorkerProcess``, the client side (starts the worker, reads its events on a thread);
- ``server``: the worker itself, ``python -m engine.worker``.

Nothing is imported here, so the add-on can import ``protocol`` and ``client`` inside Blender.
"""
