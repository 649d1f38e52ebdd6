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
    """A PLY file is malformed, truncated or lacks a required property."""


class InvalidValuesError(FormatError):
    """Some splats or points of a file (any format) hold values that cannot be shown.

    NaN or infinite values, or log-scales so large that the linear scale overflows float32 (an
    infinite radius). Raised only when the reader was asked to refuse such files; asked to skip them,
    the reader leaves those rows out and reports how many.

    Attributes:
        count: how many rows are invalid.
        total: how many rows the file has.
        properties: the file's names of the properties that hold invalid values.
    """

    def __init__(self, message: str, path: Optional[PathLike] = None, *, count: int, total: int, properties):
        self.count = count
        self.total = total
        self.properties = list(properties)
        super().__init__(message, path)


class CamerasFormatError(FormatError):
    """A cameras JSON file does not follow the ``vist3a-cameras`` schema."""
