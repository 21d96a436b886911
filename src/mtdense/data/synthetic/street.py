"""The ``street`` family: a city street seen from a car, in the spirit of Cityscapes / Virtual KITTI.

A straight road with lane markings, raised sidewalks with curbs, terrain beyond, rows of building
blocks with storeys of windows on both sides (with gaps, low walls and an optional building closing
the street), parked and driving cars, trucks, poles with traffic signs or street-light arms, trees
(trunk and crown spheres), bushes, pedestrians, and a sky with clouds lit by a sun that casts
shadows. Sky pixels have depth 0 (invalid) and zero normals. Camera 1.3–2.2 m above the road, on a
lane, yaw ±20°, pitch −9°…+3°; sun 15°–65° high (style ``a``; :mod:`.styles` sets the camera height, the
field of view and the sun's elevation range).
"""

from __future__ import annotations

import colorsys
import math
from typing import TYPE_CHECKING

import numpy as np

from ._build import SceneBuilder, choice, place
from .materials import ColorPrior, Pattern, shade_of, srgb_to_linear
from .primitives import Box, Cylinder, Primitive, Sphere, Surface
from .renderer import Light, Scene, Sky

if TYPE_CHECKING:
    from .styles import Style

CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "pole",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "car",
    "truck",
)
ROAD, SIDEWALK, BUILDING, WALL, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR, TRUCK = range(12)
PALETTE = (  # the Cityscapes colours of these classes
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (153, 153, 153),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (0, 0, 142),
    (0, 0, 70),
)
HFOV_DEG = 70.0
"""Horizontal field of view of style ``a``."""
CAMERA_HEIGHT = (1.3, 2.2)
"""Range of the camera height above the road (m) of style ``a``: a car-mounted camera."""
SUN_ELEVATION_DEG = (15.0, 65.0)
"""Range of the sun's elevation of style ``a``."""

_ANY = 0.5
PRIORS = {
    ROAD: ColorPrior(0.6, _ANY, (0.0, 0.12), (0.2, 0.45)),
    SIDEWALK: ColorPrior(0.08, _ANY, (0.0, 0.25), (0.45, 0.8)),
    BUILDING: ColorPrior(0.07, _ANY, (0.0, 0.35), (0.3, 0.85)),
    WALL: ColorPrior(0.08, _ANY, (0.0, 0.2), (0.35, 0.8)),
    POLE: ColorPrior(0.6, _ANY, (0.0, 0.15), (0.2, 0.6)),
    SIGN: ColorPrior(0.0, _ANY, (0.6, 1.0), (0.6, 1.0)),
    VEGETATION: ColorPrior(0.27, 0.08, (0.35, 0.8), (0.2, 0.6)),
    TERRAIN: ColorPrior(0.2, 0.08, (0.3, 0.7), (0.3, 0.6)),
    PERSON: ColorPrior(0.0, _ANY, (0.0, 0.8), (0.1, 0.8)),
    CAR: ColorPrior(0.0, _ANY, (0.0, 0.9), (0.1, 0.95)),
    TRUCK: ColorPrior(0.0, _ANY, (0.0, 0.8), (0.3, 0.95)),
}
_GLASS = ColorPrior(0.58, 0.1, (0.05, 0.4), (0.05, 0.35))
_BARK = ColorPrior(0.07, 0.03, (0.3, 0.6), (0.15, 0.4))
_SKIN = ColorPrior(0.07, 0.03, (0.2, 0.6), (0.3, 0.9))
_DARK = ColorPrior(0.6, _ANY, (0.0, 0.1), (0.03, 0.15))
_FAR = 60.0  # the ground continues this far beyond the end of the street


class _Street:
    def __init__(self, b: SceneBuilder) -> None:
        self.b = b
        self.prims: list[Primitive] = []

    def add(self, prim: Primitive) -> None:
        self.prims.append(prim)

    def slab(self, label, material, *, x0, x1, y0, y1, z0, z1, instance=None, shadow=True):
        box = Box(
            surface=self.b.surface(label, material, instance),
            center=((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2),
            half=((x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2),
            casts_shadow=shadow,
        )
        self.add(box)
        return box


def _plain(b: SceneBuilder, prior: ColorPrior, contrast: float = 0.2, scale: float = 1.0):
    return b.material(Pattern.PLAIN, b.color(prior), contrast=contrast, scale=scale)


def _building(st: _Street, *, x0, x1, z0, z1, height):
    b, rng = st.b, st.b.rng
    col = b.color(PRIORS[BUILDING])
    storey = rng.uniform(2.8, 3.6)
    if rng.random() < 0.8:
        mat = b.material(Pattern.FACADE, col, b.color(_GLASS), scale=storey, offset=(0.0, height / 2))
    else:
        kind = choice(rng, [Pattern.BRICK, Pattern.PLAIN])
        mat = b.material(kind, col, shade_of(rng, col, 0.6, 0.9), scale=rng.uniform(0.3, 1.5), contrast=0.3)
    st.slab(BUILDING, mat, x0=x0, x1=x1, y0=0.0, y1=height, z0=z0, z1=z1)


def _car(st: _Street, x: float, z: float, yaw: float):
    b, rng = st.b, st.b.rng
    length, width = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.9)
    clear, body_h = rng.uniform(0.2, 0.32), rng.uniform(0.5, 0.75)
    cab_h, cab_l, cab_off = (
        rng.uniform(0.4, 0.6),
        rng.uniform(0.45, 0.6) * length,
        rng.uniform(-0.15, 0.05) * length,
    )
    inst = b.instance()
    body_mat = b.material(Pattern.PLAIN, b.color(PRIORS[CAR]), contrast=0.1, scale=2.0)
    body = Surface(CAR, inst, body_mat)
    dark = Surface(CAR, inst, _plain(b, _DARK))
    glass = Surface(CAR, inst, b.material(Pattern.PLAIN, b.color(_GLASS), contrast=0.3, scale=0.5))
    st.add(Box(surface=dark, center=(x, clear / 2, z), half=(width * 0.45, clear / 2, length * 0.42), yaw=yaw))
    st.add(Box(surface=body, center=(x, clear + body_h / 2, z), half=(width / 2, body_h / 2, length / 2), yaw=yaw))
    cx, cz = place(x, z, yaw, 0.0, cab_off)
    st.add(
        Box(
            surface=glass,
            face_surfaces={3: body},
            center=(cx, clear + body_h + cab_h / 2, cz),
            half=(width * 0.45, cab_h / 2, cab_l / 2),
            yaw=yaw,
        )
    )


def _truck(st: _Street, x: float, z: float, yaw: float):
    b, rng = st.b, st.b.rng
    length, width = rng.uniform(6.0, 11.0), rng.uniform(2.3, 2.5)
    clear, cargo_h = rng.uniform(0.35, 0.5), rng.uniform(2.2, 3.2)
    cab_l, cab_h = rng.uniform(2.0, 2.4), rng.uniform(2.0, 2.6)
    front = 1 if rng.random() < 0.5 else -1
    inst = b.instance()
    cargo = Surface(TRUCK, inst, b.material(Pattern.PLAIN, b.color(PRIORS[TRUCK]), contrast=0.15, scale=3.0))
    cab = Surface(TRUCK, inst, b.material(Pattern.PLAIN, b.color(PRIORS[TRUCK]), contrast=0.1))
    dark = Surface(TRUCK, inst, _plain(b, _DARK))
    st.add(Box(surface=dark, center=(x, clear / 2, z), half=(width * 0.45, clear / 2, length * 0.45), yaw=yaw))
    ccx, ccz = place(x, z, yaw, 0.0, -front * cab_l / 2)
    st.add(
        Box(
            surface=cargo,
            center=(ccx, clear + cargo_h / 2, ccz),
            half=(width / 2, cargo_h / 2, (length - cab_l) / 2),
            yaw=yaw,
        )
    )
    kx, kz = place(x, z, yaw, 0.0, front * (length / 2 - cab_l / 2))
    st.add(
        Box(
            surface=cab,
            center=(kx, clear + cab_h / 2, kz),
            half=(width / 2, cab_h / 2, cab_l / 2 - 0.05),
            yaw=yaw,
        )
    )


def _pole(st: _Street, x: float, z: float, side: int, y0: float):
    b, rng = st.b, st.b.rng
    r, h = rng.uniform(0.05, 0.12), rng.uniform(3.0, 8.0)
    inst = b.instance()
    metal = Surface(POLE, inst, _plain(b, PRIORS[POLE], 0.1))
    st.add(Cylinder(surface=metal, x=x, z=z, radius=r, y0=y0, y1=y0 + h))
    if h > 5.0 and rng.random() < 0.6:  # street-light arm over the road
        arm = rng.uniform(1.0, 2.5)
        st.add(Box(surface=metal, center=(x - side * arm / 2, y0 + h - 0.05, z), half=(arm / 2, 0.05, 0.08)))
    if rng.random() < 0.6:  # traffic sign facing the oncoming traffic (−z)
        sw, sh = rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.4)
        hue = choice(rng, [0.0, 0.6, 0.14, 0.33])
        col = srgb_to_linear(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0)))
        if rng.random() < 0.3:  # overlapping colours between classes
            col = b.color(PRIORS[SIGN])
        mat = b.material(Pattern.PLAIN, col, contrast=0.15, scale=0.3)
        sy = y0 + min(h - sh, rng.uniform(2.0, 3.0))
        st.add(Box(surface=b.surface(SIGN, mat), center=(x, sy, z - r - 0.03), half=(sw, sh, 0.02)))


def _tree(st: _Street, x: float, z: float, y0: float):
    b, rng = st.b, st.b.rng
    inst = b.instance()
    bark_col = b.color(_BARK)
    bark = Surface(VEGETATION, inst, b.material(Pattern.NOISE, bark_col, shade_of(rng, bark_col, 0.4, 0.7), scale=0.3))
    th = rng.uniform(1.8, 3.5)
    st.add(Cylinder(surface=bark, x=x, z=z, radius=rng.uniform(0.1, 0.25), y0=y0, y1=y0 + th))
    leaf_col = b.color(PRIORS[VEGETATION])
    leaves = Surface(
        VEGETATION,
        inst,
        b.material(Pattern.NOISE, leaf_col, shade_of(rng, leaf_col, 0.3, 0.7), scale=0.25, contrast=0.6),
    )
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(1.0, 2.5)
        cx, cz = x + rng.uniform(-0.6, 0.6), z + rng.uniform(-0.6, 0.6)
        st.add(Sphere(surface=leaves, center=(cx, y0 + th + 0.6 * r + rng.uniform(-0.2, 0.5), cz), radius=r))


def _person(st: _Street, x: float, z: float, y0: float):
    b, rng = st.b, st.b.rng
    inst = b.instance()
    clothes = Surface(PERSON, inst, _plain(b, PRIORS[PERSON], 0.3, 0.4))
    skin = Surface(PERSON, inst, _plain(b, _SKIN, 0.1, 0.2))
    body_h, head_r = rng.uniform(1.35, 1.55), rng.uniform(0.1, 0.12)
    st.add(Cylinder(surface=clothes, x=x, z=z, radius=rng.uniform(0.17, 0.24), y0=y0, y1=y0 + body_h))
    st.add(Sphere(surface=skin, center=(x, y0 + body_h + head_r + 0.02, z), radius=head_r))


def generate(rng: np.random.Generator, style: Style) -> Scene:
    """Draw one street scene (module docstring) with the camera and sun of ``style``."""
    cam_height, hfov_deg = style.camera("street")
    b = SceneBuilder(rng)
    st = _Street(b)
    rw2 = rng.uniform(3.5, 7.5)  # half road width
    lane = rw2 / max(1, round(rw2 / 3.5))
    sw, curb = rng.uniform(2.0, 5.0), rng.uniform(0.1, 0.18)
    zend, z0 = rng.uniform(70.0, 140.0), -30.0
    zfar = zend + _FAR

    cam_x, cam_y = rng.uniform(-rw2 + 1.2, rw2 - 1.2), rng.uniform(*cam_height)
    b.claim(cam_x, 0.0, 3.0)

    # ground: terrain everywhere (slightly lower), road, two sidewalks
    terr_col = b.color(PRIORS[TERRAIN])
    terrain = b.material(Pattern.NOISE, terr_col, shade_of(rng, terr_col, 0.4, 0.8), scale=0.8, contrast=0.5)
    st.slab(TERRAIN, terrain, x0=-90, x1=90, y0=-0.12, y1=-0.02, z0=z0, z1=zfar, shadow=False)
    road_col = b.color(PRIORS[ROAD])
    road = b.material(Pattern.ROAD, road_col, shade_of(rng, road_col, 0.6, 1.3), scale=lane, contrast=0.4)
    st.slab(ROAD, road, x0=-rw2, x1=rw2, y0=-0.1, y1=0.0, z0=z0, z1=zfar, shadow=False)
    side_col = b.color(PRIORS[SIDEWALK])
    side_mat = b.material(Pattern.TILES, side_col, shade_of(rng, side_col, 0.5, 0.85), scale=rng.uniform(0.3, 0.7))
    inst_side = b.instance()
    for s in (-1, 1):
        x0, x1 = sorted((s * rw2, s * (rw2 + sw)))
        st.slab(
            SIDEWALK,
            side_mat,
            x0=x0,
            x1=x1,
            y0=-0.1,
            y1=curb,
            z0=z0,
            z1=zfar,
            instance=inst_side,
            shadow=False,
        )

    # building rows, with gaps holding low walls
    for s in (-1, 1):
        z = z0 + rng.uniform(0.0, 10.0)
        while z < zend:
            width = rng.uniform(8.0, 25.0)
            if rng.random() < 0.25:
                gap = rng.uniform(3.0, 10.0)
                if rng.random() < 0.5:
                    wall_col = b.color(PRIORS[WALL])
                    kind = choice(rng, [Pattern.BRICK, Pattern.PLAIN, Pattern.PANELS])
                    mat = b.material(kind, wall_col, shade_of(rng, wall_col, 0.5, 0.8), scale=rng.uniform(0.3, 1.5))
                    xw = s * (rw2 + sw + 0.3)
                    st.slab(
                        WALL,
                        mat,
                        x0=xw - 0.15,
                        x1=xw + 0.15,
                        y0=0.0,
                        y1=rng.uniform(0.8, 2.2),
                        z0=z,
                        z1=z + gap,
                    )
                z += gap
                continue
            setback = rng.uniform(0.0, 3.0) if rng.random() < 0.4 else 0.0
            depth, height = rng.uniform(8.0, 15.0), rng.uniform(6.0, 32.0)
            xf = rw2 + sw + setback
            x0, x1 = sorted((s * xf, s * (xf + depth)))
            _building(st, x0=x0, x1=x1, z0=z, z1=z + width, height=height)
            z += width
    if rng.random() < 0.6:  # a block closing the street
        zf = zend + rng.uniform(5.0, 20.0)
        _building(st, x0=-70.0, x1=70.0, z0=zf, z1=zf + 15.0, height=rng.uniform(8.0, 30.0))

    # vehicles: parked along both curbs, and driving in lanes
    for s in (-1, 1):
        z = rng.uniform(4.0, 9.0)
        while z < min(zend, 70.0):
            if rng.random() < 0.4:
                x = s * (rw2 - rng.uniform(1.0, 1.3))
                if b.free_spot(x, z, 2.6):
                    b.claim(x, z, 2.6)
                    _car(st, x, z, rng.uniform(-0.05, 0.05))
            z += rng.uniform(5.5, 8.0)
    n_lanes = max(1, round(2 * rw2 / lane))
    for _ in range(int(rng.integers(0, 4))):
        x = -rw2 + (int(rng.integers(n_lanes)) + 0.5) * lane
        z = rng.uniform(7.0, 60.0)
        if b.free_spot(x, z, 2.6):
            b.claim(x, z, 2.6)
            _car(st, x, z, rng.uniform(-0.08, 0.08) + (math.pi if rng.random() < 0.3 else 0.0))
    if rng.random() < 0.35:
        s = 1 if rng.random() < 0.5 else -1
        x, z = s * (rw2 - 1.4), rng.uniform(10.0, 60.0)
        if b.free_spot(x, z, 5.5):
            b.claim(x, z, 5.5)
            _truck(st, x, z, rng.uniform(-0.03, 0.03))

    # street furniture on the sidewalks (standing on the curb height)
    for _ in range(int(rng.integers(2, 7))):
        s = 1 if rng.random() < 0.5 else -1
        x, z = s * (rw2 + rng.uniform(0.3, 0.6)), rng.uniform(2.0, min(zend, 80.0))
        if b.free_spot(x, z, 0.4):
            b.claim(x, z, 0.4)
            _pole(st, x, z, s, curb)
    for _ in range(int(rng.integers(0, 7))):
        s = 1 if rng.random() < 0.5 else -1
        x, z = s * (rw2 + sw * rng.uniform(0.5, 0.8)), rng.uniform(3.0, 0.8 * zend)
        if b.free_spot(x, z, 1.0):
            b.claim(x, z, 1.0)
            _tree(st, x, z, curb)
    for _ in range(int(rng.integers(0, 4))):  # bushes in front of the facades
        s = 1 if rng.random() < 0.5 else -1
        r = rng.uniform(0.4, 1.0)
        col = b.color(PRIORS[VEGETATION])
        mat = b.material(Pattern.NOISE, col, shade_of(rng, col, 0.3, 0.7), scale=0.2, contrast=0.6)
        center = (s * (rw2 + sw - r * 0.5), r * 0.4, rng.uniform(3.0, 60.0))
        st.add(Sphere(surface=b.surface(VEGETATION, mat), center=center, radius=r))
    for _ in range(int(rng.integers(0, 5))):
        s = 1 if rng.random() < 0.5 else -1
        x, z = s * (rw2 + rng.uniform(0.6, max(0.7, sw - 0.4))), rng.uniform(4.0, 40.0)
        if b.free_spot(x, z, 0.4):
            b.claim(x, z, 0.4)
            _person(st, x, z, curb)

    # sun, sky
    el, az = math.radians(rng.uniform(*style.sun_elevation_deg)), rng.uniform(0.0, 2 * math.pi)
    sun = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    overcast = rng.uniform(0.0, 0.7)
    bright = rng.uniform(1.1, 1.8)
    zen_h = colorsys.hsv_to_rgb(rng.uniform(0.55, 0.63), rng.uniform(0.35, 0.7) * (1 - overcast), 0.9)
    hor_h = colorsys.hsv_to_rgb(rng.uniform(0.5, 0.62), rng.uniform(0.05, 0.25) * (1 - overcast), 1.0)
    zenith = tuple(bright * c for c in srgb_to_linear(zen_h))
    horizon = tuple(bright * c for c in srgb_to_linear(hor_h))
    sky = Sky(
        label=SKY,
        zenith=zenith,
        horizon=horizon,
        clouds=rng.uniform(0.0, 0.6),
        seed=int(rng.integers(1 << 20)),
    )
    return Scene(
        primitives=st.prims,
        lights=[Light(intensity=rng.uniform(1.3, 2.2) * (1 - 0.6 * overcast), direction=sun)],
        camera_position=(cam_x, cam_y, 0.0),
        yaw=rng.uniform(-0.35, 0.35),
        pitch=rng.uniform(-0.15, 0.05),
        roll=rng.uniform(-0.03, 0.03),
        hfov_deg=hfov_deg,
        ambient=rng.uniform(0.25, 0.5) * (1 + 0.5 * overcast),
        ambient_up=0.5,
        sky=sky,
        exposure=rng.uniform(0.8, 1.15),
        noise=rng.uniform(0.004, 0.02),
    )
