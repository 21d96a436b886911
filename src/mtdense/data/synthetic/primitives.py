"""Analytic ray–primitive intersections and surface geometry for the synthetic renderer.

World frame: metres, ``y`` up (the floor / ground is ``y = 0``), ``x`` and ``z`` horizontal. A ray is
``o + t·d``; the renderer makes the camera-frame ``z`` component of every primary ``d`` equal to 1, so
the ``t`` of a primary hit *is* the z-depth. Every function is vectorised over rays: ``o`` is a
3-tuple of Python floats (one origin, primary rays) or of ``(M,)`` float32 arrays (shadow rays), ``d``
is a 3-tuple of float32 arrays of any common shape. Intersections return ``t`` (``inf`` = miss) for
the first surface crossed at ``t > EPS_T``; hits from inside a solid are ignored (the camera and
shadow-ray origins are never inside one), except for :class:`RoomShell`, which is seen from inside.

Every primitive is convex, so a point on it that faces a light cannot be shadowed by the primitive
itself; the shading code relies on this to skip self-intersection tests.

Faces are numbered ``2·axis + (side > 0)`` in the primitive's local frame (0: −x, 1: +x, 2: −y / bottom,
3: +y / top, 4: −z, 5: +z); cylinders use 0 for the side, spheres 0 for everything. Each face has 2-D
*face coordinates* ``(a, b)`` in metres used by textures and decals: for faces normal to x ``(z, y)``,
to y ``(x, z)``, to z ``(x, y)``; for a cylinder side ``(r·azimuth, y)``, for a sphere
``(r·azimuth, y)`` (local coordinates, relative to the primitive's centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .materials import Material

EPS_T = 1e-4
"""Smallest accepted hit distance (metres), so that rays leaving a surface do not re-hit it."""

Vec3 = tuple  # 3-tuple of floats or of arrays


@dataclass
class Surface:
    """What a face (or a decal on it) shows: semantic class, instance id (> 0) and material."""

    label: int
    instance: int
    material: Material


@dataclass
class Decal:
    """A rectangle ``a0 ≤ a ≤ a1, b0 ≤ b ≤ b1`` in the face coordinates of ``face`` with its own surface.

    Decals are coplanar with their face (windows, doors, rugs, drawer fronts), so they change labels,
    instances and texture but not depth or normals.
    """

    face: int
    rect: tuple[float, float, float, float]
    surface: Surface


@dataclass
class Primitive:
    """Base class: a convex solid whose faces show :class:`Surface` s.

    ``surface`` is shown on every face unless ``face_surfaces`` overrides a face; ``decals`` are
    applied on top. ``casts_shadow=False`` drops a primitive from shadow tests (ground slabs, which
    cannot occlude anything that lies above them).
    """

    surface: Surface
    face_surfaces: dict[int, Surface] = field(default_factory=dict)
    decals: list[Decal] = field(default_factory=list)
    casts_shadow: bool = True

    def intersect(self, o: Vec3, d: Vec3) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def geometry(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Outward (towards the viewer) world normals ``(3, M)``, faces ``(M,)``, face coords a, b."""
        raise NotImplementedError  # pragma: no cover - abstract

    def corners(self) -> np.ndarray:
        """``(8, 3)`` corners of a box enclosing the primitive, in the order of :data:`BOX_EDGES`."""
        raise NotImplementedError  # pragma: no cover - abstract

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        raise NotImplementedError  # pragma: no cover - abstract

    def surfaces_list(self) -> list[Surface]:
        """Every surface the primitive can show (index 0 = default)."""
        return [self.surface, *self.face_surfaces.values(), *(dc.surface for dc in self.decals)]


# Corner k of a box has local coordinates (±hx, ±hy, ±hz) with bit 0 → x, bit 1 → y, bit 2 → z.
_CORNER_SIGNS = np.array([[(k >> i & 1) * 2 - 1 for i in range(3)] for k in range(8)], dtype=np.float64)
BOX_EDGES = np.array(
    [(a, a | 1 << i) for a in range(8) for i in range(3) if not a >> i & 1], dtype=np.int64
)  # the 12 edges as pairs of corner indices


def _face_coords(axis: np.ndarray, qx: np.ndarray, qy: np.ndarray, qz: np.ndarray):
    a = np.where(axis == 0, qz, qx)
    b = np.where(axis == 1, qz, qy)
    return a, b


def _box_face(qx, qy, qz, hx: float, hy: float, hz: float):
    """Axis (0/1/2) and side (bool, positive) of the box face nearest to local point q."""
    rx, ry, rz = np.abs(qx) / hx, np.abs(qy) / hy, np.abs(qz) / hz
    axis = np.where(rx >= ry, np.where(rx >= rz, 0, 2), np.where(ry >= rz, 1, 2))
    coord = np.where(axis == 0, qx, np.where(axis == 1, qy, qz))
    return axis, coord > 0


@dataclass
class Box(Primitive):
    """A box of half-extents ``half`` centred at ``center``, rotated by ``yaw`` (radians) about +y.

    Intersection: the slab method (Kay & Kajiya 1986) in the box's local frame.
    """

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    half: tuple[float, float, float] = (0.5, 0.5, 0.5)
    yaw: float = 0.0

    def __post_init__(self) -> None:
        self.center = tuple(float(v) for v in self.center)
        self.half = tuple(float(v) for v in self.half)
        self._c, self._s = math.cos(self.yaw), math.sin(self.yaw)

    # world → local: lx = c·wx − s·wz, lz = s·wx + c·wz (inverse of the yaw rotation)
    def _to_local(self, x, y, z):
        if self.yaw == 0.0:
            return x, y, z
        c, s = self._c, self._s
        return c * x - s * z, y, s * x + c * z

    def _to_world(self, x, y, z):
        if self.yaw == 0.0:
            return x, y, z
        c, s = self._c, self._s
        return c * x + s * z, y, -s * x + c * z

    def intersect(self, o: Vec3, d: Vec3) -> np.ndarray:
        cx, cy, cz = self.center
        ol = self._to_local(o[0] - cx, o[1] - cy, o[2] - cz)
        dl = self._to_local(*d)
        tnear = tfar = None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for oi, di, h in zip(ol, dl, self.half, strict=True):
                inv = 1.0 / di
                t1 = (-h - oi) * inv
                t2 = (h - oi) * inv
                lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
                tnear = lo if tnear is None else np.maximum(tnear, lo)
                tfar = hi if tfar is None else np.minimum(tfar, hi)
            hit = (tnear <= tfar) & (tnear > EPS_T)
        return np.where(hit, tnear, np.float32(np.inf))

    def geometry(self, p: np.ndarray):
        cx, cy, cz = self.center
        q = self._to_local(p[0] - cx, p[1] - cy, p[2] - cz)
        axis, pos = _box_face(*q, *self.half)
        face = (2 * axis + pos).astype(np.int8)
        sign = np.where(pos, np.float32(1.0), np.float32(-1.0))
        nl = [np.where(axis == i, sign, np.float32(0.0)) for i in range(3)]
        n = np.stack(self._to_world(*nl))
        a, b = _face_coords(axis, *q)
        return n, face, a, b

    def corners(self) -> np.ndarray:
        local = _CORNER_SIGNS * np.asarray(self.half)
        w = self._to_world(local[:, 0], local[:, 1], local[:, 2])
        return np.stack(w, axis=1) + np.asarray(self.center)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.center), float(np.linalg.norm(self.half))


@dataclass
class RoomShell(Primitive):
    """The inside of the axis-aligned box ``lo ≤ p ≤ hi`` (a room seen from within).

    Every ray starting inside hits it at ``t = min_axis max((lo − o)/d, (hi − o)/d)``; normals point
    inwards. Face numbering is by the wall's position: face 1 is the wall at ``x = hi_x`` (its normal
    is −x). Face coordinates are relative to the room centre.
    """

    lo: tuple[float, float, float] = (-1.0, 0.0, -1.0)
    hi: tuple[float, float, float] = (1.0, 2.5, 1.0)

    def __post_init__(self) -> None:
        self.lo = tuple(float(v) for v in self.lo)
        self.hi = tuple(float(v) for v in self.hi)
        self.center = tuple((a + b) / 2 for a, b in zip(self.lo, self.hi, strict=True))
        self.half = tuple((b - a) / 2 for a, b in zip(self.lo, self.hi, strict=True))
        self.casts_shadow = False

    def intersect(self, o: Vec3, d: Vec3) -> np.ndarray:
        t = None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for oi, di, lo, hi in zip(o, d, self.lo, self.hi, strict=True):
                inv = 1.0 / di
                ti = np.maximum((lo - oi) * inv, (hi - oi) * inv)
                t = ti if t is None else np.minimum(t, ti)
        return np.where(t > EPS_T, t, np.float32(np.inf))

    def geometry(self, p: np.ndarray):
        cx, cy, cz = self.center
        q = (p[0] - cx, p[1] - cy, p[2] - cz)
        axis, pos = _box_face(*q, *self.half)
        face = (2 * axis + pos).astype(np.int8)
        sign = np.where(pos, np.float32(-1.0), np.float32(1.0))  # inward
        n = np.stack([np.where(axis == i, sign, np.float32(0.0)) for i in range(3)])
        a, b = _face_coords(axis, *q)
        return n, face, a, b

    def corners(self) -> np.ndarray:
        return _CORNER_SIGNS * np.asarray(self.half) + np.asarray(self.center)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.center), float(np.linalg.norm(self.half))


@dataclass
class Cylinder(Primitive):
    """A vertical (y-axis) closed cylinder of ``radius`` from ``y0`` to ``y1`` around ``(x, z)``."""

    x: float = 0.0
    z: float = 0.0
    radius: float = 0.5
    y0: float = 0.0
    y1: float = 1.0

    def __post_init__(self) -> None:
        self.x, self.z, self.radius = float(self.x), float(self.z), float(self.radius)
        self.y0, self.y1 = float(self.y0), float(self.y1)

    def intersect(self, o: Vec3, d: Vec3) -> np.ndarray:
        fx, fz = o[0] - self.x, o[2] - self.z
        dx, dy, dz = d
        r2 = self.radius * self.radius
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            a = dx * dx + dz * dz
            hb = fx * dx + fz * dz
            c = fx * fx + fz * fz - r2
            disc = hb * hb - a * c
            ts = (-hb - np.sqrt(np.maximum(disc, 0.0))) / a
            ys = o[1] + ts * dy
            ok = (disc >= 0) & (ts > EPS_T) & (ys >= self.y0) & (ys <= self.y1)
            t = np.where(ok, ts, np.float32(np.inf))
            if np.ndim(o[1]) == 0:  # one origin: only the cap facing it can be seen
                caps = [self.y1] if o[1] > self.y1 else [self.y0] if o[1] < self.y0 else []
            else:
                caps = [self.y0, self.y1]
            for yc in caps:
                tc = (yc - o[1]) / dy
                xc, zc = fx + tc * dx, fz + tc * dz
                okc = (tc > EPS_T) & (xc * xc + zc * zc <= r2)
                t = np.where(okc & (tc < t), tc, t)
        return t

    def geometry(self, p: np.ndarray):
        ym, hh = (self.y0 + self.y1) / 2, (self.y1 - self.y0) / 2
        qx, qy, qz = p[0] - self.x, p[1] - ym, p[2] - self.z
        rad = np.sqrt(qx * qx + qz * qz)
        cap = np.abs(np.abs(qy) - hh) < np.abs(rad - self.radius)
        face = np.where(cap, np.where(qy > 0, 3, 2), 0).astype(np.int8)
        inv = 1.0 / np.maximum(rad, 1e-9)
        zero = np.float32(0.0)
        n = np.stack(
            [
                np.where(cap, zero, qx * inv),
                np.where(cap, np.where(qy > 0, np.float32(1.0), np.float32(-1.0)), zero),
                np.where(cap, zero, qz * inv),
            ]
        ).astype(np.float32)
        a = np.where(cap, qx, self.radius * np.arctan2(qz, qx))
        b = np.where(cap, qz, qy)
        return n, face, a, b

    def corners(self) -> np.ndarray:
        ym, hh = (self.y0 + self.y1) / 2, (self.y1 - self.y0) / 2
        return _CORNER_SIGNS * np.array([self.radius, hh, self.radius]) + np.array([self.x, ym, self.z])

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        ym, hh = (self.y0 + self.y1) / 2, (self.y1 - self.y0) / 2
        return np.array([self.x, ym, self.z]), math.hypot(self.radius, hh)


@dataclass
class Sphere(Primitive):
    """A sphere of ``radius`` around ``center``."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 0.5

    def __post_init__(self) -> None:
        self.center = tuple(float(v) for v in self.center)
        self.radius = float(self.radius)

    def intersect(self, o: Vec3, d: Vec3) -> np.ndarray:
        fx, fy, fz = o[0] - self.center[0], o[1] - self.center[1], o[2] - self.center[2]
        dx, dy, dz = d
        with np.errstate(divide="ignore", invalid="ignore"):
            a = dx * dx + dy * dy + dz * dz
            hb = fx * dx + fy * dy + fz * dz
            c = fx * fx + fy * fy + fz * fz - self.radius * self.radius
            disc = hb * hb - a * c
            t = (-hb - np.sqrt(np.maximum(disc, 0.0))) / a
            ok = (disc >= 0) & (t > EPS_T)
        return np.where(ok, t, np.float32(np.inf))

    def geometry(self, p: np.ndarray):
        qx, qy, qz = p[0] - self.center[0], p[1] - self.center[1], p[2] - self.center[2]
        inv = np.float32(1.0 / self.radius)
        n = np.stack([qx * inv, qy * inv, qz * inv]).astype(np.float32)
        face = np.zeros(qx.shape, np.int8)
        return n, face, self.radius * np.arctan2(qz, qx), qy

    def corners(self) -> np.ndarray:
        return _CORNER_SIGNS * self.radius + np.asarray(self.center)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.center), self.radius
