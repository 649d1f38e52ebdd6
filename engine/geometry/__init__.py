"""Rotations and camera maths, one implementation each (torch; float64 where exactness matters).

- ``rotations``: quaternions (w, x, y, z) <-> rotation matrices, Hamilton product, slerp;
- ``cameras``: ``look_at`` (OpenCV camera-to-world), camera-path interpolation, re-orthonormalisation.

Variants that must match an upstream model bit for bit live beside that model with a note saying why:
``engine.models.pose_encoding.quat_to_mat`` / ``mat_to_quat`` (VGGT's scalar-last pose encoding) and
``engine.models.gaussian_adapter.quaternion_xyzw_to_matrix`` (AnySplat's, with its epsilon).
"""
