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
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        # plain Python floats keep float32 arrays float32 (NumPy scalars would promote to float64)
        self.color = tuple(float(c) for c in self.color)
        self.color2 = tuple(float(c) for c in self.color2)
        self.pattern = Pattern(self.pattern)
        self.scale, self.contrast = float(self.scale), float(self.contrast)
        self.angle, self.emission = float(self.angle), float(self.emission)
        self.seed = int(self.seed)
        self.offset = (float(self.offset[0]), float(self.offset[1]))

    def evaluate(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Albedo ``(3, M)`` float32 and emission ``(M,)`` at face coordinates ``a, b`` (metres)."""
        return MaterialTable([self]).evaluate(np.zeros(np.shape(a), np.int32), a, b)


class MaterialTable:
    """Parameters of many materials as arrays, so that all rays showing one pattern are textured in a
    single vectorised call whatever their material (per-ray parameters are gathered by material id).
    """

    def __init__(self, materials: list[Material]) -> None:
        self.pattern = np.array([int(m.pattern) for m in materials], np.int8)
        self.color = np.array([m.color for m in materials], np.float32).reshape(-1, 3).T.copy()  # (3, M)
        self.color2 = np.array([m.color2 for m in materials], np.float32).reshape(-1, 3).T.copy()
        cols = [(m.scale, m.contrast, m.angle, m.emission, *m.offset) for m in materials]
        self.scalars = np.array(cols, np.float32).reshape(-1, 6).T.copy()  # (6, M)
        self.seed = np.array([m.seed for m in materials], np.int64)

    def evaluate(self, mid: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Albedo ``(3, N)`` and emission ``(N,)`` of rays showing materials ``mid (N,)`` at ``(a, b)``."""
        n = mid.shape[0]
        albedo = np.empty((3, n), np.float32)
        emit = np.empty(n, np.float32)
        pat = np.take(self.pattern, mid)
        kinds = np.unique(pat)
        for p in kinds:
            # (np.take: 2-D fancy indexing is several times slower)
            ids = None if len(kinds) == 1 else np.flatnonzero(pat == p)
            m = mid if ids is None else np.take(mid, ids)
            aa, bb = (a, b) if ids is None else (np.take(a, ids), np.take(b, ids))
            if m.size and (m == m[0]).all():  # one material (large surfaces): no per-ray gathers
                k = int(m[0])
                scale, contrast, angle, emission, off_a, off_b = (float(v) for v in self.scalars[:, k])
                color, color2, seed = self.color[:, k : k + 1], self.color2[:, k : k + 1], int(self.seed[k])
            else:
                scale, contrast, angle, emission, off_a, off_b = np.take(self.scalars, m, axis=1)
                color, color2 = np.take(self.color, m, axis=1), np.take(self.color2, m, axis=1)
                seed = np.take(self.seed, m)
            aa, bb = aa + off_a, bb + off_b
            if np.any(angle):
                c, s = np.cos(angle), np.sin(angle)
                aa, bb = c * aa + s * bb, -s * aa + c * bb
            params = _Params(color, color2, contrast, emission, seed)
            alb, em = _PATTERNS[Pattern(int(p))](params, aa / scale, bb / scale)
            if ids is None:
                albedo[:], emit[:] = alb, em
            else:
                for i in range(3):
                    albedo[i, ids] = alb[i]
                emit[ids] = em
        return albedo, emit


@dataclass
class _Params:
    """Per-ray material parameters handed to the pattern functions (colours ``(3, N)``)."""

    color: np.ndarray
    color2: np.ndarray
    contrast: np.ndarray
    emission: np.ndarray
    seed: np.ndarray


# --------------------------------------------------------------------------------------------- noise
def _hash2(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash → uniform float32 in [0, 1) (a multiply-xorshift mix)."""
    h = (i * 374761393 + j * 668265263 + (seed % 1048573) * 2246822519) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h ^= h >> 16
    return (h & 0xFFFFFF).astype(np.float32) * np.float32(1.0 / 16777216.0)


_TEX = 256  # noise texture side (texels); one texture unit = 64 texels, the texture tiles every 4 units
_UNIT = 64


def _periodic_value_noise(cells: int, seed: int) -> np.ndarray:
    """``(_TEX, _TEX)`` value noise with ``cells`` lattice cells per side, tiling seamlessly."""
    x = np.arange(_TEX, dtype=np.float64) * cells / _TEX
    i = np.floor(x).astype(np.int64)
    f = x - i
    f = f * f * (3 - 2 * f)
    j0, j1 = i % cells, (i + 1) % cells
    n00 = _hash2(j0[None, :], j0[:, None], seed)
    n10 = _hash2(j1[None, :], j0[:, None], seed)
    n01 = _hash2(j0[None, :], j1[:, None], seed)
    n11 = _hash2(j1[None, :], j1[:, None], seed)
    top = n00 + f[None, :] * (n10 - n00)
    bot = n01 + f[None, :] * (n11 - n01)
    return top + f[:, None] * (bot - top)


def _make_noise_texture() -> np.ndarray:
    """A tiling fractal-noise texture (5 octaves, 4 to 64 cells), remapped to a uniform [0, 1].

    Textures look noise up in this fixed table instead of evaluating noise per pixel: one gather
    instead of ~100 array operations (it is the dominant cost otherwise).
    """
    tex = sum(0.5**k * _periodic_value_noise(4 * 2**k, 7 + k) for k in range(5))
    order = np.argsort(tex.ravel(), kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)  # the inverse permutation: one sort instead of two (same ranks)
    return (ranks / (ranks.size - 1)).astype(np.float32).reshape(_TEX, _TEX)


_NOISE = _make_noise_texture()
_NOISE_FLAT = _NOISE.ravel()
_TEX_BITS = _TEX.bit_length() - 1  # _TEX is a power of two
_CELLS = _hash2(np.arange(64)[None, :], np.arange(64)[:, None], 12345)  # (64, 64) uniform table


def noise(a: np.ndarray, b: np.ndarray, seed) -> np.ndarray:
    """Fractal noise in [0, 1] at ``(a, b)`` (one lattice cell per unit); ``seed`` shifts the table."""
    oa, ob = (seed * 7919) % _TEX, (seed * 104729) % _TEX
    ia = ((a * _UNIT).astype(np.int64) + oa) & (_TEX - 1)
    ib = ((b * _UNIT).astype(np.int64) + ob) & (_TEX - 1)
    # _NOISE[ib, ia] as one flat gather: 2-D fancy indexing costs several times more
    return np.take(_NOISE_FLAT, (ib << _TEX_BITS) | ia)


def cell_random(i: np.ndarray, j: np.ndarray, seed) -> np.ndarray:
    """A uniform [0, 1) value per integer cell ``(i, j)`` (tiles, bricks, windows); period 64 cells."""
    return _CELLS[(j.astype(np.int64) + seed * 31) & 63, (i.astype(np.int64) + seed * 17) & 63]


def _mix(c1: np.ndarray, c2: np.ndarray, w: np.ndarray) -> np.ndarray:
    return c1 + (c2 - c1) * w[None, :]


# ------------------------------------------------------------------------------------------ patterns
# Each pattern maps scaled face coordinates (one texture period = 1) to (albedo (3, N), emission (N,)).
def _pattern_plain(m: _Params, a, b):
    n = noise(a * 0.5, b * 0.5, m.seed)
    return m.color * (1.0 + m.contrast * (n - 0.5))[None, :], m.emission


def _pattern_wood(m: _Params, a, b):
    warp = noise(a * 0.2, b * 1.5, m.seed)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (b * 6.0 + 2.5 * warp))
    w = m.contrast * grain**2
    return _mix(m.color, m.color2, w) * (0.92 + 0.16 * noise(a, b, m.seed + 7))[None, :], m.emission


def _pattern_tiles(m: _Params, a, b):
    fa, fb = np.floor(a), np.floor(b)
    u, v = a - fa, b - fb
    grout = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v)) < 0.035
    jitter = cell_random(fa, fb, m.seed)
    checker = (fa + fb) % 2
    w = np.where(grout, np.float32(1.0), m.contrast * (0.5 * checker + 0.5 * jitter)).astype(np.float32)
    return _mix(m.color, m.color2, w), m.emission


def _pattern_brick(m: _Params, a, b):
    rows = b * 3.0  # three rows per period; a brick is one period long
    row = np.floor(rows)
    shifted = a + 0.5 * (row % 2)
    col = np.floor(shifted)
    u, v = shifted - col, rows - row
    mortar = (np.minimum(u, 1 - u) < 0.03) | (np.minimum(v, 1 - v) < 0.06)
    f = 1.0 + m.contrast * (cell_random(col, row, m.seed) - 0.5) + 0.1 * (noise(a * 2, b * 2, m.seed) - 0.5)
    return np.where(mortar[None, :], m.color2, m.color * f[None, :]), m.emission


def _pattern_noise(m: _Params, a, b):
    n = noise(a, b, m.seed)
    w = np.clip((n - 0.5) * (1.0 + 3.0 * m.contrast) + 0.5, 0.0, 1.0)
    return _mix(m.color, m.color2, w), m.emission


def _pattern_facade(m: _Params, a, b):
    # one storey per period vertically; windows every 0.8 period horizontally
    fb = b - np.floor(b)
    ah = a / 0.8
    fa = ah - np.floor(ah)
    window = (fb > 0.32) & (fb < 0.85) & (fa > 0.22) & (fa < 0.78)
    wall = m.color * (0.9 + 0.2 * noise(a, b, m.seed))[None, :]
    glass = m.color2 * (0.6 + 0.8 * cell_random(np.floor(ah), np.floor(b), m.seed + 3))[None, :]
    return np.where(window[None, :], glass, wall), m.emission


def _pattern_panels(m: _Params, a, b):
    u = a - np.floor(a)
    v = (b * 2.0) - np.floor(b * 2.0)
    gap = (np.minimum(u, 1 - u) < 0.015) | (np.minimum(v, 1 - v) < 0.03)
    handle = (np.abs(u - 0.5) < 0.08) & (np.abs(v - 0.75) < 0.03)
    base = m.color * (0.95 + 0.1 * noise(a, b, m.seed))[None, :]
    return np.where((gap | handle)[None, :], m.color2, base), m.emission


def _pattern_canvas(m: _Params, a, b):
    n1 = noise(a * 0.6, b * 0.6, m.seed)
    n2 = noise(a * 0.6, b * 0.6, m.seed + 11)
    third = m.color2[::-1]  # a third colour: the second one with its channels reversed
    albedo = _mix(m.color, m.color2, np.clip(2 * n1 - 0.5, 0, 1))
    return albedo + (third - albedo) * np.clip(2 * n2 - 1.0, 0, 1)[None, :], m.emission


def _pattern_window(m: _Params, a, b):
    u = a - np.floor(a)
    v = b - np.floor(b)
    frame = (np.minimum(u, 1 - u) < 0.04) | (np.minimum(v, 1 - v) < 0.04)
    sky = m.color * (0.85 + 0.3 * noise(a * 0.4, b * 0.4, m.seed))[None, :]
    emit = np.where(frame, np.float32(0.0), m.emission)
    return np.where(frame[None, :], m.color2, sky), emit


def _pattern_road(m: _Params, a, b):
    asphalt = _mix(m.color, m.color2, noise(a * 1.5, b * 1.5, m.seed))
    u = a - np.round(a)  # lane boundaries at integer multiples of the lane width
    dash = (b * 0.25 - np.floor(b * 0.25)) < 0.5
    mark = (np.abs(u) < 0.035) & dash
    return np.where(mark[None, :], np.float32(0.75), asphalt), m.emission


_PATTERNS: dict[Pattern, Callable[[_Params, np.ndarray, np.ndarray], tuple]] = {
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
