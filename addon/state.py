"""The add-on's state for the whole Blender session (module level, never stored in a .blend).

* ``SESSION``: the one ``client.EngineSession`` (the engine worker and the running generation);
* ``STATUS``: what the Generate panel shows besides the running job (last outcome, history list);
* ``SETUP``: the running or last background job of the preferences and the last "Check engine" report;
* ``PREVIEWS``: the latest preview image of the running generation, as an icon.

Operators, the generation flow and the UI read and change these; this module imports nothing of the
add-on's Blender side, so every other module may depend on it.
"""

import os
import shutil
import tempfile
import time
from typing import Callable, Optional

import bpy.utils.previews

from . import client, setup_env

RECHECK_SECONDS = 1.0


class _Status:
    """What the panel shows besides the running job: the last outcome, and the history list."""

    def __init__(self):
        self.message = ""
        self.level = "INFO"  # or "ERROR"
        self.hint = ""
        self.runs = []
        self.history_problems = []
        self.history_root = None
        self.last_collection = ""
        self.still_true: Optional[Callable] = None
        self.checked_at = 0.0

    def report(self, level: str, message: str, hint: str = "", still_true: Optional[Callable] = None) -> None:
        """Shows a message; ``still_true(context)`` (optional, cheap) says whether its cause persists."""
        self.level, self.message, self.hint = level, message, hint
        self.still_true, self.checked_at = still_true, time.monotonic()

    def clear(self) -> None:
        self.report("INFO", "")

    def refresh(self, context, force: bool = False) -> None:
        """Clears the message once its cause is gone (checked at most once a second unless ``force``)."""
        if not self.message or self.still_true is None:
            return
        if not force and time.monotonic() - self.checked_at < RECHECK_SECONDS:
            return
        self.checked_at = time.monotonic()
        try:
            persists = self.still_true(context)
        except Exception:  # a check that fails says nothing about the cause: keep the message
            persists = True
        if not persists:
            self.clear()


class _SetupState:
    """The running or last background job of the preferences ("Set up engine" or "Download models")
    and the last "Check engine" report."""

    def __init__(self):
        self.job: Optional[setup_env.SetupJob] = None
        self.check_lines = []


class _Previews:
    """The latest preview image of the running generation, as an icon the panel can draw.

    The worker deletes its preview files when the request ends, so each one is copied first.
    """

    def __init__(self):
        self.collection = None
        self.folder = None
        self.source = ""
        self.icon_id = 0
        self.counter = 0

    def show(self, path: str) -> None:
        if path == self.source or not os.path.isfile(path):
            return
        if self.collection is None:
            self.collection = bpy.utils.previews.new()
            self.folder = tempfile.mkdtemp(prefix="vist3a-preview-")
        self.counter += 1
        copy = os.path.join(self.folder, f"preview-{self.counter}.png")
        try:
            shutil.copyfile(path, copy)
        except OSError:
            return  # the worker removed it in the meantime; the next preview will come
        self.collection.clear()
        self.icon_id = self.collection.load(f"preview-{self.counter}", copy, "IMAGE").icon_id
        self.source = path

    def clear(self) -> None:
        if self.collection is not None:
            bpy.utils.previews.remove(self.collection)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.__init__()


SESSION = client.EngineSession()
STATUS = _Status()
SETUP = _SetupState()
PREVIEWS = _Previews()
