"""The one strict dict -> dataclass parser of the engine (configs, settings, checkpoint descriptions).

Standard library only (the add-on imports ``engine.pipeline.settings``, which uses it).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def dataclass_from_dict(cls, data: Any, what: str | None = None):
    """Builds the dataclass ``cls`` from the JSON-like ``data``, strictly.

    Unknown keys are an error (a typo must not pass silently); missing keys take the field's default, and a
    missing field without one is an error. A field whose default is a dataclass is parsed from a nested
    dict the same way; lists become tuples (JSON has no tuples).

    Raises:
        ValueError: ``data`` is not a dict, or has unknown or missing fields; the message starts with
            ``what`` (default: the class name) and lists the known fields.
    """
    what = what or cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{what}: missing field(s) {', '.join(missing)}")
    kwargs = {}
    for name, value in data.items():
        field = fields[name]
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            value = dataclass_from_dict(type(default), value, f"{what}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def dataclass_from_json_file(cls, path):
    """:func:`dataclass_from_dict` of the JSON object in the file ``path`` (errors name the file).

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON, or a dict the dataclass refuses.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    return dataclass_from_dict(cls, data, str(path))
