"""The README's Layout section matches the tree: every module and package it names exists, and every
module of addon/ and every top-level module or package of engine/ is named there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1].strip("\n").splitlines()


def _entries() -> dict[str, set[str]]:
    """Top-level folder -> the names listed at the first level under it (files and folders, as written)."""
    entries: dict[str, set[str]] = {}
    current = None
    for line in _layout():
        indent = len(line) - len(line.lstrip(" "))
        column = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]  # the name column: "a.py" or "a.py, b.py"
        names = [name for name in column.split(", ") if name]
        if indent == 0 and names:
            current = names[0].split("/")[0] + "/" if "/" in names[0] else None
            if current:
                entries.setdefault(current, set())
        elif indent == 2 and current and names:
            entries[current].update(names)
    return entries


def test_every_listed_entry_exists():
    entries = _entries()
    assert {"addon/", "engine/", "tests/", "benchmarks/"} <= set(entries)
    for folder, names in entries.items():
        for name in names:
            assert (ROOT / folder / name).exists(), f"the README lists {folder}{name}, which does not exist"


def test_every_module_is_listed():
    entries = _entries()
    for path in sorted((ROOT / "addon").glob("*.py")):
        assert path.name in entries["addon/"], f"addon/{path.name} is missing from the README's layout"
    for path in sorted((ROOT / "engine").iterdir()):
        if path.name.startswith(("_", ".")) and path.name != "__main__.py":
            continue
        name = path.name + "/" if path.is_dir() else path.name
        if path.is_dir() and not (path / "__init__.py").is_file():
            continue
        assert name in entries["engine/"], f"engine/{name} is missing from the README's layout"
