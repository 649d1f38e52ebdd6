"""Where Blender keeps its user configuration in a test run. Used by tests/test_io_blender.py."""

import os

import bpy
from script_io import emit_result

emit_result({"env": os.environ["BLENDER_USER_RESOURCES"], "config": bpy.utils.user_resource("CONFIG")})
