"""VIST3A results -> Blender data: splats, coloured points, cameras, their materials and render settings.

Reading and checking files happens first and completely (``load_result``); only then is any Blender
data created (``build_result``), so a bad file leaves the scene untouched. Everything per point is done
with NumPy and ``foreach_set``; there are no per-point Python loops.

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

from . import conversions
from .engine.io import (
    CameraArrays,
    FormatError,
    GaussianArrays,
    InvalidValuesError,
    PointArrays,
    read_cameras_json,
    read_scene_file,
)

SOURCE_PROPERTY = "vist3a_source"  # the folder or file an object was imported from
KIND_PROPERTY = "vist3a_kind"  # "result", "splats", "points" or "camera"
RESOLUTION_PROPERTY = "vist3a_resolution"  # on cameras: (width, height) in pixels
PIXEL_ASPECT_PROPERTY = "vist3a_pixel_aspect"  # on cameras: Blender's (pixel_aspect_x, pixel_aspect_y)

# Point attribute names. The colour is not called "color": Cycles reads a point-cloud attribute of that
# name as black (checked with bpy 5.0.1).
COLOR_ATTRIBUTE = "base_color"
OPACITY_ATTRIBUTE = "opacity"

RESULT_SCENE_FILE = "scene.ply"
RESULT_CAMERAS_FILE = "cameras.json"

# Cycles stops a ray after this many transparent hits; a splat scene stacks dozens along one ray.
TRANSPARENT_BOUNCES = 64
# Below this many transparent hits Cycles does no Russian roulette. Roulette ends transparent paths at
# random and boosts the survivors: unbiased, but it shows as bright and dark speckles in dense splats
# (about +-6 % at 4 samples). Sparing the front-most hits, which carry most of the colour, removes most
# of that; sparing all 64 would be exact but rendered a 17k-splat test scene 9x slower than none.
ROULETTE_FREE_BOUNCES = 8


class SplatMode(enum.Enum):
    AUTO = "AUTO"
    POINTS = "POINTS"
    ELLIPSOIDS = "ELLIPSOIDS"
    NATIVE = "NATIVE"


class ResultImportError(ValueError):
    """A result cannot be imported; the message says which file and why (shown to the user)."""


# ---------------------------------------------------------------------------------------------------
# Reading (no Blender data is created here)


@dataclass
class LoadedResult:
    """Everything one import needs, read and checked.

    At most one of ``gaussians`` / ``points`` is set (neither for a cameras JSON on its own).
    ``skipped_invalid`` counts the splats or points left out for invalid values (NaN, infinite or
    out-of-range numbers) when the import was asked to skip them.
    """

    name: str
    source: str
    gaussians: Optional[GaussianArrays] = None
    points: Optional[PointArrays] = None
    cameras: Optional[CameraArrays] = None
    skipped_invalid: int = 0


# Files the import reads: splats (standard or compressed PLY, .splat, .spz), point PLYs, cameras JSON.
SCENE_EXTENSIONS = (".ply", ".splat", ".spz")
SKIP_INVALID_LABEL = "Skip Invalid Splats"


def load_result(path: str, *, skip_invalid: bool = True) -> LoadedResult:
    """Reads a result folder (scene.ply [+ cameras.json]), a splat file (standard or compressed PLY,
    .splat, .spz), a point PLY, or a cameras JSON.

    With ``skip_invalid`` (the default) splats or points holding invalid values are left out and
    counted in ``LoadedResult.skipped_invalid``; without it such a file is refused.

    Raises ResultImportError with a message naming the file for anything that cannot be imported.
    """
    path = os.path.abspath(bpy.path.abspath(path))
    if os.path.isdir(path):
        scene_file = os.path.join(path, RESULT_SCENE_FILE)
        cameras_file = os.path.join(path, RESULT_CAMERAS_FILE)
        if not os.path.isfile(scene_file):
            raise ResultImportError(f"{path}: not a VIST3A result folder (no {RESULT_SCENE_FILE} in it)")
        result = LoadedResult(name=os.path.basename(path.rstrip(os.sep)), source=path)
        _read_scene_file(scene_file, result, skip_invalid)
        if os.path.isfile(cameras_file):
            result.cameras = _read_cameras(cameras_file)
        return result
    if not os.path.isfile(path):
        raise ResultImportError(f"{path}: no such file or folder")
    result = LoadedResult(name=os.path.splitext(os.path.basename(path))[0], source=path)
    extension = os.path.splitext(path)[1].lower()
    if extension in SCENE_EXTENSIONS:
        _read_scene_file(path, result, skip_invalid)
    elif extension == ".json":
        result.cameras = _read_cameras(path)
    else:
        raise ResultImportError(
            f"{path}: expected a result folder, a splat or point file (.ply, .splat, .spz) or a cameras .json file"
        )
    return result


def _read_scene_file(path: str, result: LoadedResult, skip_invalid: bool) -> None:
    """Fills ``result.gaussians`` or ``result.points`` from any splat or point file the engine reads."""
    try:
        scene = read_scene_file(path, non_finite="drop" if skip_invalid else "error")
    except InvalidValuesError as exc:
        raise ResultImportError(f"{exc}. Turn on '{SKIP_INVALID_LABEL}' to import the others") from exc
    except (FormatError, OSError) as exc:
        raise ResultImportError(str(exc)) from exc
    if len(scene) == 0 and scene.dropped_non_finite:
        noun = "splats" if isinstance(scene, GaussianArrays) else "points"
        raise ResultImportError(
            f"{path}: all {scene.dropped_non_finite} {noun} have invalid values (not a number, infinite or out of "
            "range); there is nothing to import"
        )
    if isinstance(scene, GaussianArrays):
        result.gaussians = scene
    else:
        result.points = scene
    result.skipped_invalid = scene.dropped_non_finite


def _read_cameras(path: str) -> CameraArrays:
    try:
        return read_cameras_json(path)
    except (FormatError, OSError) as exc:
        raise ResultImportError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------
# Building Blender data


@dataclass
class ImportedResult:
    """What one import created."""

    collection: bpy.types.Collection
    root: bpy.types.Object
    geometry: Optional[bpy.types.Object]
    cameras: list


def build_result(
    context,
    loaded: LoadedResult,
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
    """``load_result`` then ``build_result``: the whole import of one folder or file."""
    return build_result(context, load_result(path), **options)


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
    if loaded.gaussians is not None:
        geometry = _build_splats(context, loaded, collection, created, splat_mode)
    elif loaded.points is not None:
        geometry = _build_points(context, loaded, collection, created, point_radius)
    if geometry is not None:
        geometry.parent = root
        _tag(geometry, loaded.source, "splats" if loaded.gaussians is not None else "points")
        configure_render_settings(scene)

    cameras = []
    if loaded.cameras is not None:
        cameras = [_build_camera(loaded, index, collection, root, created) for index in range(len(loaded.cameras))]
    if cameras and set_scene_camera:
        use_camera(scene, cameras[0])

    for obj in context.view_layer.objects:
        obj.select_set(False)
    for obj in collection.objects:
        obj.select_set(True)
    context.view_layer.objects.active = root
    context.view_layer.update()  # so that matrix_world of the new objects is valid for scripts
    return ImportedResult(collection=collection, root=root, geometry=geometry, cameras=cameras)


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

    Uses ``PointCloud.resize`` where it exists (Blender 5.1+). Blender 5.0 has no way to size a point
    cloud from Python, so a mesh with the vertices is built and converted (attributes come later).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float32).reshape(-1)
    count = positions.size // 3
    if hasattr(bpy.types.PointCloud, "resize"):
        cloud = created.add(bpy.data.pointclouds, bpy.data.pointclouds.new(name))
        cloud.resize(count)
        cloud.attributes["position"].data.foreach_set("vector", positions)
        obj = created.add(bpy.data.objects, bpy.data.objects.new(name, cloud))
        collection.objects.link(obj)
        return obj

    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(count)
    mesh.vertices.foreach_set("co", positions)
    obj = created.add(bpy.data.objects, bpy.data.objects.new(name, mesh))
    collection.objects.link(obj)
    try:
        with context.temp_override(
            active_object=obj, object=obj, selected_objects=[obj], selected_editable_objects=[obj]
        ):
            outcome = bpy.ops.object.convert(target="POINTCLOUD")
    finally:
        if mesh.users == 0:
            bpy.data.meshes.remove(mesh)
    if outcome != {"FINISHED"} or obj.type != "POINTCLOUD":
        raise RuntimeError(f"Blender could not convert the {count} points of {name!r} to a point cloud")
    created.add(bpy.data.pointclouds, obj.data)
    selection = obj.data.attributes.get(".select_vert")
    if selection is not None:
        obj.data.attributes.remove(selection)
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


def _build_splats(context, loaded, collection, created, splat_mode):
    g = loaded.gaussians
    name = f"{loaded.name} splats"
    if splat_mode is SplatMode.AUTO:
        splat_mode = SplatMode.NATIVE if native_splat_type() else SplatMode.POINTS
    if splat_mode is SplatMode.NATIVE:
        return _build_native_splats(name, g, collection, created)

    attrs = conversions.gaussian_point_attributes(g.f_dc, g.opacity, g.scale, g.rot)
    obj = new_point_cloud(context, name, g.means, collection, created)
    cloud = obj.data
    set_point_attribute(cloud, COLOR_ATTRIBUTE, "FLOAT_COLOR", _rgba(attrs.color))
    set_point_attribute(cloud, OPACITY_ATTRIBUTE, "FLOAT", attrs.opacity)
    set_point_attribute(cloud, "scale", "FLOAT_VECTOR", attrs.scale)
    set_point_attribute(cloud, "rotation", "QUATERNION", attrs.rotation)
    set_point_attribute(cloud, "radius", "FLOAT", attrs.radius)

    material = created.add(bpy.data.materials, bpy.data.materials.new(f"{loaded.name} splat"))
    if splat_mode is SplatMode.ELLIPSOIDS:
        _build_ellipsoid_material(material)
        _add_ellipsoid_modifier(obj, material, created)
    else:
        _build_sphere_material(material)
    cloud.materials.append(material)
    return obj


def _build_native_splats(name, g, collection, created):
    """Blender's own Gaussian-splat point cloud (5.3+). UNTESTED here: bpy 5.0.1 has no such type.

    Attributes follow Blender's PLY importer: position, scale (linear), rotation (wxyz),
    radiance:base (f_dc_0..2, sigmoid opacity) and radiance:sh_k (the k-th higher SH coefficient, RGB).
    Blender renders this type itself (emissive), so no material or render settings are added.
    """
    prop_name, item = native_splat_type()
    count = len(g.means)
    cloud = created.add(bpy.data.pointclouds, bpy.data.pointclouds.new(name))
    setattr(cloud, prop_name, item)
    cloud.resize(count)
    cloud.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(g.means, np.float32).reshape(-1))
    set_point_attribute(cloud, "scale", "FLOAT_VECTOR", np.exp(g.scale))
    set_point_attribute(cloud, "rotation", "QUATERNION", conversions.normalized_quaternions(g.rot))
    base = np.concatenate([g.f_dc, conversions.sigmoid(g.opacity)[:, None]], axis=1)
    set_point_attribute(cloud, "radiance:base", "FLOAT4", base)
    # f_rest is (N, K, 3), coefficient first: attribute radiance:sh_k holds coefficient k's RGB.
    for k in range(g.f_rest.shape[1]):
        set_point_attribute(cloud, f"radiance:sh_{k}", "FLOAT_VECTOR", g.f_rest[:, k, :])
    obj = created.add(bpy.data.objects, bpy.data.objects.new(name, cloud))
    collection.objects.link(obj)
    return obj


def _build_points(context, loaded, collection, created, point_radius):
    p = loaded.points
    positions = p.points
    obj = new_point_cloud(context, f"{loaded.name} points", positions, collection, created)
    colors = conversions.srgb_to_linear(np.clip(p.colors, 0.0, 1.0)).astype(np.float32)
    set_point_attribute(obj.data, COLOR_ATTRIBUTE, "FLOAT_COLOR", _rgba(colors))
    radius = point_radius if point_radius > 0 else automatic_point_radius(positions)
    set_point_attribute(obj.data, "radius", "FLOAT", np.full(len(positions), radius, dtype=np.float32))
    material = created.add(bpy.data.materials, bpy.data.materials.new(f"{loaded.name} points"))
    _build_point_material(material)
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


# --- materials


class _NodeBuilder:
    """Small helper for readable shader graphs: nodes, math, and links in one place."""

    def __init__(self, material):
        if material.node_tree is None:  # Blender < 5.0 makes materials without a node tree
            material.use_nodes = True
        self.tree = material.node_tree
        self.tree.nodes.clear()
        self.x = 0

    def node(self, kind, **settings):
        node = self.tree.nodes.new(kind)
        for key, value in settings.items():
            setattr(node, key, value)
        node.location = (self.x, 0)
        self.x += 200
        return node

    def link(self, output, node_input):
        self.tree.links.new(output, node_input)

    def math(self, operation, a, b=None, kind="ShaderNodeMath"):
        node = self.node(kind, operation=operation)
        for socket_index, value in ((0, a), (1, b)):
            if value is None:
                continue
            if isinstance(value, (int, float)):
                node.inputs[socket_index].default_value = value
            else:
                self.link(value, node.inputs[socket_index])
        output = "Value" if kind == "ShaderNodeVectorMath" and operation in ("DOT_PRODUCT", "LENGTH") else 0
        return node.outputs[output]

    def attribute(self, name, attribute_type="GEOMETRY"):
        return self.node("ShaderNodeAttribute", attribute_name=name, attribute_type=attribute_type)

    def footprint_alpha(self, offset, incoming, opacity, radius=None):
        """opacity * exp(-0.5 * K^2 * d^2 / R^2), d^2 = v.v - (v.I)^2: the Gaussian seen along the ray.

        d is the distance between the ray and the splat centre; with R = K * sigma this is the
        isotropic Gaussian's own profile. ``radius`` None means R = 1 (unit sphere space).
        """
        vv = self.math("DOT_PRODUCT", offset, offset, kind="ShaderNodeVectorMath")
        vi = self.math("DOT_PRODUCT", offset, incoming, kind="ShaderNodeVectorMath")
        d2 = self.math("SUBTRACT", vv, self.math("MULTIPLY", vi, vi))
        if radius is not None:
            d2 = self.math("DIVIDE", d2, self.math("MULTIPLY", radius, radius))
        exponent = self.math("MULTIPLY", d2, -0.5 * conversions.FOOTPRINT_K**2)
        return self.math("MULTIPLY", self.math("EXPONENT", exponent), opacity)

    def emission_over_transparent(self, color, alpha):
        emission = self.node("ShaderNodeEmission")
        emission.inputs["Strength"].default_value = 1.0
        self.link(color, emission.inputs["Color"])
        transparent = self.node("ShaderNodeBsdfTransparent")
        mix = self.node("ShaderNodeMixShader")
        self.link(alpha, mix.inputs["Fac"])
        self.link(transparent.outputs[0], mix.inputs[1])
        self.link(emission.outputs[0], mix.inputs[2])
        output = self.node("ShaderNodeOutputMaterial")
        self.link(mix.outputs[0], output.inputs["Surface"])


def _build_sphere_material(material):
    """Cycles point-cloud spheres with a Gaussian footprint: the colour is emitted, not lit (baked light)."""
    b = _NodeBuilder(material)
    point = b.node("ShaderNodePointInfo")
    geometry = b.node("ShaderNodeNewGeometry")
    offset = b.math("SUBTRACT", geometry.outputs["Position"], point.outputs["Position"], kind="ShaderNodeVectorMath")
    alpha = b.footprint_alpha(
        offset, geometry.outputs["Incoming"], b.attribute(OPACITY_ATTRIBUTE).outputs["Fac"], point.outputs["Radius"]
    )
    b.emission_over_transparent(b.attribute(COLOR_ATTRIBUTE).outputs["Color"], alpha)
    _transparent_material_settings(material)


def _build_ellipsoid_material(material):
    """Instanced unit spheres: the footprint is evaluated in instance space, where the splat is round.

    Object coordinates of an instance are its unit-sphere coordinates; the incoming direction is
    brought into the same space (and renormalised, the instance scale is anisotropic). Colour and
    opacity are per-instance attributes (Attribute node, type INSTANCER).
    """
    b = _NodeBuilder(material)
    coords = b.node("ShaderNodeTexCoord")
    geometry = b.node("ShaderNodeNewGeometry")
    to_object = b.node("ShaderNodeVectorTransform", vector_type="VECTOR", convert_from="WORLD", convert_to="OBJECT")
    b.link(geometry.outputs["Incoming"], to_object.inputs["Vector"])
    incoming = b.math("NORMALIZE", to_object.outputs["Vector"], kind="ShaderNodeVectorMath")
    alpha = b.footprint_alpha(
        coords.outputs["Object"], incoming, b.attribute(OPACITY_ATTRIBUTE, "INSTANCER").outputs["Fac"], radius=None
    )
    b.emission_over_transparent(b.attribute(COLOR_ATTRIBUTE, "INSTANCER").outputs["Color"], alpha)
    _transparent_material_settings(material)


def _build_point_material(material):
    """Coloured points: their colour is emitted, as it already carries the scene's lighting."""
    b = _NodeBuilder(material)
    emission = b.node("ShaderNodeEmission")
    b.link(b.attribute(COLOR_ATTRIBUTE).outputs["Color"], emission.inputs["Color"])
    output = b.node("ShaderNodeOutputMaterial")
    b.link(emission.outputs[0], output.inputs["Surface"])


def _transparent_material_settings(material):
    # EEVEE needs blended rendering for partial transparency; Cycles ignores this.
    if hasattr(material, "surface_render_method"):
        material.surface_render_method = "BLENDED"


def _add_ellipsoid_modifier(obj, material, created):
    """Geometry Nodes: one ico-sphere instance per point, rotated by ``rotation``, scaled by K * ``scale``."""
    tree = created.add(bpy.data.node_groups, bpy.data.node_groups.new(f"{obj.name} ellipsoids", "GeometryNodeTree"))
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = tree.nodes, tree.links
    group_in = nodes.new("NodeGroupInput")
    group_out = nodes.new("NodeGroupOutput")
    sphere = nodes.new("GeometryNodeMeshIcoSphere")
    sphere.inputs["Radius"].default_value = 1.0
    sphere.inputs["Subdivisions"].default_value = 2
    set_material = nodes.new("GeometryNodeSetMaterial")
    set_material.inputs["Material"].default_value = material
    rotation = nodes.new("GeometryNodeInputNamedAttribute")
    rotation.data_type = "QUATERNION"
    rotation.inputs["Name"].default_value = "rotation"
    scale = nodes.new("GeometryNodeInputNamedAttribute")
    scale.data_type = "FLOAT_VECTOR"
    scale.inputs["Name"].default_value = "scale"
    scale_k = nodes.new("ShaderNodeVectorMath")
    scale_k.operation = "SCALE"
    scale_k.inputs["Scale"].default_value = conversions.FOOTPRINT_K
    instance = nodes.new("GeometryNodeInstanceOnPoints")

    links.new(sphere.outputs["Mesh"], set_material.inputs["Geometry"])
    links.new(group_in.outputs[0], instance.inputs["Points"])
    links.new(set_material.outputs["Geometry"], instance.inputs["Instance"])
    links.new(rotation.outputs["Attribute"], instance.inputs["Rotation"])
    links.new(scale.outputs["Attribute"], scale_k.inputs[0])
    links.new(scale_k.outputs["Vector"], instance.inputs["Scale"])
    links.new(instance.outputs["Instances"], group_out.inputs[0])
    modifier = obj.modifiers.new("VIST3A ellipsoids", "NODES")
    modifier.node_group = tree


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


def configure_render_settings(scene) -> None:
    """Settings imported splats need to look right in Cycles.

    Cycles (only it evaluates the Point Info footprint), enough transparent bounces for stacked
    splats (Russian roulette only behind the front-most), and the Standard view transform: splat colours are display-referred already, and AgX
    (the default) would wash them out.
    """
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.transparent_max_bounces = max(cycles.transparent_max_bounces, TRANSPARENT_BOUNCES)
    cycles.min_transparent_bounces = max(cycles.min_transparent_bounces, ROULETTE_FREE_BOUNCES)
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
