"""Exceptions raised by the file-format readers and writers (no torch, no Blender)."""

from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class FormatError(ValueError):
    """A file cannot be read (or data cannot be written) because of its content.

    The message starts with the file path when one is known, so that a user who sees only the message
    still knows which file is broken. ``path`` holds that path (or None).
    """

    def __init__(self, message: str, path: Optional[PathLike] = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(message if self.path is None else f"{self.path}: {message}")


class PlyFormatError(FormatError):
    """A PLY file is malformed, truncated, lacks a required property, or holds non-finite values."""


class CamerasFormatError(FormatError):
    """A cameras JSON file does not follow the ``vist3a-cameras`` schema."""
