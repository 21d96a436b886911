"""The ``indoor`` family: a furnished room, in the spirit of NYU Depth V2 (Kinect-like field of view).

A room (floor, ceiling, four walls, each wall its own instance) with windows and doors (decals on the
walls), framed pictures (thin boxes), tables with chairs, cabinets against walls, floor and table
lamps, balls, storage boxes, a rug, and 1–2 ceiling light fixtures that carry the point lights. The
camera stands near one wall, 1.0–1.7 m high (style ``a``; :mod:`.styles` sets the height range and the
field of view), looks into the room and is pitched down by 0–31°.
All sizes are in metres and drawn from plausible ranges; every colour comes from
:func:`~.materials.sample_color`, so classes share colour distributions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._build import SceneBuilder, choice, place
from .materials import ColorPrior, Pattern, shade_of
from .primitives import Box, Cylinder, Decal, Primitive, RoomShell, Sphere, Surface
from .renderer import Light, Scene

if TYPE_CHECKING:
    from .styles import Style

CLASS_NAMES = (
    "wall",
    "floor",
    "ceiling",
    "window",
    "door",
    "picture",
    "table",
    "cabinet",
    "chair",
    "lamp",
    "ball",
    "box",
    "rug",
)
WALL, FLOOR, CEILING, WINDOW, DOOR, PICTURE, TABLE, CABINET, CHAIR, LAMP, BALL, BOX, RUG = range(13)
PALETTE = (
    (174, 199, 232),
    (152, 223, 138),
    (31, 119, 180),
    (255, 187, 120),
    (188, 189, 34),
    (140, 86, 75),
    (255, 152, 150),
    (214, 39, 40),
    (197, 176, 213),
    (148, 103, 189),
    (196, 156, 148),
    (23, 190, 207),
    (247, 182, 210),
)
HFOV_DEG = 62.0
"""Horizontal field of view of style ``a``, close to the Kinect's (2·atan(320 / 518.86) = 63.3°)."""
CAMERA_HEIGHT = (1.0, 1.7)
"""Range of the camera height above the floor (m) of style ``a``, a hand-held camera's."""

_ANY = 0.5  # hue jitter of half a turn: any hue
PRIORS = {
    WALL: ColorPrior(0.1, _ANY, (0.0, 0.25), (0.55, 0.95)),
    FLOOR: ColorPrior(0.08, 0.05, (0.25, 0.7), (0.25, 0.75)),
    CEILING: ColorPrior(0.12, _ANY, (0.0, 0.1), (0.75, 0.98)),
    WINDOW: ColorPrior(0.58, 0.05, (0.05, 0.4), (0.8, 1.0)),
    DOOR: ColorPrior(0.08, 0.05, (0.15, 0.6), (0.3, 0.85)),
    PICTURE: ColorPrior(0.1, _ANY, (0.0, 0.6), (0.1, 0.9)),
    TABLE: ColorPrior(0.08, 0.06, (0.2, 0.7), (0.25, 0.8)),
    CABINET: ColorPrior(0.08, _ANY, (0.0, 0.5), (0.35, 0.95)),
    CHAIR: ColorPrior(0.0, _ANY, (0.2, 0.8), (0.2, 0.8)),
    LAMP: ColorPrior(0.12, 0.1, (0.0, 0.3), (0.6, 1.0)),
    BALL: ColorPrior(0.0, _ANY, (0.5, 1.0), (0.5, 1.0)),
    BOX: ColorPrior(0.09, 0.03, (0.3, 0.6), (0.45, 0.8)),
    RUG: ColorPrior(0.0, _ANY, (0.2, 0.8), (0.2, 0.8)),
}
_METAL = ColorPrior(0.6, _ANY, (0.0, 0.15), (0.1, 0.8))


class _Room:
    """Bookkeeping for one room: its size, wall occupancy and the primitive list."""

    def __init__(self, b: SceneBuilder, width: float, depth: float, height: float) -> None:
        self.b, self.w, self.d, self.h = b, width, depth, height
        self.prims: list[Primitive] = []
        # wall faces of the RoomShell → wall length; occupancy as (a0, a1) intervals
        self.length = {0: depth, 1: depth, 4: width, 5: width}
        self.wall_occ: dict[int, list] = {f: [] for f in self.length}
        self.floor_occ: dict[int, list] = {f: [] for f in self.length}

    def alloc(self, occ: list, face: int, width: float, margin: float = 0.2):
        """A free interval ``[a0, a0 + width]`` on wall ``face`` (face coordinates) or None."""
        half = self.length[face] / 2 - 0.15
        if 2 * half < width:
            return None
        for _ in range(20):
            a0 = float(self.b.rng.uniform(-half, half - width))
            if all(a0 + width + margin <= o0 or a0 >= o1 + margin for o0, o1 in occ):
                return a0
        return None

    def wall_box(self, face: int, a: float, y: float, *, along: float, height: float, thick: float):
        """Centre and half-extents of a box of size (along × height × thick) against wall ``face``."""
        if face in (0, 1):
            x = (-self.w / 2 + thick / 2 + 0.003) if face == 0 else (self.w / 2 - thick / 2 - 0.003)
            return (x, y, a), (thick / 2, height / 2, along / 2)
        z = (-self.d / 2 + thick / 2 + 0.003) if face == 4 else (self.d / 2 - thick / 2 - 0.003)
        return (a, y, z), (along / 2, height / 2, thick / 2)


_FRONT_FACE = {0: 1, 1: 0, 4: 5, 5: 4}  # box face that looks into the room, per wall


def _wall_material(b: SceneBuilder):
    rng = b.rng
    col = b.color(PRIORS[WALL])
    kind = choice(rng, [Pattern.PLAIN, Pattern.WOOD, Pattern.TILES, Pattern.BRICK], p=[0.7, 0.1, 0.1, 0.1])
    scale = {Pattern.PLAIN: 1.0, Pattern.WOOD: 0.4, Pattern.TILES: 0.25, Pattern.BRICK: 0.35}[kind]
    contrast = rng.uniform(0.1, 0.35) if kind == Pattern.PLAIN else rng.uniform(0.2, 0.6)
    return b.material(kind, col, shade_of(rng, col, 0.6, 0.9), scale=scale, contrast=contrast)


def _floor_material(b: SceneBuilder):
    rng = b.rng
    kind = choice(rng, [Pattern.BRICK, Pattern.TILES, Pattern.NOISE, Pattern.WOOD], p=[0.4, 0.25, 0.2, 0.15])
    col = b.color(PRIORS[FLOOR])
    scale = {Pattern.BRICK: 0.6, Pattern.TILES: 0.45, Pattern.NOISE: 0.4, Pattern.WOOD: 0.5}[kind]
    return b.material(
        kind,
        col,
        shade_of(rng, col, 0.4, 0.8),
        scale=scale * rng.uniform(0.7, 1.4),
        contrast=rng.uniform(0.3, 0.8),
        angle=float(rng.choice([0.0, math.pi / 2])),
    )


def _object_material(b: SceneBuilder, label: int, **kw):
    rng = b.rng
    col = b.color(PRIORS[label])
    kind = choice(rng, [Pattern.PLAIN, Pattern.WOOD, Pattern.NOISE], p=[0.55, 0.3, 0.15])
    kw.setdefault("scale", rng.uniform(0.3, 1.0))
    kw.setdefault("contrast", rng.uniform(0.2, 0.6))
    return b.material(kind, col, shade_of(rng, col, 0.5, 0.85), **kw)


def _add_table(room: _Room, x: float, z: float, yaw: float, w: float, d: float):
    b, rng = room.b, room.b.rng
    h, th = rng.uniform(0.68, 0.78), rng.uniform(0.025, 0.06)
    inst = b.instance()
    top = Surface(TABLE, inst, _object_material(b, TABLE))
    legs = Surface(TABLE, inst, b.material(Pattern.PLAIN, b.color(_METAL), contrast=0.1))
    room.prims.append(Box(surface=top, center=(x, h - th / 2, z), half=(w / 2, th / 2, d / 2), yaw=yaw))
    if rng.random() < 0.25:  # pedestal table
        room.prims.append(Cylinder(surface=legs, x=x, z=z, radius=rng.uniform(0.03, 0.06), y0=0.03, y1=h - th))
        room.prims.append(Cylinder(surface=legs, x=x, z=z, radius=min(w, d) * 0.35, y0=0.0, y1=0.03))
    else:
        lt = rng.uniform(0.035, 0.07)
        inset = rng.uniform(0.0, 0.08)
        for sx in (-1, 1):
            for sz in (-1, 1):
                lx, lz = place(x, z, yaw, sx * (w / 2 - lt / 2 - inset), sz * (d / 2 - lt / 2 - inset))
                hl = (h - th) / 2
                room.prims.append(Box(surface=legs, center=(lx, hl, lz), half=(lt / 2, hl, lt / 2), yaw=yaw))
    return h


def _add_chair(room: _Room, x: float, z: float, yaw: float):
    """A chair at ``(x, z)`` whose front (local +z) faces ``yaw``; the back rest is at local −z."""
    b, rng = room.b, room.b.rng
    s, sh, st = rng.uniform(0.38, 0.5), rng.uniform(0.42, 0.48), rng.uniform(0.03, 0.08)
    inst = b.instance()
    body = Surface(CHAIR, inst, _object_material(b, CHAIR))
    legs = Surface(CHAIR, inst, b.material(Pattern.PLAIN, b.color(_METAL), contrast=0.1))
    room.prims.append(Box(surface=body, center=(x, sh - st / 2, z), half=(s / 2, st / 2, s / 2), yaw=yaw))
    if rng.random() > 0.15:  # not a stool
        bh, bt = rng.uniform(0.35, 0.55), rng.uniform(0.03, 0.05)
        bx, bz = place(x, z, yaw, 0.0, -s / 2 + bt / 2)
        room.prims.append(Box(surface=body, center=(bx, sh + bh / 2, bz), half=(s / 2, bh / 2, bt / 2), yaw=yaw))
    lt = rng.uniform(0.025, 0.045)
    hl = (sh - st) / 2
    for sx in (-1, 1):
        for sz in (-1, 1):
            lx, lz = place(x, z, yaw, sx * (s / 2 - lt / 2), sz * (s / 2 - lt / 2))
            room.prims.append(Box(surface=legs, center=(lx, hl, lz), half=(lt / 2, hl, lt / 2), yaw=yaw))


def _add_lamp(room: _Room, x: float, z: float, y0: float, height: float, scale: float = 1.0):
    b, rng = room.b, room.b.rng
    inst = b.instance()
    metal = Surface(LAMP, inst, b.material(Pattern.PLAIN, b.color(_METAL), contrast=0.1))
    col = b.color(PRIORS[LAMP])
    shade = Surface(LAMP, inst, b.material(Pattern.PLAIN, col, contrast=0.1, emission=rng.uniform(0.3, 0.9)))
    r_base, r_shade, h_shade = 0.16 * scale, rng.uniform(0.14, 0.22) * scale, 0.28 * scale
    room.prims.append(Cylinder(surface=metal, x=x, z=z, radius=r_base, y0=y0, y1=y0 + 0.03 * scale))
    room.prims.append(Cylinder(surface=metal, x=x, z=z, radius=0.015 * scale, y0=y0 + 0.03, y1=y0 + height))
    if rng.random() < 0.7:
        room.prims.append(Cylinder(surface=shade, x=x, z=z, radius=r_shade, y0=y0 + height, y1=y0 + height + h_shade))
    else:
        room.prims.append(Sphere(surface=shade, center=(x, y0 + height + r_shade, z), radius=r_shade))


def _add_small(room: _Room, x: float, z: float, y0: float, max_size: float):
    """A ball or a storage box standing at height ``y0``; returns its top height."""
    b, rng = room.b, room.b.rng
    if rng.random() < 0.45:
        r = rng.uniform(0.06, max_size / 2)
        mat = b.material(Pattern.PLAIN, b.color(PRIORS[BALL]), contrast=rng.uniform(0.1, 0.5), scale=0.3)
        room.prims.append(Sphere(surface=b.surface(BALL, mat), center=(x, y0 + r, z), radius=r))
        return y0 + 2 * r
    sx, sz = rng.uniform(0.12, max_size, size=2)
    sy = rng.uniform(0.1, max_size * 0.8)
    col = b.color(PRIORS[BOX])
    kind = choice(rng, [Pattern.PLAIN, Pattern.NOISE, Pattern.PANELS], p=[0.6, 0.25, 0.15])
    mat = b.material(kind, col, shade_of(rng, col, 0.5, 0.8), scale=rng.uniform(0.2, 0.5), contrast=0.3)
    room.prims.append(
        Box(
            surface=b.surface(BOX, mat),
            center=(x, y0 + sy / 2, z),
            half=(sx / 2, sy / 2, sz / 2),
            yaw=rng.uniform(0, math.pi),
        )
    )
    return y0 + sy


def _decorate_top(room: _Room, x: float, z: float, yaw: float, *, w: float, d: float, y: float):
    """0–2 small objects (ball, box, table lamp) on a rectangular top at height ``y``."""
    rng = room.b.rng
    for _ in range(int(rng.integers(0, 3))):
        size = min(0.35, 0.5 * min(w, d))
        if size < 0.1:
            return
        lx = rng.uniform(-w / 2 + size / 2, w / 2 - size / 2)
        lz = rng.uniform(-d / 2 + size / 2, d / 2 - size / 2)
        px, pz = place(x, z, yaw, lx, lz)
        if rng.random() < 0.2:
            _add_lamp(room, px, pz, y, rng.uniform(0.25, 0.4), scale=0.6)
        else:
            _add_small(room, px, pz, y, size)


def generate(rng: np.random.Generator, style: Style) -> Scene:
    """Draw one indoor scene (module docstring) with the camera of ``style``."""
    cam_height, hfov_deg = style.camera("indoor")
    b = SceneBuilder(rng)
    room = _Room(b, rng.uniform(3.2, 6.5), rng.uniform(3.5, 7.5), rng.uniform(2.4, 3.1))
    W, D, H = room.w, room.d, room.h

    # camera near the z = −D/2 wall, looking into the room
    cam_x = rng.uniform(-W / 2 + 0.5, W / 2 - 0.5)
    cam_z = -D / 2 + rng.uniform(0.25, min(1.2, 0.3 * D))
    cam_y = rng.uniform(*cam_height)
    b.claim(cam_x, cam_z, 0.45)
    target = (rng.uniform(-W / 2, W / 2), rng.uniform(0.0, D / 2))
    yaw = math.atan2(target[0] - cam_x, target[1] - cam_z) + rng.uniform(-0.2, 0.2)

    # room shell: four wall instances sharing one material, floor, ceiling
    wall_mat = _wall_material(b)
    faces = {f: b.surface(WALL, wall_mat) for f in (1, 4, 5)}
    faces[2] = b.surface(FLOOR, _floor_material(b))
    ceil_col = b.color(PRIORS[CEILING])
    faces[3] = b.surface(CEILING, b.material(Pattern.PLAIN, ceil_col, scale=2.0, contrast=0.1))
    shell = RoomShell(
        surface=b.surface(WALL, wall_mat), face_surfaces=faces, lo=(-W / 2, 0.0, -D / 2), hi=(W / 2, H, D / 2)
    )
    room.prims.append(shell)
    yb = -H / 2  # face coordinate b of the floor line on walls

    # door (decal, also blocks the floor in front of it)
    if rng.random() < 0.7:
        face = int(rng.choice([0, 1, 4, 5]))
        dw, dh = rng.uniform(0.8, 0.95), min(rng.uniform(2.0, 2.15), H - 0.1)
        a0 = room.alloc(room.wall_occ[face], face, dw)
        if a0 is not None:
            room.wall_occ[face].append((a0, a0 + dw))
            room.floor_occ[face].append((a0 - 0.3, a0 + dw + 0.3))
            col = b.color(PRIORS[DOOR])
            kind = choice(rng, [Pattern.PANELS, Pattern.WOOD, Pattern.PLAIN])
            mat = b.material(kind, col, shade_of(rng, col, 0.4, 0.7), scale=dw / 2, offset=(-a0, -yb), contrast=0.4)
            shell.decals.append(Decal(face, (a0, a0 + dw, yb, yb + dh), b.surface(DOOR, mat)))

    # windows
    for _ in range(int(rng.integers(0, 4))):
        face = int(rng.choice([0, 1, 5, 5]))
        ww = rng.uniform(0.7, 2.0)
        sill, top = rng.uniform(0.7, 1.1), rng.uniform(1.9, min(2.4, H - 0.15))
        a0 = room.alloc(room.wall_occ[face], face, ww)
        if a0 is None:
            continue
        room.wall_occ[face].append((a0, a0 + ww))
        panes = int(rng.integers(1, 4))
        mat = b.material(
            Pattern.WINDOW,
            b.color(PRIORS[WINDOW]),
            b.color(ColorPrior(0.1, _ANY, (0.0, 0.2), (0.2, 1.0))),
            scale=ww / panes,
            offset=(-a0, -(yb + sill)),
            emission=rng.uniform(1.5, 3.0),
        )
        shell.decals.append(Decal(face, (a0, a0 + ww, yb + sill, yb + top), b.surface(WINDOW, mat)))

    # pictures: thin framed boxes
    for _ in range(int(rng.integers(0, 5))):
        face = int(rng.choice([0, 1, 4, 5, 5]))
        pw, ph, thick = rng.uniform(0.3, 1.2), rng.uniform(0.3, 0.9), rng.uniform(0.015, 0.04)
        cy = min(rng.uniform(1.2, 1.8), H - 0.15 - ph / 2)
        a0 = room.alloc(room.wall_occ[face], face, pw)
        if a0 is None:
            continue
        room.wall_occ[face].append((a0, a0 + pw))
        center, half = room.wall_box(face, a0 + pw / 2, cy, along=pw, height=ph, thick=thick)
        inst = b.instance()
        frame_col = b.color(PRIORS[PICTURE])
        frame = Surface(PICTURE, inst, b.material(Pattern.WOOD, frame_col, scale=0.3, contrast=0.4))
        box = Box(surface=frame, center=center, half=half)
        fw = rng.uniform(0.0, 0.08)
        hues = b.color(PRIORS[BALL]), b.color(PRIORS[CHAIR])
        canvas = b.material(Pattern.CANVAS, hues[0], hues[1], scale=rng.uniform(0.2, 0.6))
        rect = (-pw / 2 + fw, pw / 2 - fw, -ph / 2 + fw, ph / 2 - fw)
        box.decals.append(Decal(_FRONT_FACE[face], rect, Surface(PICTURE, inst, canvas)))
        room.prims.append(box)

    # cabinets against walls
    for _ in range(int(rng.integers(1, 4))):
        face = int(choice(rng, [0, 1, 4, 5], p=[0.3, 0.3, 0.1, 0.3]))
        cw, cd, ch = rng.uniform(0.4, 1.6), rng.uniform(0.35, 0.6), rng.uniform(0.5, 2.1)
        a0 = room.alloc(room.floor_occ[face], face, cw, margin=0.05)
        if a0 is None:
            continue
        center, half = room.wall_box(face, a0 + cw / 2, ch / 2, along=cw, height=ch, thick=cd)
        if not b.free_spot(center[0], center[2], 0.5 * math.hypot(cw, cd)):
            continue
        room.floor_occ[face].append((a0, a0 + cw))
        b.claim(center[0], center[2], 0.5 * math.hypot(cw, cd))
        inst = b.instance()
        body_mat = _object_material(b, CABINET)
        n_cols = max(1, round(cw / rng.uniform(0.3, 0.6)))
        front = b.material(
            Pattern.PANELS,
            body_mat.color,
            shade_of(rng, body_mat.color, 0.2, 0.5),
            scale=cw / n_cols,
            offset=(cw / 2, ch / 2),
        )
        box = Box(
            surface=Surface(CABINET, inst, body_mat),
            face_surfaces={_FRONT_FACE[face]: Surface(CABINET, inst, front)},
            center=center,
            half=half,
        )
        room.prims.append(box)
        if ch < 1.3:
            w_top, d_top = (2 * half[0], 2 * half[2])
            _decorate_top(room, center[0], center[2], 0.0, w=w_top, d=d_top, y=ch)

    def in_view(margin: float):
        return lambda: (
            rng.uniform(-W / 2 + margin, W / 2 - margin),
            rng.uniform(min(cam_z + 0.8, D / 2 - margin - 0.01), D / 2 - margin),
        )

    # tables with chairs around them
    for _ in range(int(choice(rng, [0, 1, 1, 2]))):
        tw, td = rng.uniform(0.7, 1.8), rng.uniform(0.5, 1.0)
        r = 0.5 * math.hypot(tw, td)
        spot = None
        for _try in range(25):
            x, z = in_view(r)()
            if b.free_spot(x, z, r + 0.1):
                spot = (x, z)
                break
        if spot is None:
            continue
        x, z = spot
        tyaw = (rng.choice([0.0, math.pi / 2]) if rng.random() < 0.7 else rng.uniform(0, math.pi)) + rng.uniform(
            -0.1, 0.1
        )
        top_y = _add_table(room, x, z, tyaw, tw, td)
        sides = [(0.0, td / 2 + 0.3), (0.0, -td / 2 - 0.3), (tw / 2 + 0.3, 0.0), (-tw / 2 - 0.3, 0.0)]
        for k in rng.permutation(4)[: int(rng.integers(0, 5))]:
            cx, cz = place(x, z, tyaw, *sides[k])
            if abs(cx) > W / 2 - 0.3 or abs(cz) > D / 2 - 0.3 or not b.free_spot(cx, cz, 0.3):
                continue
            b.claim(cx, cz, 0.3)
            _add_chair(room, cx, cz, math.atan2(x - cx, z - cz) + rng.uniform(-0.3, 0.3))
        b.claim(x, z, r)
        _decorate_top(room, x, z, tyaw, w=tw, d=td, y=top_y)

    # free-standing chairs, floor lamps, balls, boxes
    for _ in range(int(rng.integers(0, 3))):
        spot = b.find_spot(in_view(0.35), 0.35)
        if spot:
            _add_chair(room, *spot, rng.uniform(-math.pi, math.pi))
    if rng.random() < 0.5:
        spot = b.find_spot(in_view(0.3), 0.25)
        if spot:
            _add_lamp(room, *spot, 0.0, rng.uniform(1.2, 1.6))
    for _ in range(int(rng.integers(0, 5))):
        spot = b.find_spot(in_view(0.35), 0.3)
        if spot:
            top = _add_small(room, *spot, 0.0, 0.6)
            if rng.random() < 0.3:
                _add_small(room, *spot, top, 0.3)

    # rug (floor decal; face coordinates of the floor are world (x, z))
    if rng.random() < 0.4:
        rw, rd = rng.uniform(1.0, min(3.0, W - 0.4)), rng.uniform(0.8, min(2.5, D - 0.4))
        x0, z0 = rng.uniform(-W / 2 + 0.2, W / 2 - 0.2 - rw), rng.uniform(-D / 2 + 0.2, D / 2 - 0.2 - rd)
        col = b.color(PRIORS[RUG])
        kind = choice(rng, [Pattern.NOISE, Pattern.WOOD, Pattern.TILES])
        mat = b.material(kind, col, b.color(PRIORS[RUG]), scale=rng.uniform(0.2, 0.6), contrast=rng.uniform(0.3, 0.8))
        shell.decals.append(Decal(2, (x0, x0 + rw, z0, z0 + rd), b.surface(RUG, mat)))

    # ceiling fixtures carrying the point lights
    lights = []
    n_lights = int(rng.integers(1, 3))
    for _ in range(n_lights):
        lx, lz = rng.uniform(-W / 2 + 0.5, W / 2 - 0.5), rng.uniform(-D / 2 + 0.5, D / 2 - 0.5)
        hx, hz = rng.uniform(0.12, 0.35), rng.uniform(0.12, 0.35)
        mat = b.material(Pattern.PLAIN, (0.9, 0.9, 0.85), contrast=0.05, emission=rng.uniform(1.5, 3.0))
        # the light hangs just below its fixture, which therefore shadows nothing but the ceiling
        # around it: leaving it out of shadow tests saves testing every shadow ray against it
        fixture = Box(surface=b.surface(LAMP, mat), center=(lx, H - 0.02, lz), half=(hx, 0.02, hz))
        fixture.casts_shadow = False
        room.prims.append(fixture)
        lights.append(
            Light(
                intensity=rng.uniform(1.2, 2.5) / math.sqrt(n_lights),
                position=(lx, H - 0.12, lz),
                r0=rng.uniform(2.0, 3.5),
            )
        )

    return Scene(
        primitives=room.prims,
        lights=lights,
        camera_position=(cam_x, cam_y, cam_z),
        yaw=yaw,
        pitch=rng.uniform(-0.55, 0.0),
        roll=rng.uniform(-0.04, 0.04),
        hfov_deg=hfov_deg,
        ambient=rng.uniform(0.15, 0.35),
        ambient_up=0.2,
        sky=None,
        exposure=rng.uniform(0.8, 1.1),
        noise=rng.uniform(0.004, 0.02),
    )
