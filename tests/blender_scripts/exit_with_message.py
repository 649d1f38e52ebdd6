"""Exits with an error (parameter ``message``): the helper must fail the test with it. tests/test_io_blender.py."""

from script_io import params

raise SystemExit(params()["message"])
