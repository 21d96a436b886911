"""Rendering styles: the same kind of scenes in another look, for an embedded domain-shift benchmark.

A :class:`Style` fixes everything about an image that is not its semantics: the camera (height above
the ground, horizontal field of view), the colour palette, the texture set and scale, the lighting
(sun elevation, light intensity, ambient) and the sensor (noise level, exposure). Geometry and labels
stay exact in every style, since the renderer derives them from the scene; only appearance and
camera change. ``street`` in style ``a`` is therefore a labelled source domain and ``street`` in
style ``b`` a target domain with exact labels too (the embedded counterpart of SYNTHIA → Cityscapes
in DenseMTL, Lopes et al., WACV 2023, Sec. 5), so a source-only model, a UDA model and a target
oracle can all be measured.

How a style acts (choices of this benchmark; the paper uses real datasets):

* **Camera and sun** enter the scene generators as the ranges they draw from
  (:attr:`Style.camera_height`, :attr:`Style.hfov_deg`, :attr:`Style.sun_elevation_deg`), so style
  ``a`` draws exactly what the generator drew before styles existed.
* **Appearance** (palette, textures, lights, sensor) is a deterministic rewrite of the generated
  :class:`~.renderer.Scene` (:meth:`Style.restyle`), with no random draws of its own; each rewrite is
  skipped when its parameters are neutral, so style ``a`` (all neutral) renders bit-identical images.
* **Scene draws.** Style ``a`` seeds its generator with ``(seed, index, family code)``; every other
  style appends ``1000 +`` its :attr:`Style.code`, so its scenes are independent of style ``a``'s: source and
  target domains share no scene layout (unpaired, as real domain-adaptation datasets are).

:data:`STYLES` is the registry; :func:`get_style` looks a name up with an error listing the styles.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ...errors import ConfigError
from . import indoor, street
from .materials import Material, Pattern
from .renderer import Scene

FREE_PATTERNS = frozenset({Pattern.PLAIN, Pattern.WOOD, Pattern.TILES, Pattern.BRICK, Pattern.NOISE, Pattern.CANVAS})
"""Patterns whose period is free: a style may swap and rescale them. The others are tied to geometry (storeys of a
facade, lane width, panes, cabinet doors) and keep their scale."""


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, eq=False)
class Style:
    """One look of the synthetic benchmark (module docstring). Neutral values leave the scene unchanged.

    Camera (per family name): ``camera_height`` the uniform range of the camera's height above the floor
    or road (metres), ``hfov_deg`` the horizontal field of view. Street sun: ``sun_elevation_deg`` range.
    Palette: every albedo (and the sky) has its hue shifted by ``hue_shift`` turns and its saturation
    scaled by ``saturation`` (in display space), then is multiplied by ``tint`` (linear RGB), clipped to 1.
    Textures: ``texture_swap`` replaces patterns (free patterns only), ``texture_scale`` multiplies the
    period of the free patterns, ``contrast`` their contrast (clipped to 1). Lighting: ``light_intensity``
    multiplies every light, ``ambient`` the ambient term. Sensor: noise std ``= drawn · noise_gain +
    noise_floor`` (display units), ``exposure`` multiplies the auto-exposure target.
    """

    name: str
    code: int
    description: str
    camera_height: Mapping[str, tuple[float, float]]
    hfov_deg: Mapping[str, float]
    sun_elevation_deg: tuple[float, float] = street.SUN_ELEVATION_DEG
    hue_shift: float = 0.0
    saturation: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    texture_swap: Mapping[Pattern, Pattern] = field(default_factory=lambda: _frozen({}))
    texture_scale: float = 1.0
    contrast: float = 1.0
    light_intensity: float = 1.0
    ambient: float = 1.0
    noise_gain: float = 1.0
    noise_floor: float = 0.0
    exposure: float = 1.0

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.texture_swap.items() if k not in FREE_PATTERNS or v not in FREE_PATTERNS}
        if bad:
            raise ValueError(f"style {self.name!r}: texture_swap may only map free patterns, got {bad}")

    def camera(self, family: str) -> tuple[tuple[float, float], float]:
        """``(height range, hfov_deg)`` of ``family``'s camera in this style."""
        return self.camera_height[family], self.hfov_deg[family]

    @property
    def neutral_palette(self) -> bool:
        return self.hue_shift == 0.0 and self.saturation == 1.0 and self.tint == (1.0, 1.0, 1.0)

    def restyle(self, scene: Scene) -> Scene:
        """Apply the appearance of this style to ``scene`` in place (materials, sky, lights, sensor); returns it."""
        seen: set[int] = set()
        for prim in scene.primitives:
            surfaces = [prim.surface, *prim.face_surfaces.values(), *(d.surface for d in prim.decals)]
            for srf in surfaces:
                if id(srf.material) not in seen:  # materials are shared between surfaces: rewrite each once
                    seen.add(id(srf.material))
                    self._material(srf.material)
        if scene.sky is not None and not self.neutral_palette:
            scene.sky.zenith = self.recolor(scene.sky.zenith)
            scene.sky.horizon = self.recolor(scene.sky.horizon)
        if self.light_intensity != 1.0:
            for light in scene.lights:
                light.intensity *= self.light_intensity
        if self.ambient != 1.0:
            scene.ambient *= self.ambient
        if (self.noise_gain, self.noise_floor) != (1.0, 0.0):
            scene.noise = scene.noise * self.noise_gain + self.noise_floor
        if self.exposure != 1.0:
            scene.exposure *= self.exposure
        return scene

    def recolor(self, color) -> tuple[float, float, float]:
        """A linear RGB colour in this style's palette (hue shift and saturation in display space, then tint)."""
        if self.neutral_palette:
            return tuple(float(c) for c in color)
        peak = max(1.0, *color)  # sky colours may exceed 1 (brightness); keep it out of the HSV round trip
        h, s, v = colorsys.rgb_to_hsv(*((c / peak) ** (1 / 2.2) for c in color))
        rgb = colorsys.hsv_to_rgb((h + self.hue_shift) % 1.0, min(1.0, s * self.saturation), v)
        return tuple(min(peak, peak * c**2.2 * t) for c, t in zip(rgb, self.tint, strict=True))

    def _material(self, m: Material) -> None:
        if m.pattern in self.texture_swap:
            m.pattern = self.texture_swap[m.pattern]
        if m.pattern in FREE_PATTERNS:
            if self.texture_scale != 1.0:
                m.scale *= self.texture_scale
            if self.contrast != 1.0:
                m.contrast = min(1.0, m.contrast * self.contrast)
        if not self.neutral_palette:
            m.color, m.color2 = self.recolor(m.color), self.recolor(m.color2)


STYLES: dict[str, Style] = {
    "a": Style(
        name="a",
        code=0,
        description="the generator's own look (the default): Kinect-like indoor camera, car-mounted street camera",
        camera_height=_frozen({"indoor": indoor.CAMERA_HEIGHT, "street": street.CAMERA_HEIGHT}),
        hfov_deg=_frozen({"indoor": indoor.HFOV_DEG, "street": street.HFOV_DEG}),
    ),
    "b": Style(
        name="b",
        code=1,
        description="another city at a low sun: higher (street) or lower (indoor) and wider camera, warm faded "
        "palette, coarser high-contrast textures, dimmer lights, noisier and darker sensor",
        camera_height=_frozen({"indoor": (0.5, 0.9), "street": (2.6, 3.4)}),
        hfov_deg=_frozen({"indoor": 80.0, "street": 90.0}),
        sun_elevation_deg=(5.0, 20.0),
        hue_shift=0.06,
        saturation=0.55,
        tint=(1.1, 0.95, 0.75),
        texture_swap=_frozen({Pattern.BRICK: Pattern.TILES, Pattern.TILES: Pattern.BRICK, Pattern.WOOD: Pattern.NOISE}),
        texture_scale=1.8,
        contrast=1.5,
        light_intensity=0.75,
        ambient=1.4,
        noise_gain=2.0,
        noise_floor=0.02,
        exposure=0.85,
    ),
}
"""Registry of styles by name (``data.synth.style``, ``mtdense data synth --style``)."""


def get_style(name: str) -> Style:
    """The style called ``name``; :class:`ConfigError` listing the known ones otherwise."""
    try:
        return STYLES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown synthetic style {name!r}; expected one of {sorted(STYLES)}") from None
