"""Cameras as JSON (no torch): the ``vist3a-cameras`` format, version 1.

Schema::

    {
      "format": "vist3a-cameras",          # required, exactly this string
      "version": 1,                        # required; readers reject versions they do not know
      "convention": "opencv",              # required; camera axes x right, y down, z forward
      "cameras": [                         # required, at least one camera
        {
          "c2w": [[r00, r01, r02, tx],     # 4x4 camera-to-world; rotation part orthonormal with
                  [r10, r11, r12, ty],     # determinant +1 (within 1e-4), last row 0 0 0 1;
                  [r20, r21, r22, tz],     # (tx, ty, tz) is the camera centre in world coordinates
                  [0, 0, 0, 1]],
          "fx": 500.0, "fy": 500.0,        # focal lengths in pixels, > 0
          "cx": 256.0, "cy": 256.0,        # principal point in pixels; pixel (u, v) covers
                                           # [u, u+1) x [v, v+1), so a centred camera has cx = w/2
          "w": 512, "h": 512               # image size in pixels, positive integers
        }
      ]
    }

Unknown keys (top level or per camera) are ignored so that later versions can add optional fields.
Numbers are written with Python's shortest round-trip repr, so float64 (and float32) values survive a
write/read cycle exactly. Every reader error names the file and, for a camera, its index and field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .atomic import atomic_write
from .errors import CamerasFormatError, PathLike

FORMAT_NAME = "vist3a-cameras"
FORMAT_VERSION = 1
CONVENTION = "opencv"
ROTATION_TOLERANCE = 1e-4
_CAMERA_FIELDS = ("c2w", "fx", "fy", "cx", "cy", "w", "h")


@dataclass
class CameraArrays:
    """V pinhole cameras as numpy arrays (float64 geometry, int64 sizes).

    Attributes:
        camera_to_world: (V, 4, 4) rigid transforms, OpenCV axes.
        fx, fy, cx, cy: (V,) intrinsics in pixels.
        width, height: (V,) image sizes in pixels (the file stores one per camera).
    """

    camera_to_world: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    width: np.ndarray
    height: np.ndarray

    def __post_init__(self):
        self.camera_to_world = np.array(self.camera_to_world, dtype=np.float64)
        if self.camera_to_world.ndim != 3 or self.camera_to_world.shape[1:] != (4, 4):
            raise ValueError(
                f"CameraArrays: camera_to_world must have shape (V, 4, 4), got {self.camera_to_world.shape}"
            )
        count = len(self.camera_to_world)
        for name in ("fx", "fy", "cx", "cy", "width", "height"):
            value = np.array(getattr(self, name), dtype=np.int64 if name in ("width", "height") else np.float64)
            if value.shape != (count,):
                raise ValueError(f"CameraArrays: {name} must have shape ({count},), got {value.shape}")
            setattr(self, name, value)

    def __len__(self) -> int:
        return len(self.camera_to_world)

    @property
    def intrinsics(self) -> np.ndarray:
        """(V, 3, 3) [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""
        k = np.zeros((len(self), 3, 3))
        k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = self.fx, self.fy, self.cx, self.cy, 1.0
        return k


def _fail(message: str, path: Optional[PathLike]):
    raise CamerasFormatError(message, path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_camera(index: int, camera: Any, path: Optional[PathLike]) -> tuple:
    """Validates one camera object; returns (c2w (4,4), fx, fy, cx, cy, w, h)."""
    where = f"camera {index}"
    if not isinstance(camera, dict):
        _fail(f"{where}: must be an object, got {type(camera).__name__}", path)
    missing = [name for name in _CAMERA_FIELDS if name not in camera]
    if missing:
        _fail(f"{where}: missing field(s) {', '.join(missing)}", path)

    rows = camera["c2w"]
    if not (isinstance(rows, list) and len(rows) == 4 and all(isinstance(r, list) and len(r) == 4 for r in rows)):
        _fail(f"{where}: field c2w must be a 4x4 nested list of numbers", path)
    if not all(_is_number(v) and math.isfinite(v) for row in rows for v in row):
        _fail(f"{where}: field c2w must hold only finite numbers", path)
    c2w = np.array(rows, dtype=np.float64)
    problem = rigid_transform_problem(c2w)
    if problem:
        _fail(f"{where}: field c2w {problem}", path)

    intrinsics = []
    for name in ("fx", "fy", "cx", "cy"):
        value = camera[name]
        if not (_is_number(value) and math.isfinite(value)):
            _fail(f"{where}: field {name} must be a finite number, got {value!r}", path)
        if name in ("fx", "fy") and value <= 0:
            _fail(f"{where}: field {name} must be positive, got {value!r}", path)
        intrinsics.append(float(value))
    sizes = []
    for name in ("w", "h"):
        value = camera[name]
        # 512.0 is accepted: some JSON writers do not distinguish integers from floats.
        if not (_is_number(value) and math.isfinite(value) and value == int(value) and value > 0):
            _fail(f"{where}: field {name} must be a positive integer, got {value!r}", path)
        sizes.append(int(value))
    return (c2w, *intrinsics, *sizes)


def rigid_transform_problem(c2w: np.ndarray) -> Optional[str]:
    """What keeps a (4, 4) matrix from being a rigid camera-to-world transform, or None if it is one."""
    if not np.array_equal(c2w[3], [0.0, 0.0, 0.0, 1.0]):
        return f"last row must be [0, 0, 0, 1], got {c2w[3].tolist()}"
    rotation = c2w[:3, :3]
    error = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if error > ROTATION_TOLERANCE:
        return f"rotation part is not orthonormal (max |R^T R - I| = {error:.3g}, tolerance {ROTATION_TOLERANCE})"
    if np.linalg.det(rotation) < 0:
        return "rotation part has determinant -1 (a reflection, not a rotation)"
    return None


def cameras_from_json_object(document: Any, path: Optional[PathLike] = None) -> CameraArrays:
    """Validates a parsed ``vist3a-cameras`` document and returns its cameras."""
    if not isinstance(document, dict):
        _fail(f"the top level must be a JSON object, got {type(document).__name__}", path)
    for key, expected in (("format", FORMAT_NAME), ("version", FORMAT_VERSION), ("convention", CONVENTION)):
        if key not in document:
            _fail(f"missing top-level field {key!r}", path)
        value = document[key]
        if key == "version":
            if not isinstance(value, int) or isinstance(value, bool):
                _fail(f"field 'version' must be an integer, got {value!r}", path)
            if value != FORMAT_VERSION:
                _fail(f"unsupported version {value} (this reader knows version {FORMAT_VERSION})", path)
        elif value != expected:
            _fail(f"field {key!r} must be {expected!r}, got {value!r}", path)
    cameras = document.get("cameras")
    if not isinstance(cameras, list) or not cameras:
        _fail(f"field 'cameras' must be a non-empty list, got {cameras!r:.80}", path)
    parsed = [_parse_camera(index, camera, path) for index, camera in enumerate(cameras)]
    columns = list(zip(*parsed))
    return CameraArrays(np.stack(columns[0]), *columns[1:])


def cameras_to_json_object(cameras: CameraArrays) -> dict:
    """The ``vist3a-cameras`` document for some cameras (validated as the reader would)."""
    entries = []
    for index in range(len(cameras)):
        entry = {
            "c2w": cameras.camera_to_world[index].tolist(),
            "fx": float(cameras.fx[index]),
            "fy": float(cameras.fy[index]),
            "cx": float(cameras.cx[index]),
            "cy": float(cameras.cy[index]),
            "w": int(cameras.width[index]),
            "h": int(cameras.height[index]),
        }
        # The same checks as reading, so that nothing is written that cannot be read back.
        try:
            _parse_camera(index, entry, None)
        except CamerasFormatError as error:
            raise ValueError(f"cameras_to_json_object: {error}") from None
        entries.append(entry)
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "convention": CONVENTION, "cameras": entries}


def write_cameras_json(path: PathLike, cameras: CameraArrays) -> None:
    """Writes cameras as ``vist3a-cameras`` JSON, atomically, one camera per line."""
    document = cameras_to_json_object(cameras)
    head = {key: value for key, value in document.items() if key != "cameras"}
    lines = [json.dumps(head)[:-1] + ', "cameras": [']
    lines += [
        "  " + json.dumps(entry) + ("," if i + 1 < len(document["cameras"]) else "")
        for i, entry in enumerate(document["cameras"])
    ]
    lines.append("]}")
    with atomic_write(path, "w") as file:
        file.write("\n".join(lines) + "\n")


def read_cameras_json(path: PathLike) -> CameraArrays:
    """Reads and validates a ``vist3a-cameras`` JSON file (see the module docstring for the schema)."""
    with open(path, "rb") as file:
        raw = file.read()
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise CamerasFormatError(f"not UTF-8 text (byte {error.start})", path) from None
    except json.JSONDecodeError as error:
        raise CamerasFormatError(
            f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}", path
        ) from None
    return cameras_from_json_object(document, path)
