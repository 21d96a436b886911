"""Small helpers shared by the scene generators: instance ids, footprints, local → world placement."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .materials import ColorPrior, Material, Pattern, sample_color
from .primitives import Surface


@dataclass
class SceneBuilder:
    """Hands out instance ids (1, 2, ...) and draws materials from one random generator."""

    rng: np.random.Generator
    next_id: int = 0
    footprints: list[tuple[float, float, float]] = field(default_factory=list)

    def instance(self) -> int:
        self.next_id += 1
        return self.next_id

    def color(self, prior: ColorPrior) -> tuple[float, float, float]:
        return sample_color(self.rng, prior)

    def material(self, pattern: Pattern, color, color2=None, **kw) -> Material:
        """A material with a fresh noise seed; ``color2`` defaults to a darker tone of ``color``."""
        if color2 is None:
            f = self.rng.uniform(0.45, 0.8)
            color2 = tuple(c * f for c in color)
        return Material(
            color=tuple(color),
            color2=tuple(color2),
            pattern=pattern,
            seed=int(self.rng.integers(1 << 20)),
            **kw,
        )

    def surface(self, label: int, material: Material, instance: int | None = None) -> Surface:
        return Surface(label=label, instance=self.instance() if instance is None else instance, material=material)

    def free_spot(self, x: float, z: float, r: float) -> bool:
        """True if a disc of radius ``r`` at ``(x, z)`` overlaps no registered footprint."""
        return all(math.hypot(x - fx, z - fz) >= r + fr for fx, fz, fr in self.footprints)

    def claim(self, x: float, z: float, r: float) -> None:
        self.footprints.append((x, z, r))

    def find_spot(self, sample, r: float, tries: int = 25):
        """Draw ``(x, z) = sample()`` until a free disc of radius ``r`` fits; claim it or return None."""
        for _ in range(tries):
            x, z = sample()
            if self.free_spot(x, z, r):
                self.claim(x, z, r)
                return x, z
        return None


def place(x: float, z: float, yaw: float, lx: float, lz: float) -> tuple[float, float]:
    """World ``(x, z)`` of the local offset ``(lx, lz)`` of an object at ``(x, z)`` rotated by ``yaw``.

    Same convention as :class:`~.primitives.Box`: local +z maps to world ``(sin yaw, cos yaw)``.
    """
    c, s = math.cos(yaw), math.sin(yaw)
    return x + c * lx + s * lz, z - s * lx + c * lz


def choice(rng: np.random.Generator, options, p=None):
    """``rng.choice`` for arbitrary Python objects."""
    return options[int(rng.choice(len(options), p=p))]
