"""Imports each file with the add-on's operator and reports the outcome, the message and the attributes.

Parameters: ``zip``, ``jobs`` ([label, path, operator options] triples). Used by
tests/test_addon_import_files.py.
"""

import contextlib
import io

import bpy
import numpy as np
from script_io import emit_result, install_extension, inventory, params

KINDS = ("objects", "collections", "pointclouds", "materials")


def run_import(path, **options):
    before = inventory(bpy, KINDS)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            outcome = sorted(bpy.ops.vist3a.import_result(filepath=path, **options))
        message = buffer.getvalue()
    except RuntimeError as error:  # an operator that reports an error raises in background mode
        outcome, message = ["CANCELLED"], str(error)
    record = {"outcome": outcome, "message": message, "unchanged": inventory(bpy, KINDS) == before}
    if outcome == ["FINISHED"]:
        obj = bpy.context.view_layer.objects.active.children[0]
        count = len(obj.data.points)
        arrays = {}
        for name, width, key in (
            ("position", 3, "vector"),
            ("base_color", 4, "color"),
            ("radius", 1, "value"),
            ("opacity", 1, "value"),
            ("scale", 3, "vector"),
        ):
            if name in obj.data.attributes:
                values = np.empty(count * width, dtype=np.float32)
                obj.data.attributes[name].data.foreach_get(key, values)
                arrays[name] = values.reshape(count, width).tolist()
        record.update(kind=obj["vist3a_kind"], count=count, arrays=arrays)
    return record


p = params()
install_extension(p["zip"])
out = {}
for label, path, options in p["jobs"]:
    out[label] = run_import(path, **options)
emit_result(out)
