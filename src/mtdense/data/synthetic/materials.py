"""Procedural materials: class-correlated but randomised colours and 2-D textures.

A :class:`Material` turns face coordinates ``(a, b)`` (metres, see :mod:`.primitives`) into a linear
RGB albedo ``(3, M)`` and an emission factor. Textures are defined in metres on the surface, so their
projected frequency grows with distance and foreshortening: texture gradients are a depth and
orientation cue, as in real images.

Colours: :func:`sample_color` draws from a class prior (hue / saturation / value ranges) but, with a
fixed probability, from an unrestricted distribution instead, and always jitters brightness per
instance, so the colour distributions of classes overlap and no class can be told from a flat colour.
"""

from __future__ import annotations

import colorsys
import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class Pattern(enum.IntEnum):
    """Texture kinds (see the ``_pattern_*`` functions)."""

    PLAIN = 0  # low-frequency blotches (paint, plastic)
    WOOD = 1  # warped stripes (grain)
    TILES = 2  # square tiles with grout lines
    BRICK = 3  # staggered rows (bricks, floor planks)
    NOISE = 4  # multi-octave noise mixing two colours (foliage, carpet, asphalt)
    FACADE = 5  # wall with a grid of windows, one row per storey
    PANELS = 6  # rectangular panels separated by dark gaps (cabinet fronts, doors)
    CANVAS = 7  # colourful blobs (paintings)
    WINDOW = 8  # emissive glass (outdoor light) with dark mullions
    ROAD = 9  # asphalt with dashed lane markings every `scale` metres across


@dataclass
class Material:
    """Texture parameters. Colours are linear RGB albedos in [0, 1].

    ``scale`` is the texture period in metres; ``contrast`` in [0, 1]; ``angle`` rotates the pattern
    in the face plane (radians); ``emission`` adds ``emission · albedo`` independent of lighting
    (windows, lamp shades); ``seed`` decorrelates the noise of different instances.
    """

    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pattern: Pattern = Pattern.PLAIN
    scale: float = 1.0
    contrast: float = 0.3
    angle: float = 0.0
    emission: float = 0.0
    seed: int = 0

    def evaluate(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray | float]:
        """Albedo ``(3, M)`` float32 and emission (scalar or ``(M,)``) at face coordinates ``a, b``."""
        if self.angle:
            c, s = np.cos(self.angle), np.sin(self.angle)
            a, b = c * a + s * b, -s * a + c * b
        return _PATTERNS[self.pattern](self, a / self.scale, b / self.scale)


# --------------------------------------------------------------------------------------------- noise
def _hash2(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash → uniform float32 in [0, 1) (a multiply-xorshift mix)."""
    h = (i * 374761393 + j * 668265263 + seed * 2246822519) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h ^= h >> 16
    return (h & 0xFFFFFF).astype(np.float32) * np.float32(1.0 / 16777216.0)


def value_noise(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: hashed lattice values, bilinear with a smoothstep fade."""
    fa, fb = np.floor(a), np.floor(b)
    ia, ib = fa.astype(np.int64), fb.astype(np.int64)
    u, v = a - fa, b - fb
    u = u * u * (3 - 2 * u)
    v = v * v * (3 - 2 * v)
    n00 = _hash2(ia, ib, seed)
    n10 = _hash2(ia + 1, ib, seed)
    n01 = _hash2(ia, ib + 1, seed)
    n11 = _hash2(ia + 1, ib + 1, seed)
    top = n00 + u * (n10 - n00)
    bot = n01 + u * (n11 - n01)
    return (top + v * (bot - top)).astype(np.float32)


def fbm(a: np.ndarray, b: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves (frequency ×2, amplitude ×½), normalised to [0, 1]."""
    total = np.zeros(np.shape(a), np.float32)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        f = 2.0**k
        total += np.float32(amp) * value_noise(a * f + 17.3 * k, b * f - 9.1 * k, seed + 101 * k)
        norm += amp
        amp *= 0.5
    return total / np.float32(norm)


def _mix(c1, c2, w: np.ndarray) -> np.ndarray:
    c1 = np.asarray(c1, np.float32)[:, None]
    c2 = np.asarray(c2, np.float32)[:, None]
    return c1 + (c2 - c1) * w[None, :]


def _tint(color, f: np.ndarray) -> np.ndarray:
    return np.asarray(color, np.float32)[:, None] * f[None, :].astype(np.float32)


# ------------------------------------------------------------------------------------------ patterns
def _pattern_plain(m: Material, a, b):
    n = fbm(a * 2.0, b * 2.0, m.seed, 2)
    return _tint(m.color, 1.0 + m.contrast * (n - 0.5)), m.emission


def _pattern_wood(m: Material, a, b):
    warp = value_noise(a * 0.7, b * 6.0, m.seed)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (b * 6.0 + 2.5 * warp))
    w = m.contrast * grain**2
    return _mix(m.color, m.color2, w) * (0.92 + 0.16 * value_noise(a * 3, b * 3, m.seed + 7)), m.emission


def _pattern_tiles(m: Material, a, b):
    fa, fb = np.floor(a), np.floor(b)
    u, v = a - fa, b - fb
    grout = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v)) < 0.035
    jitter = _hash2(fa.astype(np.int64), fb.astype(np.int64), m.seed)
    checker = (fa + fb) % 2
    w = np.where(grout, 1.0, m.contrast * (0.5 * checker + 0.5 * jitter)).astype(np.float32)
    return _mix(m.color, m.color2, w), m.emission


def _pattern_brick(m: Material, a, b):
    rows = b * 3.0  # three rows per period; a brick is one period long
    row = np.floor(rows)
    shifted = a + 0.5 * (row % 2)
    col = np.floor(shifted)
    u, v = shifted - col, rows - row
    mortar = (np.minimum(u, 1 - u) < 0.03) | (np.minimum(v, 1 - v) < 0.06)
    jitter = _hash2(col.astype(np.int64), row.astype(np.int64), m.seed)
    f = 1.0 + m.contrast * (jitter - 0.5)
    albedo = _tint(m.color, f)
    grey = _mix(m.color2, m.color2, np.zeros_like(f))
    return np.where(mortar[None, :], grey, albedo), m.emission


def _pattern_noise(m: Material, a, b):
    n = fbm(a * 4.0, b * 4.0, m.seed, 3)
    w = np.clip((n - 0.5) * (1.0 + 3.0 * m.contrast) + 0.5, 0.0, 1.0)
    return _mix(m.color, m.color2, w), m.emission


def _pattern_facade(m: Material, a, b):
    # one storey per period vertically; windows every 0.8 period horizontally
    fb = b - np.floor(b)
    ah = a / 0.8
    fa = ah - np.floor(ah)
    window = (fb > 0.32) & (fb < 0.85) & (fa > 0.22) & (fa < 0.78)
    wall = _tint(m.color, 0.9 + 0.2 * fbm(a * 3, b * 3, m.seed, 2))
    glass = _tint(m.color2, 0.6 + 0.8 * value_noise(np.floor(ah), np.floor(b), m.seed + 3))
    return np.where(window[None, :], glass, wall), m.emission


def _pattern_panels(m: Material, a, b):
    u = a - np.floor(a)
    v = (b * 2.0) - np.floor(b * 2.0)
    gap = (np.minimum(u, 1 - u) < 0.015) | (np.minimum(v, 1 - v) < 0.03)
    handle = (np.abs(u - 0.5) < 0.08) & (np.abs(v - 0.75) < 0.03)
    base = _tint(m.color, 0.95 + 0.1 * value_noise(a * 5, b * 5, m.seed))
    dark = _tint(m.color2, np.ones_like(u))
    return np.where((gap | handle)[None, :], dark, base), m.emission


def _pattern_canvas(m: Material, a, b):
    n1 = fbm(a * 2.5, b * 2.5, m.seed, 3)
    n2 = fbm(a * 2.5 + 5.0, b * 2.5 - 3.0, m.seed + 11, 2)
    third = np.array(m.color2[::-1], np.float32)
    albedo = _mix(m.color, m.color2, np.clip(2 * n1 - 0.5, 0, 1))
    return albedo + (third[:, None] - albedo) * np.clip(2 * n2 - 1.0, 0, 1)[None, :], m.emission


def _pattern_window(m: Material, a, b):
    u = a - np.floor(a)
    v = b - np.floor(b)
    frame = (np.minimum(u, 1 - u) < 0.04) | (np.minimum(v, 1 - v) < 0.04)
    sky = _tint(m.color, 0.85 + 0.3 * fbm(a * 1.5, b * 1.5, m.seed, 2))
    frame_c = _tint(m.color2, np.ones_like(u))
    emit = np.where(frame, np.float32(0.0), np.float32(m.emission))
    return np.where(frame[None, :], frame_c, sky), emit


def _pattern_road(m: Material, a, b):
    asphalt = _mix(m.color, m.color2, fbm(a * 6.0, b * 6.0, m.seed, 3))
    u = a - np.round(a)  # lane boundaries at integer multiples of the lane width
    dash = (b * 0.25 - np.floor(b * 0.25)) < 0.5
    mark = (np.abs(u) < 0.035) & dash
    paint = np.full_like(asphalt, 0.75)
    return np.where(mark[None, :], paint, asphalt), m.emission


_PATTERNS: dict[Pattern, Callable[[Material, np.ndarray, np.ndarray], tuple]] = {
    Pattern.PLAIN: _pattern_plain,
    Pattern.WOOD: _pattern_wood,
    Pattern.TILES: _pattern_tiles,
    Pattern.BRICK: _pattern_brick,
    Pattern.NOISE: _pattern_noise,
    Pattern.FACADE: _pattern_facade,
    Pattern.PANELS: _pattern_panels,
    Pattern.CANVAS: _pattern_canvas,
    Pattern.WINDOW: _pattern_window,
    Pattern.ROAD: _pattern_road,
}


# ------------------------------------------------------------------------------------------- colours
def srgb_to_linear(c: np.ndarray | tuple) -> tuple[float, float, float]:
    """Display (gamma 2.2) colour → linear albedo."""
    return tuple(float(v) ** 2.2 for v in c)


@dataclass(frozen=True)
class ColorPrior:
    """A class's typical colour: hue centre and jitter (turns), saturation and value ranges (HSV)."""

    hue: float
    hue_jitter: float
    sat: tuple[float, float]
    val: tuple[float, float]


P_FREE_COLOR = 0.3
"""Probability that an instance's colour ignores its class prior (uniform hue, wide S and V)."""


def sample_color(rng: np.random.Generator, prior: ColorPrior) -> tuple[float, float, float]:
    """A linear RGB albedo: from ``prior`` (hue wraps) or, with :data:`P_FREE_COLOR`, from anywhere."""
    if rng.random() < P_FREE_COLOR:
        h, s, v = rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.25, 0.9)
    else:
        h = (prior.hue + rng.uniform(-prior.hue_jitter, prior.hue_jitter)) % 1.0
        s, v = rng.uniform(*prior.sat), rng.uniform(*prior.val)
    return srgb_to_linear(colorsys.hsv_to_rgb(h, s, v))


def shade_of(rng: np.random.Generator, color, lo: float, hi: float) -> tuple[float, float, float]:
    """``color`` scaled by a random factor in ``[lo, hi]`` and clipped to [0, 1] (a second tone)."""
    f = rng.uniform(lo, hi)
    return tuple(min(1.0, c * f) for c in color)
