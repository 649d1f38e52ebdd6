"""Blender's own PLY importer on a Gaussian PLY: vertex count, positions and some 3DGS attributes.

Parameters: ``ply`` (the file). Used by tests/test_io_blender.py.
"""

import bpy
import numpy as np
from script_io import emit_result, params

bpy.ops.wm.ply_import(filepath=params()["ply"])
mesh = bpy.context.selected_objects[0].data
count = len(mesh.vertices)
positions = np.empty(count * 3, dtype=np.float32)
mesh.attributes["position"].data.foreach_get("vector", positions)
values = {}
for name in ("opacity", "f_dc_0", "f_dc_2", "f_rest_8", "scale_0", "rot_0", "rot_3"):
    column = np.empty(count, dtype=np.float32)
    mesh.attributes[name].data.foreach_get("value", column)
    values[name] = column.tolist()
emit_result(
    {
        "count": count,
        "positions": positions.reshape(-1, 3).tolist(),
        "attributes": sorted(a.name for a in mesh.attributes),
        "values": values,
    }
)
