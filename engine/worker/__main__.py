"""``python -m engine.worker``: runs the worker (see ``engine.worker.server``)."""

from engine.worker.server import main

main()
