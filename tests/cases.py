"""Paths of the real-world input cases copied from shared/cases (see tests/data/cases/README.md)."""

from pathlib import Path

CASES = Path(__file__).resolve().parent / "data" / "cases"
