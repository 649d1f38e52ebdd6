"""File formats: standard 3DGS PLY, point-cloud PLY, cameras JSON, atomic writes.

Everything importable from here works on numpy arrays and does not import torch, so Blender's own
Python can use it (the modules import each other relatively: the folder can be vendored as is). The
torch-level helpers that save and load ``GaussianScene``/``PointScene``/``Cameras`` live in
:mod:`engine.io.scene_io`, which this package does not import.
"""

from .atomic import atomic_directory, atomic_write
from .cameras_json import (
    CameraArrays,
    cameras_from_json_object,
    cameras_to_json_object,
    read_cameras_json,
    write_cameras_json,
)
from .errors import CamerasFormatError, FormatError, InvalidValuesError, PlyFormatError
from .gaussian_ply import (
    GaussianArrays,
    gaussian_property_names,
    num_f_rest,
    read_gaussian_ply,
    sh_degree_from_f_rest,
    validate_gaussians,
    write_gaussian_ply,
)
from .ply import PlyElementHeader, PlyHeader, PlyProperty, read_header, read_ply, write_ply
from .point_ply import PointArrays, read_point_ply, write_point_ply

__all__ = [
    "CameraArrays",
    "CamerasFormatError",
    "FormatError",
    "GaussianArrays",
    "InvalidValuesError",
    "PlyElementHeader",
    "PlyFormatError",
    "PlyHeader",
    "PlyProperty",
    "PointArrays",
    "atomic_directory",
    "atomic_write",
    "cameras_from_json_object",
    "cameras_to_json_object",
    "gaussian_property_names",
    "num_f_rest",
    "read_cameras_json",
    "read_gaussian_ply",
    "read_header",
    "read_ply",
    "read_point_ply",
    "sh_degree_from_f_rest",
    "validate_gaussians",
    "write_cameras_json",
    "write_gaussian_ply",
    "write_ply",
    "write_point_ply",
]
