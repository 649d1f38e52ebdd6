"""What a script in this folder gets when tests/blender_env.py runs it under Blender.

``params()`` are the test's parameters (a JSON file named by the script's first argument);
``emit_result(value)`` hands one JSON-serialisable value back to the test (printed on a line of its
own after ``RESULT_MARKER``; everything else Blender prints is ignored). Importing this module does not
import bpy, so the test side shares its constants.
"""

import json
import sys

RESULT_MARKER = "@@BLENDER_RESULT@@ "
EXTENSION_MODULE = "bl_ext.user_default.vist3a"  # the add-on's package once the extension is installed


def params() -> dict:
    """The parameters the test passed to ``run_in_blender``."""
    with open(sys.argv[1], encoding="utf-8") as file:
        return json.load(file)


def emit_result(value) -> None:
    sys.stdout.write("\n" + RESULT_MARKER + json.dumps(value) + "\n")
    sys.stdout.flush()


def install_extension(zip_path: str) -> None:
    """Installs and enables the built extension zip in the (throw-away) user profile."""
    import bpy

    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)


def only_installed_code(repository: str) -> None:
    """Takes the repository off ``sys.path``, so that only the installed extension's code can be imported."""
    sys.path[:] = [path for path in sys.path if path not in ("", repository)]


def inventory(bpy, names=("objects", "collections", "meshes", "pointclouds", "materials", "cameras", "node_groups")):
    """How many data-blocks of each kind the file has (to check that a failure left nothing behind)."""
    return {name: len(getattr(bpy.data, name)) for name in names}
