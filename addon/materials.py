"""Shader graphs and Geometry Nodes for imported splats and points (Cycles evaluates the footprints).

The materials read the point attributes that ``blender_data`` writes (names below); the footprint maths
follow ``conversions`` (numbers only), which is tested without Blender.
"""

import bpy

from . import conversions

# Point attribute names. The colour is not called "color": Cycles reads a point-cloud attribute of that
# name as black (checked with bpy 5.0.1).
COLOR_ATTRIBUTE = "base_color"
OPACITY_ATTRIBUTE = "opacity"
AXIS_ATTRIBUTES = ("splat_axis_0", "splat_axis_1", "splat_axis_2")  # unit axes (object space)
PIXEL_ANGLE_NODE = "VIST3A pixel angle"


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


def build_sphere_material(material, scene):
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


def build_ellipsoid_material(material, scene):
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


def build_point_material(material):
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


def add_ellipsoid_modifier(obj, material, created):
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
