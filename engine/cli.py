"""Command-line front of the engine: ``python -m engine COMMAND ...``.

Each command lives with the code it drives, in a module that provides ``add_parser(subparsers)``; that
function creates its sub-parser and sets ``func`` to the callable that runs it (it returns an exit code).
Modules are imported only when their command is named, so ``--help`` stays fast and a broken optional
part cannot stop the others.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

# command name -> module that defines it
COMMANDS = {
    "demo": "engine.pipeline.demo",
    "reconstruct": "engine.models.cli",
    "stitch": "engine.stitching.cli",
    "generate": "engine.pipeline.cli",
    "align": "engine.alignment.cli",
    "convert": "engine.convert",
    "train": "engine.generator.cli",
    "teacher": "engine.teachers.cli",
}


def _available_commands() -> dict[str, str]:
    """The commands whose module exists in this installation."""
    return {name: mod for name, mod in COMMANDS.items() if importlib.util.find_spec(mod) is not None}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="VIST3A engine: text to 3D scenes.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands().items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(see python -m engine {name} --help)")
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the module of the command that was named (the first non-option argument).
    named = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=named if named in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)
