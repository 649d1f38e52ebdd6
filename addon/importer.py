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
LAYERS_PROPERTY = "vist3a_layers"  # on splats: how many splat surfaces one ray may cross at most

# Point attribute names. The colour is not called "color": Cycles reads a point-cloud attribute of that
# name as black (checked with bpy 5.0.1).
COLOR_ATTRIBUTE = "base_color"
OPACITY_ATTRIBUTE = "opacity"

RESULT_SCENE_FILE = "scene.ply"
RESULT_CAMERAS_FILE = "cameras.json"

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
    warning: Optional[str] = None  # something the user should know (shown as a warning)


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


AXIS_ATTRIBUTES = ("splat_axis_0", "splat_axis_1", "splat_axis_2")  # unit axes (object space)
PIXEL_ANGLE_NODE = "VIST3A pixel angle"


class NativeSplatsUnavailable(ResultImportError):
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
        _build_ellipsoid_material(material, context.scene)
        _add_ellipsoid_modifier(obj, material, created)
    else:
        _build_sphere_material(material, context.scene)
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

    def __init__(self, material, scene=None):
        self.scene = scene
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
            if isinstance(value, (int, float)) and kind == "ShaderNodeVectorMath":
                node.inputs[socket_index].default_value = (value, value, value)
            elif isinstance(value, (int, float, tuple)):
                node.inputs[socket_index].default_value = value
            else:
                self.link(value, node.inputs[socket_index])
        output = "Value" if kind == "ShaderNodeVectorMath" and operation in ("DOT_PRODUCT", "LENGTH") else 0
        return node.outputs[output]

    def attribute(self, name, attribute_type="GEOMETRY"):
        return self.node("ShaderNodeAttribute", attribute_name=name, attribute_type=attribute_type)

    def footprint_alpha(self, p, q, inverse_variance, opacity):
        """opacity * exp(-0.5 * d^2), d^2 = |x|^2 - (x.y)^2 / |y|^2 with x = p / s, y = q / s.

        ``p`` (offset from the centre) and ``q`` (ray direction) are vectors of components along the
        Gaussian's own axes, ``inverse_variance`` is 1 / s^2 per axis. d is the distance of the ray from
        the centre in units of the Gaussian: its peak along the ray (conversions.ray_footprint_alpha).
        """
        u = inverse_variance
        vector = "ShaderNodeVectorMath"
        xx = self.math("DOT_PRODUCT", self.math("MULTIPLY", p, p, kind=vector), u, kind=vector)
        xy = self.math("DOT_PRODUCT", self.math("MULTIPLY", p, q, kind=vector), u, kind=vector)
        yy = self.math("DOT_PRODUCT", self.math("MULTIPLY", q, q, kind=vector), u, kind=vector)
        d2 = self.math("SUBTRACT", xx, self.math("DIVIDE", self.math("MULTIPLY", xy, xy), yy))
        exponent = self.math("MULTIPLY", self.math("MAXIMUM", d2, 0.0), -0.5)
        return self.math("MULTIPLY", self.math("EXPONENT", exponent), opacity)

    def along_axes(self, axes, vector):
        """The components of ``vector`` along three axes (each an output)."""
        combine = self.node("ShaderNodeCombineXYZ")
        for name, axis in zip("XYZ", axes):
            self.link(self.math("DOT_PRODUCT", axis, vector, kind="ShaderNodeVectorMath"), combine.inputs[name])
        return combine.outputs[0]

    def dilated_variance(self, scale):
        """sigma^2 + e per axis: the 3DGS screen-space dilation (EPS2D pixels^2) as a world-space variance
        e = EPS2D * (depth * pixel angle)^2 at the shading point, with the render camera's pixel angle
        (``pixel_angle_value``)."""
        camera = self.node("ShaderNodeCameraData")
        angle = self.pixel_angle_value()
        size = self.math("MULTIPLY", camera.outputs["View Z Depth"], angle)
        dilation = self.math("MULTIPLY", self.math("MULTIPLY", size, size), conversions.EPS2D)
        vector = "ShaderNodeVectorMath"
        return self.math("ADD", self.math("MULTIPLY", scale, scale, kind=vector), dilation, kind=vector)

    def pixel_angle_value(self):
        """A Value node holding the render camera's pixel size per unit of depth, kept current by a driver
        (a simple expression: no Python runs) on the scene's camera and resolution."""
        node = self.node("ShaderNodeValue", name=PIXEL_ANGLE_NODE, label="Pixel size per depth")
        node.outputs[0].default_value = 0.0
        if self.scene is not None:
            driver = node.outputs[0].driver_add("default_value").driver
            driver.type = "SCRIPTED"
            for name, path in (
                ("sensor", "camera.data.sensor_width"),
                ("lens", "camera.data.lens"),
                ("width", "render.resolution_x"),
                ("percent", "render.resolution_percentage"),
            ):
                variable = driver.variables.new()
                variable.name = name
                variable.type = "SINGLE_PROP"
                variable.targets[0].id_type = "SCENE"
                variable.targets[0].id = self.scene
                variable.targets[0].data_path = path
            driver.expression = "sensor / (lens * width * percent / 100)"
        return node.outputs[0]

    def to_object(self, vector):
        """A world-space direction or offset in the object's (the splats' own) space."""
        node = self.node("ShaderNodeVectorTransform", vector_type="VECTOR", convert_from="WORLD", convert_to="OBJECT")
        self.link(vector, node.inputs["Vector"])
        return node.outputs["Vector"]

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


def _build_sphere_material(material, scene):
    """Cycles point-cloud spheres (radius K * largest sigma) showing each anisotropic Gaussian as 3DGS does.

    Cycles shades a sphere once per ray (its front), at P; v = P - centre and the incoming direction
    are taken into object space and onto the splat's axes, and the footprint is the Gaussian's own
    (dilated by the 3DGS screen-space term), whatever its shape. The colour is emitted, not lit.
    """
    b = _NodeBuilder(material, scene)
    point = b.node("ShaderNodePointInfo")
    geometry = b.node("ShaderNodeNewGeometry")
    offset = b.math("SUBTRACT", geometry.outputs["Position"], point.outputs["Position"], kind="ShaderNodeVectorMath")
    axes = [b.attribute(name).outputs["Vector"] for name in AXIS_ATTRIBUTES]
    p = b.along_axes(axes, b.to_object(offset))
    q = b.along_axes(axes, b.to_object(geometry.outputs["Incoming"]))
    variance = b.dilated_variance(b.attribute("scale").outputs["Vector"])
    inverse = b.math("DIVIDE", (1.0, 1.0, 1.0), variance, kind="ShaderNodeVectorMath")
    alpha = b.footprint_alpha(p, q, inverse, b.attribute(OPACITY_ATTRIBUTE).outputs["Fac"])
    b.emission_over_transparent(b.attribute(COLOR_ATTRIBUTE).outputs["Color"], alpha)
    _transparent_material_settings(material)


def _build_ellipsoid_material(material, scene):
    """Instanced unit spheres (scaled to K sigmas): the footprint is evaluated in instance space.

    Object coordinates of an instance are its unit-sphere coordinates, along the splat's axes; there
    the variance per axis is (sigma^2 + e) / (K sigma)^2 (e: the 3DGS dilation, see
    ``dilated_variance``). A ray passes an instance twice (in and out): only the front face shows the
    splat and the back face is fully transparent, so the opacity counts once. Colour, opacity and
    scale are per-instance attributes (Attribute node, type INSTANCER).
    """
    b = _NodeBuilder(material, scene)
    coords = b.node("ShaderNodeTexCoord")
    geometry = b.node("ShaderNodeNewGeometry")
    vector = "ShaderNodeVectorMath"
    scale = b.attribute("scale", "INSTANCER").outputs["Vector"]
    k2 = conversions.FOOTPRINT_K**2
    # 1 / variance = K^2 sigma^2 / (sigma^2 + e)
    inverse = b.math(
        "DIVIDE",
        b.math("MULTIPLY", b.math("MULTIPLY", scale, scale, kind=vector), k2, kind=vector),
        b.dilated_variance(scale),
        kind=vector,
    )
    front = b.math("SUBTRACT", 1.0, geometry.outputs["Backfacing"])
    opacity = b.math("MULTIPLY", b.attribute(OPACITY_ATTRIBUTE, "INSTANCER").outputs["Fac"], front)
    alpha = b.footprint_alpha(coords.outputs["Object"], b.to_object(geometry.outputs["Incoming"]), inverse, opacity)
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
