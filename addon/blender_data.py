"""VIST3A results -> Blender data: collections, splats, coloured points, cameras and render settings.

The Blender-data layer: it creates objects, point clouds, cameras and (through ``materials``) their
materials from a ``reading.LoadedResult`` that has been read and checked completely before, so a bad
file leaves the scene untouched. Everything per point is done with NumPy and ``foreach_set``; there are
no per-point Python loops.

Placement: every import gets its own collection and one parent empty at the 3D cursor. The children
keep the engine's coordinates as their local transforms, so the result can be moved, rotated or scaled
as a whole through that empty, and cameras stay registered to the splats. With ``z_up`` (the default)
the empty also turns the engine's OpenCV world (y down, z forward) upright (Blender's Z up).

Splat display modes (``SplatMode``):
* ``POINTS`` - a point cloud rendered by Cycles as spheres of radius K * sigma with a soft Gaussian
  footprint in the material (isotropic approximation; fast, little memory).
* ``ELLIPSOIDS`` - the same point cloud, plus a Geometry Nodes modifier that instances a unit
  ico-sphere per point, rotated and scaled by the splat's rotation and K * scale; the material
  evaluates the footprint in each instance's own space, so anisotropic splats keep their shape
  (about 10x slower to render and 4x the memory).
* ``NATIVE`` - Blender's own Gaussian-splat point cloud, where Blender has one (feature-detected).
``AUTO`` picks ``NATIVE`` when available, else ``POINTS``.
"""

import enum
import math
import os
from dataclasses import dataclass
from typing import Optional

import bpy
import numpy as np
from mathutils import Matrix

from . import conversions, materials, reading
from .engine.io import CameraArrays
from .materials import AXIS_ATTRIBUTES, COLOR_ATTRIBUTE, OPACITY_ATTRIBUTE

SOURCE_PROPERTY = "vist3a_source"  # the folder or file an object was imported from
KIND_PROPERTY = "vist3a_kind"  # "result", "splats", "points" or "camera"
RESOLUTION_PROPERTY = "vist3a_resolution"  # on cameras: (width, height) in pixels
PIXEL_ASPECT_PROPERTY = "vist3a_pixel_aspect"  # on cameras: Blender's (pixel_aspect_x, pixel_aspect_y)
LAYERS_PROPERTY = "vist3a_layers"  # on splats: how many splat surfaces one ray may cross at most


# Cycles stops a ray after this many transparent hits; a splat scene stacks dozens along one ray.
TRANSPARENT_BOUNCES = 64
# Russian roulette on transparent hits (after ``min_transparent_bounces`` of them) ends paths at random
# and boosts the survivors: unbiased, but in splat scenes it is the main error of a render (on
# benchmarks/blender_fidelity.py's seed-0 scene at 16 samples: 30.4 dB against the reference with
# roulette after 8 hits, 35.0 dB after 32, 36.1 dB after 64 and with none, for 14 % more render time),
# and a deep stack of faint splats comes out visibly wrong at a few samples. The import turns it off for
# as many hits as the splats need (at least this many).
ROULETTE_FREE_BOUNCES = 64
# Headroom above the deepest splat stack the import found, for what else the scene has that is transparent.
LAYER_HEADROOM = 8


class SplatMode(enum.Enum):
    AUTO = "AUTO"
    POINTS = "POINTS"
    ELLIPSOIDS = "ELLIPSOIDS"
    NATIVE = "NATIVE"


def absolute_path(path: str) -> str:
    """``path`` made absolute, with Blender's ``//`` (relative to the .blend file) resolved: what the
    reading layer (``reading``) takes."""
    return os.path.abspath(bpy.path.abspath(path))


@dataclass
class ImportedResult:
    """What one import created."""

    collection: bpy.types.Collection
    root: bpy.types.Object
    geometry: Optional[bpy.types.Object]
    cameras: list
    warning: Optional[str] = None  # something the user should know (shown as a warning)


def build_result(
    context,
    loaded: reading.LoadedResult,
    *,
    splat_mode: SplatMode = SplatMode.AUTO,
    z_up: bool = True,
    set_scene_camera: bool = True,
    point_radius: float = 0.0,
) -> ImportedResult:
    """Creates the collection, parent empty, geometry object and cameras for a loaded result.

    If anything fails half-way, whatever was created is removed again before the error propagates.
    """
    created = _CreatedData()
    try:
        return _build_result(context, loaded, created, splat_mode, z_up, set_scene_camera, point_radius)
    except BaseException:
        created.remove_all()
        raise


def import_result(context, path: str, **options) -> ImportedResult:
    """``reading.load_result`` then ``build_result``: the whole import of one folder or file (``//`` paths
    are resolved against the .blend file)."""
    return build_result(context, reading.load_result(absolute_path(path)), **options)


class _CreatedData:
    """Data-blocks made by one import, so that a failed import can take them all back."""

    def __init__(self):
        self.blocks = []  # (collection of bpy.data, data-block)

    def add(self, data_collection, block):
        self.blocks.append((data_collection, block))
        return block

    def remove_all(self):
        for data_collection, block in reversed(self.blocks):
            try:
                data_collection.remove(block)
            except ReferenceError:  # already gone with its owner
                pass
        self.blocks.clear()


def _build_result(context, loaded, created, splat_mode, z_up, set_scene_camera, point_radius):
    scene = context.scene
    title = f"VIST3A {loaded.name}"
    collection = created.add(bpy.data.collections, bpy.data.collections.new(title))
    scene.collection.children.link(collection)

    root = created.add(bpy.data.objects, bpy.data.objects.new(title, None))
    root.empty_display_type = "PLAIN_AXES"
    root.location = scene.cursor.location
    if z_up:
        root.rotation_euler = (-math.pi / 2, 0.0, 0.0)
    collection.objects.link(root)
    _tag(root, loaded.source, "result")

    geometry = None
    warning = None
    if loaded.gaussians is not None:
        geometry = _build_splats(context, loaded, collection, created, splat_mode)
    elif loaded.points is not None:
        geometry = _build_points(context, loaded, collection, created, point_radius)
    if geometry is not None:
        geometry.parent = root
        _tag(geometry, loaded.source, "splats" if loaded.gaussians is not None else "points")

    cameras = []
    if loaded.cameras is not None:
        cameras = [_build_camera(loaded, index, collection, root, created) for index in range(len(loaded.cameras))]
    if geometry is not None:
        warning = configure_render_settings(scene)
    if cameras and set_scene_camera:
        use_camera(scene, cameras[0])

    for obj in context.view_layer.objects:
        obj.select_set(False)
    for obj in collection.objects:
        obj.select_set(True)
    context.view_layer.objects.active = root
    context.view_layer.update()  # so that matrix_world of the new objects is valid for scripts
    return ImportedResult(collection=collection, root=root, geometry=geometry, cameras=cameras, warning=warning)


def _tag(obj, source, kind):
    obj[SOURCE_PROPERTY] = source
    obj[KIND_PROPERTY] = kind


# --- point clouds


def native_splat_type():
    """(property name, enum item) of Blender's Gaussian-splat point-cloud type, or None.

    Blender 5.3 adds a point-cloud type for 3D Gaussian splats. It is found by looking for an enum
    property of PointCloud offering a GAUSSIAN_SPLAT item, never by comparing version numbers.
    """
    for prop in bpy.types.PointCloud.bl_rna.properties:
        if prop.type == "ENUM" and "GAUSSIAN_SPLAT" in prop.enum_items.keys():
            return prop.identifier, "GAUSSIAN_SPLAT"
    return None


def new_point_cloud(context, name: str, positions: np.ndarray, collection, created) -> bpy.types.Object:
    """A point-cloud object with the given (N, 3) positions, linked into ``collection``.

    Uses ``PointCloud.resize`` where Blender has it. Elsewhere (4.2 - 5.2 as checked; 4.2 / 4.3 also
    lack ``object.convert(target="POINTCLOUD")``) the points go into a temporary mesh, and a temporary
    Geometry Nodes modifier (Object Info -> Mesh to Points) on the new, empty point cloud is applied,
    which fills the point cloud itself. The temporary mesh, object and node group are removed again,
    whatever happens. Raises RuntimeError when Blender does not produce the points.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float32).reshape(-1)
    count = positions.size // 3
    cloud = created.add(bpy.data.pointclouds, bpy.data.pointclouds.new(name))
    obj = created.add(bpy.data.objects, bpy.data.objects.new(name, cloud))
    collection.objects.link(obj)
    if hasattr(cloud, "resize"):
        cloud.resize(count)
        cloud.attributes["position"].data.foreach_set("vector", positions)
        return obj
    if count == 0:
        return obj

    temporary = _CreatedData()
    try:
        mesh = temporary.add(bpy.data.meshes, bpy.data.meshes.new(f"{name} (temporary)"))
        mesh.vertices.add(count)
        mesh.vertices.foreach_set("co", positions)
        source = temporary.add(bpy.data.objects, bpy.data.objects.new(f"{name} (temporary)", mesh))
        tree = temporary.add(bpy.data.node_groups, bpy.data.node_groups.new(f"{name} (temporary)", "GeometryNodeTree"))
        tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
        tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        info = tree.nodes.new("GeometryNodeObjectInfo")
        info.inputs["Object"].default_value = source
        to_points = tree.nodes.new("GeometryNodeMeshToPoints")
        output = tree.nodes.new("NodeGroupOutput")
        tree.links.new(info.outputs["Geometry"], to_points.inputs["Mesh"])
        tree.links.new(to_points.outputs["Points"], output.inputs[0])
        modifier = obj.modifiers.new("VIST3A points", "NODES")
        modifier.node_group = tree
        with context.temp_override(
            active_object=obj, object=obj, selected_objects=[obj], selected_editable_objects=[obj]
        ):
            outcome = bpy.ops.object.modifier_apply(modifier=modifier.name)
    finally:
        temporary.remove_all()
    if outcome != {"FINISHED"} or obj.data is None or len(obj.data.points) != count:
        raise RuntimeError(f"Blender could not create the {count} points of {name!r}")
    if obj.data != cloud:  # a Blender that gives the object a new point cloud on apply
        created.add(bpy.data.pointclouds, obj.data)
    for leftover in (".select_vert", "radius"):
        attribute = obj.data.attributes.get(leftover)
        if attribute is not None:
            obj.data.attributes.remove(attribute)
    return obj


def set_point_attribute(cloud, name: str, data_type: str, values: np.ndarray) -> None:
    """Creates (or overwrites) a point attribute from a NumPy array in one ``foreach_set``."""
    key = {"FLOAT_COLOR": "color", "FLOAT_VECTOR": "vector", "FLOAT4": "vector"}.get(data_type, "value")
    attribute = cloud.attributes.get(name)
    if attribute is not None and attribute.data_type != data_type:
        cloud.attributes.remove(attribute)
        attribute = None
    if attribute is None:
        attribute = cloud.attributes.new(name, data_type, "POINT")
    attribute.data.foreach_set(key, np.ascontiguousarray(values, dtype=np.float32).reshape(-1))


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.ones((len(rgb), 1), dtype=np.float32)], axis=1)


class NativeSplatsUnavailable(reading.ResultImportError):
    """The running Blender has no Gaussian-splat point clouds (the message says what to choose instead)."""


def _build_splats(context, loaded, collection, created, splat_mode):
    g = loaded.gaussians
    name = f"{loaded.name} splats"
    if splat_mode is SplatMode.AUTO:
        splat_mode = SplatMode.NATIVE if native_splat_type() else SplatMode.POINTS
    if splat_mode is SplatMode.NATIVE:
        if native_splat_type() is None:
            raise NativeSplatsUnavailable(
                "this Blender has no native Gaussian splats; choose Point cloud or Ellipsoids instead"
            )
        return _build_native_splats(context, name, g, collection, created)

    attrs = conversions.gaussian_point_attributes(g.f_dc, g.opacity, g.scale, g.rot)
    obj = new_point_cloud(context, name, g.means, collection, created)
    cloud = obj.data
    set_point_attribute(cloud, COLOR_ATTRIBUTE, "FLOAT_COLOR", _rgba(attrs.color))
    set_point_attribute(cloud, OPACITY_ATTRIBUTE, "FLOAT", attrs.opacity)
    set_point_attribute(cloud, "scale", "FLOAT_VECTOR", attrs.scale)
    set_point_attribute(cloud, "rotation", "QUATERNION", attrs.rotation)
    set_point_attribute(cloud, "radius", "FLOAT", attrs.radius)
    for row, attribute in enumerate(AXIS_ATTRIBUTES):
        set_point_attribute(cloud, attribute, "FLOAT_VECTOR", attrs.axes[:, :, row])

    material = created.add(bpy.data.materials, bpy.data.materials.new(f"{loaded.name} splat"))
    if splat_mode is SplatMode.ELLIPSOIDS:
        materials.build_ellipsoid_material(material, context.scene)
        materials.add_ellipsoid_modifier(obj, material, created)
    else:
        materials.build_sphere_material(material, context.scene)
    cloud.materials.append(material)
    # A ray crosses each ellipsoid twice (front and back face); a point-cloud sphere once.
    obj[LAYERS_PROPERTY] = splat_layers(g.means, attrs.radius, loaded.cameras) * (
        2 if splat_mode is SplatMode.ELLIPSOIDS else 1
    )
    return obj


def splat_layers(centres: np.ndarray, radii: np.ndarray, cameras: Optional[CameraArrays]) -> int:
    """How many splat bounds one ray may cross at most: from the imported cameras (up to 4 of them,
    evenly spread), or along the axes when there are none (``conversions.max_spheres_along_ray``)."""
    if cameras is None or len(cameras) == 0:
        return conversions.max_spheres_along_axes(centres, radii)
    chosen = np.unique(np.linspace(0, len(cameras) - 1, min(4, len(cameras))).round().astype(int))
    return max(
        conversions.max_spheres_along_ray(
            centres,
            radii,
            cameras.camera_to_world[i],
            cameras.fx[i],
            cameras.fy[i],
            cameras.cx[i],
            cameras.cy[i],
            int(cameras.width[i]),
            int(cameras.height[i]),
        )
        for i in chosen
    )


def _build_native_splats(context, name, g, collection, created):
    """Blender's own Gaussian-splat point cloud (5.3+). UNTESTED here: no bpy wheel up to 5.2 has the type.

    Attributes follow Blender's PLY importer: position, scale (linear), rotation (wxyz),
    radiance:base (f_dc_0..2, sigmoid opacity) and radiance:sh_k (the k-th higher SH coefficient, RGB),
    so view-dependent colour (SH degree 1-3) is kept. Blender renders this type itself (emissive), so
    no material is added.
    """
    prop_name, item = native_splat_type()
    obj = new_point_cloud(context, name, g.means, collection, created)
    cloud = obj.data
    setattr(cloud, prop_name, item)
    set_point_attribute(cloud, "scale", "FLOAT_VECTOR", np.exp(g.scale))
    set_point_attribute(cloud, "rotation", "QUATERNION", conversions.normalized_quaternions(g.rot))
    base = np.concatenate([g.f_dc, conversions.sigmoid(g.opacity)[:, None]], axis=1)
    set_point_attribute(cloud, "radiance:base", "FLOAT4", base)
    # f_rest is (N, K, 3), coefficient first: attribute radiance:sh_k holds coefficient k's RGB.
    for k in range(g.f_rest.shape[1]):
        set_point_attribute(cloud, f"radiance:sh_{k}", "FLOAT_VECTOR", g.f_rest[:, k, :])
    return obj


def _build_points(context, loaded, collection, created, point_radius):
    p = loaded.points
    positions = p.points
    obj = new_point_cloud(context, f"{loaded.name} points", positions, collection, created)
    colors = np.clip(p.colors, 0.0, 1.0).astype(np.float32)  # display-referred, like splat colours
    set_point_attribute(obj.data, COLOR_ATTRIBUTE, "FLOAT_COLOR", _rgba(colors))
    radius = point_radius if point_radius > 0 else automatic_point_radius(positions)
    set_point_attribute(obj.data, "radius", "FLOAT", np.full(len(positions), radius, dtype=np.float32))
    material = created.add(bpy.data.materials, bpy.data.materials.new(f"{loaded.name} points"))
    materials.build_point_material(material)
    obj.data.materials.append(material)
    return obj


def automatic_point_radius(positions: np.ndarray) -> float:
    """Half the typical spacing of points that sample surfaces: bounding-box diagonal / sqrt(N) / 2.

    Point maps sample 2D surfaces, so N points spread over an extent D lie about D / sqrt(N) apart.
    """
    if len(positions) == 0:
        return 0.01
    diagonal = float(np.linalg.norm(positions.max(axis=0) - positions.min(axis=0)))
    return max(diagonal / math.sqrt(len(positions)) / 2, 1e-6)


# --- cameras


def _build_camera(loaded, index, collection, root, created):
    c = loaded.cameras
    settings = conversions.opencv_camera_to_blender(
        c.camera_to_world[index], c.fx[index], c.fy[index], c.cx[index], c.cy[index], c.width[index], c.height[index]
    )
    name = f"{loaded.name} camera {index:03d}"
    data = created.add(bpy.data.cameras, bpy.data.cameras.new(name))
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = settings.sensor_width
    data.lens = settings.lens
    data.shift_x = settings.shift_x
    data.shift_y = settings.shift_y
    data.clip_start = 0.01
    data.clip_end = 1000.0
    obj = created.add(bpy.data.objects, bpy.data.objects.new(name, data))
    collection.objects.link(obj)
    obj.parent = root
    obj.matrix_basis = Matrix(settings.matrix_world.tolist())  # rows; a plain nested list would be read as columns
    _tag(obj, loaded.source, "camera")
    obj[RESOLUTION_PROPERTY] = (settings.width, settings.height)
    obj[PIXEL_ASPECT_PROPERTY] = (settings.pixel_aspect_x, settings.pixel_aspect_y)
    return obj


def use_camera(scene, camera) -> None:
    """Makes ``camera`` the scene camera, with the resolution and pixel aspect it was generated for."""
    scene.camera = camera
    if RESOLUTION_PROPERTY in camera:
        width, height = camera[RESOLUTION_PROPERTY]
        aspect_x, aspect_y = camera[PIXEL_ASPECT_PROPERTY]
        render = scene.render
        render.resolution_x, render.resolution_y = int(width), int(height)
        render.resolution_percentage = 100
        render.pixel_aspect_x, render.pixel_aspect_y = float(aspect_x), float(aspect_y)


def generated_cameras(scene) -> list:
    """The cameras in ``scene`` that came from a VIST3A import, by name."""
    return sorted(
        (obj for obj in scene.objects if obj.type == "CAMERA" and obj.get(KIND_PROPERTY) == "camera"),
        key=lambda obj: obj.name,
    )


# --- render settings


# Cycles' own ceiling for transparent_max_bounces.
MAX_TRANSPARENT_BOUNCES = 1024


def required_transparent_bounces(scene) -> int:
    """Transparent hits the scene's imported splats need: the sum of their ``LAYERS_PROPERTY`` (rays
    may cross several imports), plus the fixed floor for everything else."""
    layers = sum(
        int(obj.get(LAYERS_PROPERTY, 0))
        for obj in scene.objects
        if obj.get(KIND_PROPERTY) == "splats" and not obj.hide_render
    )
    return max(TRANSPARENT_BOUNCES, layers + LAYER_HEADROOM) if layers else TRANSPARENT_BOUNCES


def configure_render_settings(scene) -> Optional[str]:
    """Settings imported splats need to look right in Cycles; returns a warning for the user, or None.

    Cycles (only it evaluates the footprint), a transparent-bounce limit that follows the splats in the
    scene (a ray that crosses more splats than the limit ends black; the limit is only ever raised),
    no Russian roulette for as many transparent hits as the splats need, and the Raw view transform:
    splat colours are display-referred (3DGS trains them against sRGB images and blends them in
    display space), so they are emitted as they are and shown untouched, and semi-transparent splats
    blend exactly as in 3DGS renderers (Standard would blend in linear light: a splat of opacity 0.5
    would look more than half transparent over a bright background; AgX, the default, would also wash
    colours out). The warning says when the splats need more transparent bounces than Cycles allows.
    """
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    needed = required_transparent_bounces(scene)
    cycles.transparent_max_bounces = max(cycles.transparent_max_bounces, min(needed, MAX_TRANSPARENT_BOUNCES))
    cycles.min_transparent_bounces = max(
        cycles.min_transparent_bounces, min(max(needed, ROULETTE_FREE_BOUNCES), MAX_TRANSPARENT_BOUNCES)
    )
    scene.view_settings.view_transform = "Raw"
    scene.view_settings.look = "None"
    if needed > MAX_TRANSPARENT_BOUNCES:
        return (
            f"Up to {needed} splats lie behind one another, more than Cycles' limit of "
            f"{MAX_TRANSPARENT_BOUNCES} transparent bounces: the deepest parts may render black"
        )
    return None


def preselect_render_camera(context, result: ImportedResult) -> None:
    """After an import: the panel's render camera becomes the import's first camera (if it made any)."""
    settings = getattr(context.scene, "vist3a", None)
    if result.cameras and settings is not None:
        settings.render_camera = result.cameras[0]
