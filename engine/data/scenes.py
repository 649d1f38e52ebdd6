"""Procedural scenes: coloured primitives on a floor, as Gaussians, with a caption from the layout.

A scene is a square floor (a two-tone checker of one named colour) under a tinted sky, with a few
objects resting on it, each of a distinct named colour: a primitive (cube, sphere, cylinder, cone,
torus) or a composite built from primitives (tree, snowman, house, table). Surfaces are sampled as
small flat Gaussians (SH degree 0) with simple baked lighting (ambient + Lambert from a fixed sun, and
a soft contact shadow on the floor) so that renders read as solid 3D objects.

The caption describes the layout as seen from the scene's *reference view*, a camera on an orbit
around the scene centre (the first frame of the default orbit clip): "a red cube to the left of a blue
sphere on a grey floor". Relations are computed from the objects' positions in that camera's
horizontal frame, and the generator only accepts layouts where each stated relation is clear (the
lateral or the depth offset dominates the other by a margin).

Everything random comes from ``numpy.random.default_rng(seed)``, so a seed gives a bit-identical scene
and caption on every run.

Held-out split: the seed fixes the split (:func:`split_of_seed`: every seed divisible by
``HELDOUT_SEED_MODULUS`` is held out). Scenes of training seeds never contain a colour-shape pair of
``HELDOUT_COMBINATIONS``; every held-out scene contains at least one, so held-out captions name
combinations never seen in training (each colour and each shape on its own is seen in training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from engine.data import primitives
from engine.data.camera_paths import orbit_cameras
from engine.geometry.rotations import matrix_to_quaternion
from engine.scene import Cameras, GaussianScene, rgb_to_sh_dc

OBJECT_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.14, 0.12),
    "orange": (0.96, 0.52, 0.10),
    "yellow": (0.95, 0.84, 0.16),
    "green": (0.18, 0.66, 0.22),
    "blue": (0.14, 0.32, 0.88),
    "purple": (0.55, 0.22, 0.74),
    "pink": (0.96, 0.50, 0.72),
    "white": (0.94, 0.94, 0.92),
    "cyan": (0.12, 0.78, 0.84),
    "black": (0.07, 0.07, 0.08),
    "magenta": (0.82, 0.10, 0.62),
}
FLOOR_COLORS: dict[str, tuple[float, float, float]] = {
    "grey": (0.55, 0.55, 0.55),
    "beige": (0.80, 0.72, 0.56),
    "brown": (0.50, 0.35, 0.24),
    "dark grey": (0.30, 0.30, 0.31),
}
# Sky tints, named as the caption says them ("under a sunset sky"); none of these names is an
# object or floor colour, so a colour word in a caption always means an object or the floor.
SKY_COLORS: dict[str, tuple[float, float, float]] = {
    "clear": (0.62, 0.78, 0.95),
    "sunset": (0.98, 0.74, 0.55),
    "cloudy": (0.72, 0.74, 0.78),
}
DEFAULT_SKY = "clear"
SKY_COLOR = SKY_COLORS[DEFAULT_SKY]  # the clear sky (the only sky before tints were added)

# Composite objects built from primitives (proportions in SceneObject's docstring).
COMPOSITE_SHAPES = ("tree", "snowman", "house", "table")
OBJECT_SHAPES = primitives.SHAPES + COMPOSITE_SHAPES
_TRUNK_COLOR = (0.36, 0.24, 0.13)  # a tree's trunk; its crown has the object's colour

# The fixed held-out split (see the module docstring).
HELDOUT_SEED_MODULUS = 10
HELDOUT_COMBINATIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "house"),
        ("orange", "cube"),
        ("yellow", "snowman"),
        ("green", "sphere"),
        ("blue", "table"),
        ("purple", "cone"),
        ("pink", "tree"),
        ("white", "torus"),
        ("cyan", "cylinder"),
        ("black", "snowman"),
        ("magenta", "house"),
    }
)
SPLITS = ("train", "heldout")

# Lighting baked into the colours: ambient term plus Lambert from a fixed, mostly overhead sun.
_SUN_DIRECTION = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])
_AMBIENT = 0.45
_FLOOR_CHECKER_SIZE = 0.5
_FLOOR_CHECKER_DARKENING = 0.85
_CONTACT_SHADOW_STRENGTH = 0.45
_COLOR_JITTER = 0.025  # per-Gaussian colour noise: a little texture for multi-view matching
_OPACITY = 0.98

# Layout sampling ranges (world units, floor at z = 0).
_OBJECT_SIZE_RANGE = (0.28, 0.45)
_PLACEMENT_RADIUS = 1.2
_OBJECT_GAP = 0.15
_MIN_RELATION_CLARITY = 1.5  # dominant offset / other offset for a stated relation
_MAX_PLACEMENT_TRIES = 100
_MAX_LAYOUT_TRIES = 50
ELEVATION_RANGE_DEG = (15.0, 35.0)
_DISTANCE_RANGE = (3.3, 4.0)
_CENTER_HEIGHT = 0.3


@dataclass(frozen=True)
class SceneObject:
    """One object resting on the floor at ``position`` (x, y), turned by ``yaw_deg`` about z.

    ``size`` s sets the proportions: a cube has edge 2s; a sphere radius s; a cylinder radius 0.8s
    and height 2s; a cone base radius s and height 2.2s; a torus (lying flat) major radius s and
    tube radius 0.4s. Composites: a tree is a trunk (cylinder, radius 0.22s, height 0.9s, brown)
    under a crown (cone, radius s, height 2.2s, from 0.75s up); a snowman two stacked spheres (radii
    0.8s and 0.55s); a house a cube body (edge 1.8s) under a cone roof (radius 1.3s, height s); a
    table a round top (cylinder, radius 1.1s, 0.12s thick, top at 1.3s) on four legs (radius 0.08s).
    """

    shape: str
    color_name: str
    position: tuple[float, float]
    size: float
    yaw_deg: float = 0.0

    def __post_init__(self):
        if self.shape not in OBJECT_SHAPES:
            raise ValueError(f"SceneObject: shape must be one of {OBJECT_SHAPES}, got {self.shape!r}")
        if self.color_name not in OBJECT_COLORS:
            raise ValueError(f"SceneObject: color_name must be one of {sorted(OBJECT_COLORS)}, got {self.color_name!r}")
        if not self.size > 0:
            raise ValueError(f"SceneObject: size must be positive, got {self.size}")
        if len(self.position) != 2:
            raise ValueError(f"SceneObject: position is (x, y) on the floor, got {self.position!r}")

    @property
    def name(self) -> str:
        """'red cube'."""
        return f"{self.color_name} {self.shape}"

    @property
    def indefinite(self) -> str:
        """'a red cube', 'an orange cone'."""
        article = "an" if self.color_name[0] in "aeiou" else "a"
        return f"{article} {self.name}"

    @property
    def height(self) -> float:
        return _dimensions(self.shape, self.size)["height"]

    @property
    def footprint_radius(self) -> float:
        """Radius of a vertical cylinder about the object's axis that contains it."""
        return _dimensions(self.shape, self.size)["footprint"]

    @property
    def center(self) -> np.ndarray:
        """(3,) centre of the object's bounding box."""
        return np.array([self.position[0], self.position[1], self.height / 2])


_CYLINDER_RADIUS = 0.8  # proportions relative to SceneObject.size, as documented there
_CONE_HEIGHT = 2.2
_TORUS_TUBE_RADIUS = 0.4
_TRUNK_RADIUS, _TRUNK_HEIGHT, _CROWN_BASE = 0.22, 0.9, 0.75
_SNOW_LOWER, _SNOW_UPPER = 0.8, 0.55
_HOUSE_HALF, _ROOF_RADIUS, _ROOF_HEIGHT = 0.9, 1.3, 1.0
_TABLE_RADIUS, _TABLE_TOP, _TABLE_THICKNESS, _LEG_RADIUS, _LEG_OFFSET = 1.1, 1.3, 0.12, 0.08, 0.55


def _dimensions(shape: str, size: float) -> dict[str, float]:
    """Height and footprint radius (about the vertical axis) of a shape of the given size."""
    return {
        "cube": {"height": 2 * size, "footprint": math.sqrt(2) * size},
        "sphere": {"height": 2 * size, "footprint": size},
        "cylinder": {"height": 2 * size, "footprint": _CYLINDER_RADIUS * size},
        "cone": {"height": _CONE_HEIGHT * size, "footprint": size},
        "torus": {"height": 2 * _TORUS_TUBE_RADIUS * size, "footprint": (1 + _TORUS_TUBE_RADIUS) * size},
        "tree": {"height": (_CROWN_BASE + _CONE_HEIGHT) * size, "footprint": size},
        "snowman": {"height": 2 * (_SNOW_LOWER + _SNOW_UPPER) * size, "footprint": _SNOW_LOWER * size},
        "house": {"height": (2 * _HOUSE_HALF + _ROOF_HEIGHT) * size, "footprint": _ROOF_RADIUS * size},
        "table": {"height": _TABLE_TOP * size, "footprint": _TABLE_RADIUS * size},
    }[shape]


def _lifted(samples: primitives.SurfaceSamples, x: float = 0.0, y: float = 0.0, z: float = 0.0):
    return primitives.place(samples, 0.0, np.array([x, y, z]))


def _object_parts(obj: SceneObject, spacing: float) -> list[tuple[primitives.SurfaceSamples, tuple]]:
    """The object's surface samples in world coordinates, as (samples, base RGB) parts."""
    s = obj.size
    own = OBJECT_COLORS[obj.color_name]
    if obj.shape == "cube":
        parts = [(primitives.cube(s, spacing), own)]
    elif obj.shape == "sphere":
        parts = [(primitives.sphere(s, spacing), own)]
    elif obj.shape == "cylinder":
        parts = [(primitives.cylinder(_CYLINDER_RADIUS * s, 2 * s, spacing), own)]
    elif obj.shape == "cone":
        parts = [(primitives.cone(s, _CONE_HEIGHT * s, spacing), own)]
    elif obj.shape == "torus":
        parts = [(primitives.torus(s, _TORUS_TUBE_RADIUS * s, spacing), own)]
    elif obj.shape == "tree":
        trunk = primitives.cylinder(_TRUNK_RADIUS * s, _TRUNK_HEIGHT * s, spacing)
        crown = _lifted(primitives.cone(s, _CONE_HEIGHT * s, spacing), z=_CROWN_BASE * s)
        parts = [(trunk, _TRUNK_COLOR), (crown, own)]
    elif obj.shape == "snowman":
        lower = primitives.sphere(_SNOW_LOWER * s, spacing)
        upper = _lifted(primitives.sphere(_SNOW_UPPER * s, spacing), z=2 * _SNOW_LOWER * s)
        parts = [(lower, own), (upper, own)]
    elif obj.shape == "house":
        body = primitives.cube(_HOUSE_HALF * s, spacing)
        roof = _lifted(primitives.cone(_ROOF_RADIUS * s, _ROOF_HEIGHT * s, spacing), z=2 * _HOUSE_HALF * s)
        parts = [(body, own), (roof, own)]
    else:  # table
        leg_height = (_TABLE_TOP - _TABLE_THICKNESS) * s
        top = _lifted(primitives.cylinder(_TABLE_RADIUS * s, _TABLE_THICKNESS * s, spacing), z=leg_height)
        parts = [(top, own)]
        for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            leg = primitives.cylinder(_LEG_RADIUS * s, leg_height, spacing)
            parts.append((_lifted(leg, dx * _LEG_OFFSET * s, dy * _LEG_OFFSET * s), own))
    offset = np.array([obj.position[0], obj.position[1], 0.0])
    return [(primitives.place(samples, obj.yaw_deg, offset), color) for samples, color in parts]


@dataclass(frozen=True)
class ReferenceView:
    """The orbit camera the caption's relations refer to: it looks at ``center`` from ``distance``."""

    center: tuple[float, float, float]
    distance: float
    elevation_deg: float
    azimuth_deg: float

    def cameras(self, width: int, height: int, fov_deg: float = 60.0) -> Cameras:
        """The reference view as a single camera (the first frame of an orbit starting here)."""
        return orbit_cameras(
            1,
            width,
            height,
            center=self.center,
            distance=self.distance,
            elevation_deg=self.elevation_deg,
            start_azimuth_deg=self.azimuth_deg,
            arc_deg=0.0,
            fov_deg=fov_deg,
        )

    def horizontal_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit ground-plane vectors (right, forward): the camera's image-right axis, and away from it.

        For a camera on an orbit at azimuth a looking at the centre these are (-sin a, cos a) and
        (-cos a, -sin a), the x axis of look_at's frame and its horizontal viewing direction.
        """
        az = math.radians(self.azimuth_deg)
        return np.array([-math.sin(az), math.cos(az)]), np.array([-math.cos(az), -math.sin(az)])


@dataclass(frozen=True)
class SpatialRelation:
    """``objects[subject]`` is ``relation`` ``objects[anchor]`` as seen from the reference view."""

    subject: int
    relation: str
    anchor: int
    clarity: float  # dominant offset / other offset (inf when the other is zero)


def relation_between(subject: SceneObject, anchor: SceneObject, view: ReferenceView) -> tuple[str, float]:
    """Where ``subject`` is relative to ``anchor`` seen from ``view``, along whichever of the lateral
    and depth offsets (in the view's horizontal frame) dominates.

    Returns:
        the relation ("to the left of", "to the right of", "in front of" or "behind") and its clarity,
        the dominant offset over the other one (inf when the other is zero).
    """
    right, forward = view.horizontal_frame()
    offset = np.asarray(subject.position) - np.asarray(anchor.position)
    lateral = float(offset @ right)
    depth = float(offset @ forward)
    if abs(lateral) >= abs(depth):
        relation = "to the right of" if lateral > 0 else "to the left of"
    else:
        relation = "behind" if depth > 0 else "in front of"
    smaller = min(abs(lateral), abs(depth))
    clarity = max(abs(lateral), abs(depth)) / smaller if smaller > 0 else math.inf
    return relation, clarity


def describe_layout(
    objects: Sequence[SceneObject],
    floor_color_name: str,
    view: ReferenceView,
    sky_color_name: Optional[str] = None,
) -> tuple[str, tuple[SpatialRelation, ...]]:
    """Caption and relations of a layout seen from ``view``.

    Object 1 is related to object 0, and each later object to the earlier one with the clearest
    relation, so every object after the first is placed relative to one already named.

    Args:
        sky_color_name: a key of SKY_COLORS to end the caption with "under a ... sky", or None to
            leave the sky out.

    Returns:
        caption, e.g. "a red cube to the left of a blue sphere and a green cone behind the red cube, on
        a grey floor under a clear sky"; relations (len(objects) - 1 of them) in caption order.
    """
    if floor_color_name not in FLOOR_COLORS:
        raise ValueError(f"floor_color_name must be one of {sorted(FLOOR_COLORS)}, got {floor_color_name!r}")
    if sky_color_name is not None and sky_color_name not in SKY_COLORS:
        raise ValueError(f"sky_color_name must be one of {sorted(SKY_COLORS)}, got {sky_color_name!r}")
    if not objects:
        raise ValueError("describe_layout needs at least one object")
    names = [o.color_name for o in objects]
    if len(set(names)) != len(names):
        raise ValueError(f"object colours must be distinct so the caption can name each object, got {names}")
    floor = f"on a {floor_color_name} floor"
    if sky_color_name is not None:
        floor += f" under a {sky_color_name} sky"
    if len(objects) == 1:
        return f"{objects[0].indefinite} {floor}", ()

    relations = []
    for i in range(1, len(objects)):
        candidates = [relation_between(objects[i], objects[j], view) for j in range(i)]
        best = max(range(i), key=lambda j: candidates[j][1])
        relations.append(SpatialRelation(i, candidates[best][0], best, candidates[best][1]))

    first = relations[0]
    clauses = [f"{objects[1].indefinite} {first.relation} {objects[0].indefinite}"]
    clauses += [f"{objects[r.subject].indefinite} {r.relation} the {objects[r.anchor].name}" for r in relations[1:]]
    if len(clauses) == 1:
        return f"{clauses[0]} {floor}", tuple(relations)
    listed = ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"{listed}, {floor}", tuple(relations)


@dataclass
class SyntheticScene:
    """A generated scene: its Gaussians, the layout it came from and its caption.

    Attributes:
        gaussians: the scene as Gaussians (SH degree 0, float32, CPU).
        objects: the primitives on the floor.
        floor_color_name: key of FLOOR_COLORS.
        floor_half_size: the floor is the square [-h, h]^2 at z = 0.
        reference_view: the camera the caption refers to; also the default orbit of the scene.
        relations: the spatial relations stated in the caption.
        caption: text description of the layout.
        sky_color_name: key of SKY_COLORS: the background clips of the scene are rendered over.
    """

    gaussians: GaussianScene
    objects: tuple[SceneObject, ...]
    floor_color_name: str
    floor_half_size: float
    reference_view: ReferenceView
    relations: tuple[SpatialRelation, ...]
    caption: str
    sky_color_name: str = DEFAULT_SKY

    @property
    def sky_color(self) -> tuple[float, float, float]:
        """RGB in [0, 1] of the sky."""
        return SKY_COLORS[self.sky_color_name]

    @property
    def split(self) -> str:
        """The split the layout belongs to: "heldout" if an object is a pair of HELDOUT_COMBINATIONS."""
        return "heldout" if any((o.color_name, o.shape) in HELDOUT_COMBINATIONS for o in self.objects) else "train"


def _shade(colors: np.ndarray, normals: np.ndarray) -> np.ndarray:
    lambert = np.clip(normals @ _SUN_DIRECTION, 0.0, None)
    return colors * (_AMBIENT + (1.0 - _AMBIENT) * lambert)[:, None]


def _floor_colors(samples: primitives.SurfaceSamples, base: np.ndarray, objects: Sequence[SceneObject]) -> np.ndarray:
    """Checker pattern, lighting and a soft contact shadow under each object."""
    tiles = np.floor(samples.points[:, :2] / _FLOOR_CHECKER_SIZE).astype(np.int64).sum(axis=1) % 2
    brightness = np.where(tiles == 0, 1.0, _FLOOR_CHECKER_DARKENING)
    for obj in objects:
        distance = np.linalg.norm(samples.points[:, :2] - np.asarray(obj.position), axis=1)
        brightness = brightness * (
            1.0 - _CONTACT_SHADOW_STRENGTH * np.exp(-0.5 * (distance / obj.footprint_radius) ** 2)
        )
    return _shade(base[None, :] * brightness[:, None], samples.normals)


def build_scene(
    objects: Sequence[SceneObject],
    floor_color_name: str,
    reference_view: ReferenceView,
    *,
    floor_half_size: float = 3.5,
    surface_spacing: float = 0.08,
    floor_spacing: float = 0.2,
    texture_seed: int = 0,
    sky_color_name: str = DEFAULT_SKY,
) -> SyntheticScene:
    """Gaussians and caption for an explicit layout.

    Args:
        objects: objects on the floor; distinct colours (the caption names objects by colour).
        floor_color_name: key of FLOOR_COLORS.
        sky_color_name: key of SKY_COLORS (named in the caption; the clips' background).
        reference_view: the view the caption's spatial relations refer to.
        floor_half_size: the floor is the square [-h, h]^2 at z = 0.
        surface_spacing: sample spacing on the objects (world units); sets their Gaussian count.
        floor_spacing: sample spacing on the floor.
        texture_seed: seed of the small per-Gaussian colour noise.
    """
    caption, relations = describe_layout(objects, floor_color_name, reference_view, sky_color_name)
    if not (surface_spacing > 0 and floor_spacing > 0 and floor_half_size > 0):
        raise ValueError("surface_spacing, floor_spacing and floor_half_size must be positive")

    floor = primitives.floor_square(floor_half_size, floor_spacing)
    parts = [floor]
    colors = [_floor_colors(floor, np.asarray(FLOOR_COLORS[floor_color_name]), objects)]
    for obj in objects:
        for surface, base in _object_parts(obj, surface_spacing):
            parts.append(surface)
            colors.append(_shade(np.tile(base, (len(surface), 1)), surface.normals))
    samples = primitives.SurfaceSamples.concatenate(parts)
    rgb = np.concatenate(colors)
    rng = np.random.default_rng(texture_seed)
    rgb = np.clip(rgb + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, size=rgb.shape), 0.0, 1.0)

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    n = len(samples)
    gaussians = GaussianScene.from_activated(
        means=as_tensor(samples.points),
        rotations=as_tensor(matrix_to_quaternion(torch.from_numpy(samples.rotation_matrices())).numpy()),
        scales=as_tensor(samples.sigmas()),
        opacities=torch.full((n,), _OPACITY),
        sh=rgb_to_sh_dc(as_tensor(rgb))[:, None, :],
    )
    return SyntheticScene(
        gaussians=gaussians,
        objects=tuple(objects),
        floor_color_name=floor_color_name,
        floor_half_size=floor_half_size,
        reference_view=reference_view,
        relations=relations,
        caption=caption,
        sky_color_name=sky_color_name,
    )


def split_of_seed(seed: int) -> str:
    """The split a scene seed belongs to: "heldout" for multiples of HELDOUT_SEED_MODULUS, else "train"."""
    return "heldout" if int(seed) % HELDOUT_SEED_MODULUS == 0 else "train"


def _sample_kinds(rng: np.random.Generator, num_objects: int, split: str) -> list[tuple[str, str]]:
    """(colour, shape) of each object: distinct colours; in "train" no held-out pair, in "heldout"
    one held-out pair at a random position (the others drawn as in training)."""
    colors = sorted(OBJECT_COLORS)
    forced = None
    if split == "heldout":
        pairs = sorted(HELDOUT_COMBINATIONS)
        forced = pairs[int(rng.integers(len(pairs)))]
        colors = [c for c in colors if c != forced[0]]
    others = [str(c) for c in rng.choice(colors, size=num_objects - (forced is not None), replace=False)]
    kinds = []
    for color in others:
        allowed = [shape for shape in OBJECT_SHAPES if (color, shape) not in HELDOUT_COMBINATIONS]
        kinds.append((color, str(allowed[int(rng.integers(len(allowed)))])))
    if forced is not None:
        kinds.insert(int(rng.integers(num_objects)), forced)
    return kinds


def _sample_layout(
    rng: np.random.Generator, num_objects: int, view: ReferenceView, split: str = "train"
) -> list[SceneObject]:
    """Objects at random non-overlapping positions whose caption relations are all clear.

    Objects are placed one by one by rejection sampling; when one finds no room (early objects can
    crowd the area), the whole layout is drawn again. The retries continue the same random stream,
    so the result is still a function of the seed.
    """
    for _ in range(_MAX_LAYOUT_TRIES):
        objects: list[SceneObject] = []
        for color, shape in _sample_kinds(rng, num_objects, split):
            placed = _place_object(rng, color, shape, objects, view)
            if placed is None:
                break
            objects.append(placed)
        else:
            return objects
    raise RuntimeError(
        f"could not lay out {num_objects} objects in {_MAX_LAYOUT_TRIES} tries; the placement area is too small"
    )


def _place_object(
    rng: np.random.Generator, color: str, shape: str, placed: Sequence[SceneObject], view: ReferenceView
) -> Optional[SceneObject]:
    """A random ``color`` ``shape`` that fits among ``placed``, or None if none was found."""
    size = float(rng.uniform(*_OBJECT_SIZE_RANGE))
    yaw = float(rng.uniform(0.0, 90.0))
    for _ in range(_MAX_PLACEMENT_TRIES):
        radius = _PLACEMENT_RADIUS * math.sqrt(rng.uniform())
        angle = rng.uniform(0.0, 2 * math.pi)
        candidate = SceneObject(shape, color, (radius * math.cos(angle), radius * math.sin(angle)), size, yaw)
        if _fits(candidate, placed, view):
            return candidate
    return None


def _fits(candidate: SceneObject, placed: Sequence[SceneObject], view: ReferenceView) -> bool:
    """No overlap with placed objects, and a clear relation to at least one of them."""
    for other in placed:
        gap = np.linalg.norm(np.subtract(candidate.position, other.position))
        if gap < candidate.footprint_radius + other.footprint_radius + _OBJECT_GAP:
            return False
    if not placed:
        return True
    return max(relation_between(candidate, o, view)[1] for o in placed) >= _MIN_RELATION_CLARITY


def generate_scene(
    seed: int,
    *,
    num_objects: Optional[int] = None,
    surface_spacing: float = 0.08,
    floor_spacing: float = 0.2,
) -> SyntheticScene:
    """A random scene (2 to 4 objects unless ``num_objects`` is given), reproducible from ``seed``.

    The seed's split (:func:`split_of_seed`) decides the colour-shape pairs: a training seed never
    draws a pair of HELDOUT_COMBINATIONS, a held-out seed always has one. The sky tint is drawn too.
    With the default spacings a scene has roughly 1,500 to 3,500 Gaussians.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    if num_objects is None:
        num_objects = int(rng.integers(2, 5))
    if not 1 <= num_objects <= 4:
        raise ValueError(f"num_objects must be in 1..4 (the floor has room for a few), got {num_objects}")
    view = ReferenceView(
        center=(0.0, 0.0, _CENTER_HEIGHT),
        distance=float(rng.uniform(*_DISTANCE_RANGE)),
        elevation_deg=float(rng.uniform(*ELEVATION_RANGE_DEG)),
        azimuth_deg=float(rng.uniform(0.0, 360.0)),
    )
    objects = _sample_layout(rng, num_objects, view, split_of_seed(seed))
    floor_color = str(rng.choice(sorted(FLOOR_COLORS)))
    texture_seed = int(rng.integers(0, 2**31 - 1))
    sky = str(rng.choice(sorted(SKY_COLORS)))
    return build_scene(
        objects,
        floor_color,
        view,
        surface_spacing=surface_spacing,
        floor_spacing=floor_spacing,
        texture_seed=texture_seed,
        sky_color_name=sky,
    )
