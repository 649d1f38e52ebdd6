"""Surfaces of simple shapes sampled as small flat Gaussians.

Each shape is sampled on a deterministic, roughly even pattern (grids and golden-angle spirals, no
random numbers), and every sample becomes a flat disc-like Gaussian lying in the surface: its two
tangential standard deviations follow the local sample spacing so that neighbours overlap and the
surface renders solid, and its normal standard deviation is a small fraction of that.

Shapes are built in a local frame with the base resting on the plane z = 0 and the vertical axis
through the origin; :func:`place` turns (yaw about z) and moves them. Bottom faces that would lie on
the floor are not sampled since no camera above the floor sees them.

All arrays here are float64 numpy; the scene builder converts to torch at the end, which keeps the
geometry bit-identical across runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("cube", "sphere", "cylinder", "cone", "torus")

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

# Tangential standard deviation as a fraction of the sample spacing: large enough that neighbouring
# discs overlap (no holes between samples), small enough that edges stay crisp.
TANGENT_SIGMA_PER_SPACING = 0.6
# Normal standard deviation as a fraction of the spacing: thin, "flat-ish" Gaussians.
NORMAL_SIGMA_PER_SPACING = 0.08


@dataclass
class SurfaceSamples:
    """Oriented surface samples.

    Attributes:
        points: (P, 3) positions.
        normals: (P, 3) unit outward normals.
        tangents: (P, 3) unit tangents orthogonal to the normals.
        spacing: (P, 2) sample spacing along the tangent and along normal x tangent.
    """

    points: np.ndarray
    normals: np.ndarray
    tangents: np.ndarray
    spacing: np.ndarray

    def __len__(self) -> int:
        return self.points.shape[0]

    @staticmethod
    def concatenate(parts: list[SurfaceSamples]) -> SurfaceSamples:
        return SurfaceSamples(
            points=np.concatenate([p.points for p in parts]),
            normals=np.concatenate([p.normals for p in parts]),
            tangents=np.concatenate([p.tangents for p in parts]),
            spacing=np.concatenate([p.spacing for p in parts]),
        )

    def rotation_matrices(self) -> np.ndarray:
        """(P, 3, 3) rotations whose columns are (tangent, normal x tangent, normal): right-handed."""
        bitangents = np.cross(self.normals, self.tangents)
        return np.stack([self.tangents, bitangents, self.normals], axis=-1)

    def sigmas(self) -> np.ndarray:
        """(P, 3) standard deviations along (tangent, bitangent, normal)."""
        tangential = TANGENT_SIGMA_PER_SPACING * self.spacing
        normal = NORMAL_SIGMA_PER_SPACING * self.spacing.min(axis=1, keepdims=True)
        return np.concatenate([tangential, normal], axis=1)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _any_tangent(normals: np.ndarray) -> np.ndarray:
    """(P, 3) unit vectors orthogonal to the normals (for samples whose in-plane direction is arbitrary)."""
    helper = np.zeros_like(normals)
    mostly_vertical = np.abs(normals[:, 2]) > 0.9
    helper[mostly_vertical, 0] = 1.0
    helper[~mostly_vertical, 2] = 1.0
    return _normalize(np.cross(helper, normals))


def _isotropic(points: np.ndarray, normals: np.ndarray, spacing: float) -> SurfaceSamples:
    return SurfaceSamples(points, normals, _any_tangent(normals), np.full((len(points), 2), spacing))


def _count(area: float, spacing: float) -> int:
    """Samples needed to cover ``area`` at ``spacing`` (at least a handful)."""
    return max(8, round(area / spacing**2))


def _cell_centres(length: float, spacing: float) -> tuple[np.ndarray, float]:
    """Centres of ceil(length / spacing) equal cells of [0, length], and the actual cell size."""
    n = max(1, math.ceil(length / spacing))
    step = length / n
    return (np.arange(n) + 0.5) * step, step


def floor_square(half_size: float, spacing: float) -> SurfaceSamples:
    """The upward-facing square [-half_size, half_size]^2 at z = 0 on a regular grid."""
    coords, step = _cell_centres(2 * half_size, spacing)
    x, y = np.meshgrid(coords - half_size, coords - half_size, indexing="ij")
    n = x.size
    return SurfaceSamples(
        points=np.stack([x.ravel(), y.ravel(), np.zeros(n)], axis=1),
        normals=np.tile([0.0, 0.0, 1.0], (n, 1)),
        tangents=np.tile([1.0, 0.0, 0.0], (n, 1)),
        spacing=np.full((n, 2), step),
    )


def sunflower_disc(radius: float, spacing: float, height: float) -> SurfaceSamples:
    """An upward-facing disc of ``radius`` at z = ``height`` on a golden-angle spiral."""
    n = _count(math.pi * radius**2, spacing)
    k = np.arange(n)
    r = radius * np.sqrt((k + 0.5) / n)
    theta = k * _GOLDEN_ANGLE
    points = np.stack([r * np.cos(theta), r * np.sin(theta), np.full(n, height)], axis=1)
    normals = np.tile([0.0, 0.0, 1.0], (n, 1))
    return _isotropic(points, normals, math.sqrt(math.pi * radius**2 / n))


def cube(half_size: float, spacing: float) -> SurfaceSamples:
    """An axis-aligned cube of edge 2 * half_size standing on z = 0 (five faces, no bottom)."""
    coords, step = _cell_centres(2 * half_size, spacing)
    a, b = np.meshgrid(coords - half_size, coords - half_size, indexing="ij")
    a, b = a.ravel(), b.ravel()
    top = np.full_like(a, 2 * half_size)
    wall = np.full_like(a, half_size)
    z = b + half_size
    # (points, normal, tangent) per face; the tangent runs along the grid's first coordinate.
    faces = [
        (np.stack([a, b, top], 1), (0, 0, 1), (1, 0, 0)),
        (np.stack([wall, a, z], 1), (1, 0, 0), (0, 1, 0)),
        (np.stack([-wall, a, z], 1), (-1, 0, 0), (0, 1, 0)),
        (np.stack([a, wall, z], 1), (0, 1, 0), (1, 0, 0)),
        (np.stack([a, -wall, z], 1), (0, -1, 0), (1, 0, 0)),
    ]
    parts = [
        SurfaceSamples(
            points=pts,
            normals=np.tile(np.asarray(normal, float), (len(pts), 1)),
            tangents=np.tile(np.asarray(tangent, float), (len(pts), 1)),
            spacing=np.full((len(pts), 2), step),
        )
        for pts, normal, tangent in faces
    ]
    return SurfaceSamples.concatenate(parts)


def sphere(radius: float, spacing: float) -> SurfaceSamples:
    """A sphere resting on z = 0 (centre at z = radius), on a Fibonacci lattice."""
    n = _count(4 * math.pi * radius**2, spacing)
    k = np.arange(n)
    cos_polar = 1.0 - 2.0 * (k + 0.5) / n
    sin_polar = np.sqrt(1.0 - cos_polar**2)
    theta = k * _GOLDEN_ANGLE
    normals = np.stack([sin_polar * np.cos(theta), sin_polar * np.sin(theta), cos_polar], axis=1)
    points = radius * normals + np.array([0.0, 0.0, radius])
    return _isotropic(points, normals, math.sqrt(4 * math.pi * radius**2 / n))


def cylinder(radius: float, height: float, spacing: float) -> SurfaceSamples:
    """A vertical cylinder standing on z = 0: side wall and top cap."""
    angles, angle_step = _cell_centres(2 * math.pi, spacing / radius)
    heights, height_step = _cell_centres(height, spacing)
    theta, z = np.meshgrid(angles, heights, indexing="ij")
    theta, z = theta.ravel(), z.ravel()
    normals = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], axis=1)
    side = SurfaceSamples(
        points=np.stack([radius * np.cos(theta), radius * np.sin(theta), z], axis=1),
        normals=normals,
        tangents=np.stack([-np.sin(theta), np.cos(theta), np.zeros_like(theta)], axis=1),
        spacing=np.tile([radius * angle_step, height_step], (len(theta), 1)),
    )
    return SurfaceSamples.concatenate([side, sunflower_disc(radius, spacing, height)])


def cone(radius: float, height: float, spacing: float) -> SurfaceSamples:
    """A vertical cone with its base disc on z = 0 and apex at z = height (lateral surface only).

    Samples follow a golden-angle spiral whose radial coordinate grows as sqrt(k), which spreads them
    evenly over the lateral area (the area within slant fraction s of the apex grows as s^2).
    """
    slant = math.hypot(radius, height)
    n = _count(math.pi * radius * slant, spacing)
    k = np.arange(n)
    fraction = np.sqrt((k + 0.5) / n)  # 0 at the apex, 1 at the base rim
    theta = k * _GOLDEN_ANGLE
    r = radius * fraction
    points = np.stack([r * np.cos(theta), r * np.sin(theta), height * (1.0 - fraction)], axis=1)
    normals = _normalize(np.stack([height * np.cos(theta), height * np.sin(theta), np.full(n, radius)], axis=1))
    tangents = np.stack([-np.sin(theta), np.cos(theta), np.zeros(n)], axis=1)
    return SurfaceSamples(points, normals, tangents, np.full((n, 2), math.sqrt(math.pi * radius * slant / n)))


def torus(major_radius: float, minor_radius: float, spacing: float) -> SurfaceSamples:
    """A torus lying flat on z = 0 (axis vertical, tube centre at z = minor_radius).

    A (major angle, minor angle) grid; the spacing along the major circle varies with the distance
    from the axis, so each sample gets its own tangential spacing.
    """
    us, u_step = _cell_centres(2 * math.pi, spacing / major_radius)
    vs, v_step = _cell_centres(2 * math.pi, spacing / minor_radius)
    u, v = np.meshgrid(us, vs, indexing="ij")
    u, v = u.ravel(), v.ravel()
    ring = major_radius + minor_radius * np.cos(v)
    points = np.stack([ring * np.cos(u), ring * np.sin(u), minor_radius + minor_radius * np.sin(v)], axis=1)
    normals = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], axis=1)
    tangents = np.stack([-np.sin(u), np.cos(u), np.zeros_like(u)], axis=1)
    spacing_uv = np.stack([ring * u_step, np.full_like(u, minor_radius * v_step)], axis=1)
    return SurfaceSamples(points, normals, tangents, spacing_uv)


def place(samples: SurfaceSamples, yaw_deg: float, offset: np.ndarray) -> SurfaceSamples:
    """The samples turned by ``yaw_deg`` about the vertical axis, then moved by ``offset`` (3,)."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return SurfaceSamples(
        points=samples.points @ rotation.T + offset,
        normals=samples.normals @ rotation.T,
        tangents=samples.tangents @ rotation.T,
        spacing=samples.spacing,
    )
