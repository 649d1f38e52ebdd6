"""File formats: 3DGS PLY, compressed PLY, .splat, .spz, point-cloud PLY, cameras JSON, atomic writes.

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
from .compressed_ply import is_compressed_ply, read_compressed_ply, write_compressed_ply
from .errors import CamerasFormatError, FormatError, InvalidValuesError, PlyFormatError
from .gaussian_arrays import (
    GaussianArrays,
    gaussian_property_names,
    num_f_rest,
    sh_degree_from_f_rest,
    validate_gaussians,
)
from .gaussian_ply import read_gaussian_ply, write_gaussian_ply
from .ply import PlyElementHeader, PlyHeader, PlyProperty, read_header, read_ply, write_ply
from .point_ply import PointArrays, read_point_ply, write_point_ply
from .splat_file import SplatFormatError, read_splat, write_splat
from .splats import (
    SPLAT_FORMATS,
    UnknownFormatError,
    detect_format,
    format_from_suffix,
    max_sh_degree,
    read_gaussians,
    read_scene_file,
    write_gaussians,
)
from .spz import SpzFormatError, read_spz, write_spz

__all__ = [
    "SPLAT_FORMATS",
    "SplatFormatError",
    "SpzFormatError",
    "UnknownFormatError",
    "detect_format",
    "format_from_suffix",
    "is_compressed_ply",
    "max_sh_degree",
    "read_compressed_ply",
    "read_gaussians",
    "read_scene_file",
    "read_splat",
    "read_spz",
    "write_compressed_ply",
    "write_gaussians",
    "write_splat",
    "write_spz",
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
