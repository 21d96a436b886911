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

The kernels (``box_intersect``, ``box_geometry``, ...) take the primitive's parameters as a tuple of
columns that are either Python floats (one primitive) or arrays aligned with the rays (many
primitives at once: the renderer gathers per-ray parameters from a table and tests all rays of one
primitive type in a single vectorised call). The classes hold one primitive's parameters.

Faces are numbered ``2·axis + (side > 0)`` in the primitive's local frame (0: −x, 1: +x, 2: −y / bottom,
3: +y / top, 4: −z, 5: +z); cylinders use 0 for the side, spheres 0 for everything. Each face has 2-D
*face coordinates* ``(a, b)`` in metres used by textures and decals: for faces normal to x ``(z, y)``,
to y ``(x, z)``, to z ``(x, y)``; for a cylinder side ``(r·azimuth, y)``, for a sphere
``(r·azimuth, y)`` (local coordinates, relative to the primitive's centre).
"""

from __future__ import annotations

import enum
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


class PrimType(enum.IntEnum):
    """Primitive kinds; the renderer sorts primitives by kind to batch them."""

    ROOM = 0
    BOX = 1
    CYLINDER = 2
    SPHERE = 3


# ----------------------------------------------------------------------------------------- kernels
# Corner k of a box has local coordinates (±hx, ±hy, ±hz) with bit 0 → x, bit 1 → y, bit 2 → z.
_CORNER_SIGNS = np.array([[(k >> i & 1) * 2 - 1 for i in range(3)] for k in range(8)], dtype=np.float64)
BOX_EDGES = np.array(
    [(a, a | 1 << i) for a in range(8) for i in range(3) if not a >> i & 1], dtype=np.int64
)  # the 12 edges as pairs of corner indices
_INF = np.float32(np.inf)


def _face_coords(axis: np.ndarray, qx: np.ndarray, qy: np.ndarray, qz: np.ndarray):
    a = np.where(axis == 0, qz, qx)
    b = np.where(axis == 1, qz, qy)
    return a, b


def _box_face(qx, qy, qz, hx, hy, hz):
    """Axis (0/1/2) and side (bool, positive) of the box face nearest to local point q."""
    rx, ry, rz = np.abs(qx) / hx, np.abs(qy) / hy, np.abs(qz) / hz
    axis = np.where(rx >= ry, np.where(rx >= rz, 0, 2), np.where(ry >= rz, 1, 2))
    coord = np.where(axis == 0, qx, np.where(axis == 1, qy, qz))
    return axis, coord > 0


def _rotated(cs, sn) -> bool:
    return not (np.ndim(cs) == 0 and cs == 1.0 and sn == 0.0)


def box_intersect(o: Vec3, d: Vec3, prm: tuple) -> np.ndarray:
    """Entry ``t`` of rays into boxes ``prm = (cx, cy, cz, hx, hy, hz, cos yaw, sin yaw)``.

    Slab method (Kay & Kajiya 1986) in the box frame, where world → local is
    ``lx = c·x − s·z, lz = s·x + c·z``.
    """
    cx, cy, cz, hx, hy, hz, cs, sn = prm
    fx, fy, fz = o[0] - cx, o[1] - cy, o[2] - cz
    if _rotated(cs, sn):
        fx, fz = cs * fx - sn * fz, sn * fx + cs * fz
        dx, dz = cs * d[0] - sn * d[2], sn * d[0] + cs * d[2]
    else:
        dx, dz = d[0], d[2]
    tnear = tfar = None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for oi, di, h in ((fx, dx, hx), (fy, d[1], hy), (fz, dz, hz)):
            inv = 1.0 / di
            t1 = (-h - oi) * inv
            t2 = (h - oi) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            tnear = lo if tnear is None else np.maximum(tnear, lo)
            tfar = hi if tfar is None else np.minimum(tfar, hi)
        hit = (tnear <= tfar) & (tnear > EPS_T)
    return np.where(hit, tnear, _INF)


def box_geometry(p: np.ndarray, prm: tuple, *, inward: bool = False):
    """Normals ``(3, M)`` (outward, or inward for a room), faces, face coordinates of hits ``p``."""
    cx, cy, cz, hx, hy, hz, cs, sn = prm
    qx, qy, qz = p[0] - cx, p[1] - cy, p[2] - cz
    rot = _rotated(cs, sn)
    if rot:
        qx, qz = cs * qx - sn * qz, sn * qx + cs * qz
    axis, pos = _box_face(qx, qy, qz, hx, hy, hz)
    face = (2 * axis + pos).astype(np.int8)
    one = np.float32(-1.0 if inward else 1.0)
    sign = np.where(pos, one, -one)
    zero = np.float32(0.0)
    nx, ny, nz = (np.where(axis == i, sign, zero) for i in range(3))
    if rot:  # local → world: x = c·lx + s·lz, z = −s·lx + c·lz
        nx, nz = cs * nx + sn * nz, -sn * nx + cs * nz
    a, b = _face_coords(axis, qx, qy, qz)
    return np.stack([nx, ny, nz]).astype(np.float32, copy=False), face, a, b


def room_intersect(o: Vec3, d: Vec3, prm: tuple) -> np.ndarray:
    """Exit ``t`` of rays starting inside the axis-aligned boxes ``prm`` (as for boxes, no yaw):
    ``t = min_axis max((lo − o)/d, (hi − o)/d)``."""
    cx, cy, cz, hx, hy, hz = prm[:6]
    t = None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for oi, di, c, h in ((o[0], d[0], cx, hx), (o[1], d[1], cy, hy), (o[2], d[2], cz, hz)):
            inv = 1.0 / di
            ti = np.maximum((c - h - oi) * inv, (c + h - oi) * inv)
            t = ti if t is None else np.minimum(t, ti)
    return np.where(t > EPS_T, t, _INF)


def room_geometry(p: np.ndarray, prm: tuple):
    return box_geometry(p, prm, inward=True)


def cylinder_intersect(o: Vec3, d: Vec3, prm: tuple) -> np.ndarray:
    """Entry ``t`` into vertical closed cylinders ``prm = (x, z, radius, y0, y1)``: the smaller root of
    ``(fx + t·dx)² + (fz + t·dz)² = r²`` within ``y0 ≤ y ≤ y1``, or a cap disc."""
    x, z, r, y0, y1 = prm
    fx, fz = o[0] - x, o[2] - z
    dx, dy, dz = d
    r2 = r * r
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = dx * dx + dz * dz
        hb = fx * dx + fz * dz
        c = fx * fx + fz * fz - r2
        disc = hb * hb - a * c
        ts = (-hb - np.sqrt(np.maximum(disc, 0.0))) / a
        ys = o[1] + ts * dy
        ok = (disc >= 0) & (ts > EPS_T) & (ys >= y0) & (ys <= y1)
        t = np.where(ok, ts, _INF)
        if np.ndim(o[1]) == 0 and np.ndim(y0) == 0:  # one origin: only the cap facing it is visible
            caps = [y1] if o[1] > y1 else [y0] if o[1] < y0 else []
        else:
            caps = [y0, y1]
        for yc in caps:
            tc = (yc - o[1]) / dy
            xc, zc = fx + tc * dx, fz + tc * dz
            okc = (tc > EPS_T) & (xc * xc + zc * zc <= r2)
            t = np.where(okc & (tc < t), tc, t)
    return t


def cylinder_geometry(p: np.ndarray, prm: tuple):
    x, z, r, y0, y1 = prm
    ym, hh = (y0 + y1) * 0.5, (y1 - y0) * 0.5
    qx, qy, qz = p[0] - x, p[1] - ym, p[2] - z
    rad = np.sqrt(qx * qx + qz * qz)
    cap = np.abs(np.abs(qy) - hh) < np.abs(rad - r)
    face = np.where(cap, np.where(qy > 0, 3, 2), 0).astype(np.int8)
    inv = 1.0 / np.maximum(rad, np.float32(1e-9))
    zero = np.float32(0.0)
    n = np.stack(
        [
            np.where(cap, zero, qx * inv),
            np.where(cap, np.where(qy > 0, np.float32(1.0), np.float32(-1.0)), zero),
            np.where(cap, zero, qz * inv),
        ]
    ).astype(np.float32, copy=False)
    a = np.where(cap, qx, r * np.arctan2(qz, qx))
    b = np.where(cap, qz, qy)
    return n, face, a, b


def sphere_intersect(o: Vec3, d: Vec3, prm: tuple) -> np.ndarray:
    """Entry ``t`` into spheres ``prm = (cx, cy, cz, radius)``."""
    cx, cy, cz, r = prm
    fx, fy, fz = o[0] - cx, o[1] - cy, o[2] - cz
    dx, dy, dz = d
    with np.errstate(divide="ignore", invalid="ignore"):
        a = dx * dx + dy * dy + dz * dz
        hb = fx * dx + fy * dy + fz * dz
        c = fx * fx + fy * fy + fz * fz - r * r
        disc = hb * hb - a * c
        t = (-hb - np.sqrt(np.maximum(disc, 0.0))) / a
        ok = (disc >= 0) & (t > EPS_T)
    return np.where(ok, t, _INF)


def sphere_geometry(p: np.ndarray, prm: tuple):
    cx, cy, cz, r = prm
    qx, qy, qz = p[0] - cx, p[1] - cy, p[2] - cz
    # normalise by |q|, not r: far hit points carry float32 round-off of order 1e-6 · t
    inv = 1.0 / np.maximum(np.sqrt(qx * qx + qy * qy + qz * qz), np.float32(1e-12))
    n = np.stack([qx * inv, qy * inv, qz * inv]).astype(np.float32, copy=False)
    face = np.zeros(np.shape(qx), np.int8)
    return n, face, r * np.arctan2(qz, qx), qy


KERNELS = {
    PrimType.ROOM: (room_intersect, room_geometry),
    PrimType.BOX: (box_intersect, box_geometry),
    PrimType.CYLINDER: (cylinder_intersect, cylinder_geometry),
    PrimType.SPHERE: (sphere_intersect, sphere_geometry),
}
"""Per kind: ``intersect(o, d, prm) -> t`` and ``geometry(p, prm) -> (normals, faces, a, b)``."""


# ------------------------------------------------------------------------------------------ classes
@dataclass
class Primitive:
    """Base class: a convex solid whose faces show :class:`Surface` s.

    ``surface`` is shown on every face unless ``face_surfaces`` overrides a face; ``decals`` are
    applied on top. ``casts_shadow=False`` drops a primitive from shadow tests (ground slabs, which
    cannot occlude anything that lies above them). Subclasses define ``kind`` and ``params`` (the
    kernel parameter tuple of Python floats).
    """

    surface: Surface
    face_surfaces: dict[int, Surface] = field(default_factory=dict)
    decals: list[Decal] = field(default_factory=list)
    casts_shadow: bool = True

    kind = PrimType.BOX
    params: tuple = field(default=(), init=False, repr=False)

    def intersect(self, o: Vec3, d: Vec3) -> np.ndarray:
        """Entry ``t`` of rays ``o + t·d`` (``inf`` = miss)."""
        return KERNELS[self.kind][0](o, d, self.params)

    def geometry(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Normals facing the viewer ``(3, M)``, faces ``(M,)`` int8, face coordinates a, b at ``p``."""
        return KERNELS[self.kind][1](p, self.params)

    def corners(self) -> np.ndarray:
        """``(8, 3)`` corners of a box enclosing the primitive, in the order of :data:`BOX_EDGES`."""
        raise NotImplementedError  # pragma: no cover - abstract

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        raise NotImplementedError  # pragma: no cover - abstract


@dataclass
class Box(Primitive):
    """A box of half-extents ``half`` centred at ``center``, rotated by ``yaw`` (radians) about +y."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    half: tuple[float, float, float] = (0.5, 0.5, 0.5)
    yaw: float = 0.0
    kind = PrimType.BOX

    def __post_init__(self) -> None:
        self.center = tuple(float(v) for v in self.center)
        self.half = tuple(float(v) for v in self.half)
        self.yaw = float(self.yaw)
        cs, sn = (1.0, 0.0) if self.yaw == 0.0 else (math.cos(self.yaw), math.sin(self.yaw))
        self.params = (*self.center, *self.half, cs, sn)

    def corners(self) -> np.ndarray:
        local = _CORNER_SIGNS * np.asarray(self.half)
        cs, sn = self.params[6:]
        x = cs * local[:, 0] + sn * local[:, 2]
        z = -sn * local[:, 0] + cs * local[:, 2]
        return np.stack([x, local[:, 1], z], axis=1) + np.asarray(self.center)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.center), float(np.linalg.norm(self.half))


@dataclass
class RoomShell(Primitive):
    """The inside of the axis-aligned box ``lo ≤ p ≤ hi`` (a room seen from within).

    Normals point inwards. Face numbering is by the wall's position: face 1 is the wall at
    ``x = hi_x`` (its normal is −x). Face coordinates are relative to the room centre. A room never
    casts shadows (its lights are inside).
    """

    lo: tuple[float, float, float] = (-1.0, 0.0, -1.0)
    hi: tuple[float, float, float] = (1.0, 2.5, 1.0)
    kind = PrimType.ROOM

    def __post_init__(self) -> None:
        self.lo = tuple(float(v) for v in self.lo)
        self.hi = tuple(float(v) for v in self.hi)
        self.center = tuple((a + b) / 2 for a, b in zip(self.lo, self.hi, strict=True))
        self.half = tuple((b - a) / 2 for a, b in zip(self.lo, self.hi, strict=True))
        self.params = (*self.center, *self.half, 1.0, 0.0)
        self.casts_shadow = False

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
    kind = PrimType.CYLINDER

    def __post_init__(self) -> None:
        self.x, self.z, self.radius = float(self.x), float(self.z), float(self.radius)
        self.y0, self.y1 = float(self.y0), float(self.y1)
        self.params = (self.x, self.z, self.radius, self.y0, self.y1)

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
    kind = PrimType.SPHERE

    def __post_init__(self) -> None:
        self.center = tuple(float(v) for v in self.center)
        self.radius = float(self.radius)
        self.params = (*self.center, self.radius)

    def corners(self) -> np.ndarray:
        return _CORNER_SIGNS * self.radius + np.asarray(self.center)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.center), self.radius
