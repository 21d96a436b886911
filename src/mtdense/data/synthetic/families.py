"""Registry of scene families and :func:`render_sample`, the deterministic entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from . import indoor, street
from .renderer import Scene, intrinsics, render_scene
from .styles import Style, get_style

GENERATOR_VERSION = "1"
"""Bumped whenever the same (family, seed, index, style) would render differently."""


@dataclass(frozen=True)
class Family:
    """A scene family: its classes (id = position), display palette and generator (the camera comes from a style)."""

    name: str
    code: int  # mixed into the random seed so that families never share scenes
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    generate: Callable[[np.random.Generator, Style], Scene]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def hfov_deg(self, style: str = "a") -> float:
        """Horizontal field of view of this family's camera in ``style``."""
        return get_style(style).camera(self.name)[1]

    def intrinsics(self, size: tuple[int, int], style: str = "a") -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` of every image of this family in ``style`` at ``size = (H, W)``."""
        return intrinsics(size, self.hfov_deg(style))


FAMILIES: dict[str, Family] = {
    "indoor": Family("indoor", 1, indoor.CLASS_NAMES, indoor.PALETTE, indoor.generate),
    "street": Family("street", 2, street.CLASS_NAMES, street.PALETTE, street.generate),
}


def get_family(name: str) -> Family:
    """The family called ``name``; :class:`ConfigError` listing the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown synthetic family {name!r}; expected one of {sorted(FAMILIES)}") from None


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size: expected (H, W), got {size!r}") from None
    if h < 2 or w < 2:
        raise ConfigError(f"size: expected H, W >= 2, got {(h, w)}")
    return h, w


def _entropy(fam: Family, style: Style, seed: int, index: int, *extra: int) -> list[int]:
    """Seed sequence of ``(family, seed, index)`` in ``style``: style ``a`` keeps the generator's original one,
    every other style appends ``1000 + code`` (:mod:`.styles`: its scenes are independent draws; the offset keeps the
    sequences apart from the sensor-noise stream, whose ``extra`` is 1)."""
    tail = [1000 + style.code] if style.code else []
    return [int(seed), int(index), fam.code, *extra, *tail]


def make_scene(family: str, seed: int, index: int, style: str = "a") -> Scene:
    """The scene of ``(family, seed, index)`` in ``style`` (:mod:`.styles`); independent of the image size."""
    fam, sty = get_family(family), get_style(style)
    if seed < 0 or index < 0:
        raise ConfigError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return sty.restyle(fam.generate(np.random.default_rng(_entropy(fam, sty, seed, index)), sty))


def render_sample(family: str, seed: int, index: int, size: tuple[int, int] = (192, 256), *, style: str = "a") -> dict:
    """Render image ``index`` of the synthetic dataset ``(family, seed)`` at ``size = (H, W)`` in ``style``.

    Deterministic: the same arguments give bit-identical arrays, on any machine with the same NumPy.
    The scene depends on ``(family, seed, index, style)`` only; the size changes the sampling, not the scene.
    Returns the dict of :func:`~.renderer.render_scene`: ``image`` (H, W, 3) uint8, ``semseg`` (H, W)
    uint8 class ids, ``depth`` (H, W) float32 metres (0 = sky), ``normals`` (H, W, 3) float32 camera
    frame, ``edge`` (H, W) uint8, ``instance`` (H, W) int32, ``intrinsics`` (4,) ``fx, fy, cx, cy``.
    """
    size = _check_size(size)
    scene = make_scene(family, seed, index, style)
    noise_rng = np.random.default_rng(_entropy(get_family(family), get_style(style), seed, index, 1))
    return render_scene(scene, size, noise_rng)
