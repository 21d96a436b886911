"""Joint transforms: augmentations that act on an image and all its dense targets consistently.

A transform is a callable ``t(sample, rng) -> sample`` taking a sample dict as datasets return it
(the data contract: ``image`` float32 ``(3, H, W)`` in [0, 1]; ``semseg`` int64 ``(H, W)``, 255 =
ignore; ``depth`` float32 ``(1, H, W)`` metres, 0 = invalid; ``normals`` float32 ``(3, H, W)`` unit
vectors in the camera frame, x right, y down, zero = invalid; ``edge`` float32 ``(1, H, W)``, 255 =
ignore; ``meta`` dict) and a :class:`numpy.random.Generator`, the only source of randomness, so a
seeded generator reproduces an augmentation exactly. Transforms return a new dict (the input is not
modified); keys absent from the sample are skipped and ``meta`` passes through.

How each key is treated is a :class:`TargetRule` looked up in :data:`TARGET_RULES` (or a mapping
passed as ``rules=``): the image is resampled bilinearly (antialiased when shrinking), every other
map with nearest-neighbour so that labels stay in their label set, invalid depth zeros never blend
into valid depths, and unit normals stay unit. Padding and out-of-view areas get the rule's fill
value (0 for the image, 255 = ignore for labels, 0 = invalid for depth and normals). A tensor key
without a rule is an error rather than a silently misaligned target.

Recipes: NYUD (PAD-Net Sec. 4.1, adopted by MTI-Net Sec. 4.1) uses horizontal flips with probability
0.5 and scales {1, 1.2, 1.5} with depth divided by the scale; PSD (Sec. 4.1) crops to 416×416 and adds
flips, crops and rotations; the MTI-Net reference code uses scales 0.75–1.25 and rotations of ±20° on
PASCAL-Context.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mtdense.errors import ConfigError, DataError

__all__ = [
    "TARGET_RULES",
    "CenterCrop",
    "Compose",
    "JointTransform",
    "PhotometricJitter",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRotation",
    "RandomScale",
    "Resize",
    "TargetRule",
]

Sample = dict[str, Any]


class JointTransform(Protocol):
    """Anything callable as ``t(sample, rng) -> sample``."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


@dataclass(frozen=True)
class TargetRule:
    """How the spatial transforms treat one sample key.

    Attributes:
        smooth: resample bilinearly (the image); otherwise nearest-neighbour.
        fill: value for padding and for areas rotated in from outside the view.
        depth: the values are distances along the optical axis, divided by the zoom factor in
            :class:`RandomScale` when ``depth_divide`` is set.
        vector: channels 0 and 1 are the x (right) and y (down) components of a camera-frame
            vector, so a flip negates x and an in-plane rotation rotates (x, y).
    """

    smooth: bool = False
    fill: float = 0.0
    depth: bool = False
    vector: bool = False


_LABEL = TargetRule(fill=255.0)

TARGET_RULES: dict[str, TargetRule] = {
    "image": TargetRule(smooth=True, fill=0.0),
    "semseg": _LABEL,
    "edge": _LABEL,
    "depth": TargetRule(fill=0.0, depth=True),
    "normals": TargetRule(fill=0.0, vector=True),
    # PASCAL-Context's extra tasks (sample keys of the data contract, mtdense.data.open_dataset); 255 = ignore
    "parts": _LABEL,
    "saliency": _LABEL,
}


# ----------------------------------------------------------------------------------------------
# plumbing


def _sample_id(sample: Mapping[str, Any]) -> str:
    meta = sample.get("meta")
    return str(meta.get("id", "?")) if isinstance(meta, Mapping) else "?"


def _maps(sample: Mapping[str, Any], rules: Mapping[str, TargetRule]) -> dict[str, TargetRule]:
    """The keys of ``sample`` to transform, with their rules; checks that they share one size."""
    found: dict[str, TargetRule] = {}
    size: tuple[int, int] | None = None
    first = ""
    for key, value in sample.items():
        if key == "meta":
            continue
        if key not in rules:
            raise DataError(
                f"sample {_sample_id(sample)!r}: no transform rule for key {key!r}; "
                f"known keys: {', '.join(sorted(rules))} (pass rules= to add one)"
            )
        if not isinstance(value, Tensor) or value.ndim not in (2, 3):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise DataError(
                f"sample {_sample_id(sample)!r}: key {key!r}: expected a (H, W) or (C, H, W) tensor, got {shape}"
            )
        hw = (int(value.shape[-2]), int(value.shape[-1]))
        if size is None:
            size, first = hw, key
        elif hw != size:
            raise DataError(
                f"sample {_sample_id(sample)!r}: key {key!r} is {hw[0]}x{hw[1]} but {first!r} is "
                f"{size[0]}x{size[1]}; all maps of a sample must share one size"
            )
        found[key] = rules[key]
    if size is None:
        raise DataError(f"sample {_sample_id(sample)!r}: no image or target to transform")
    return found


def _size_of(sample: Mapping[str, Any], keys: Mapping[str, TargetRule]) -> tuple[int, int]:
    value = sample[next(iter(keys))]
    return int(value.shape[-2]), int(value.shape[-1])


def _apply(sample: Sample, rules: Mapping[str, TargetRule], fn: Callable[[Tensor, TargetRule], Tensor]) -> Sample:
    """A new sample with ``fn(map_as_(1, C, H, W)_float, rule)`` applied to every map."""
    out = dict(sample)
    for key, rule in _maps(sample, rules).items():
        value: Tensor = sample[key]
        batched = value.reshape(1, -1, *value.shape[-2:])
        result = fn(batched.float() if not value.is_floating_point() else batched, rule)
        out[key] = result.to(value.dtype).reshape(*value.shape[:-2], *result.shape[-2:])
    return out


def _resize(x: Tensor, rule: TargetRule, size: tuple[int, int]) -> Tensor:
    """Resample ``x (1, C, H, W)`` to ``size`` following ``rule``."""
    if tuple(x.shape[-2:]) == size:
        return x
    if rule.smooth:
        shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    # "nearest-exact" samples at pixel centres; plain "nearest" shifts the map by up to half a pixel.
    return F.interpolate(x, size=size, mode="nearest-exact")


def _window(x: Tensor, fill: float, top: int, left: int, size: tuple[int, int]) -> Tensor:
    """The ``size`` window of ``x (…, H, W)`` at ``(top, left)``; parts outside ``x`` get ``fill``."""
    h, w = size
    height, width = x.shape[-2:]
    out = torch.full((*x.shape[:-2], h, w), fill, dtype=x.dtype, device=x.device)
    y0, y1 = max(top, 0), min(top + h, height)
    x0, x1 = max(left, 0), min(left + w, width)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top : y1 - top, x0 - left : x1 - left] = x[..., y0:y1, x0:x1]
    return out


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ConfigError(f"{name}: size must be a positive int or (H, W), got {size!r}")
    return pair  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# transforms


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[JointTransform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomScale:
    """Zoom every map by a random factor ``s``: output size ``round(H·s) × round(W·s)``.

    ``s`` is drawn uniformly from the discrete set ``scales`` (NYUD recipe: {1, 1.2, 1.5}) or from
    the interval ``scale_range`` (PASCAL: (0.75, 1.25)). The image is resampled bilinearly, with
    antialiasing when shrinking; labels, edges, depth and normals with nearest-neighbour (so invalid
    depth zeros are never averaged into valid depths and normals stay unit). With ``depth_divide``
    the depth is divided by ``s``, as PAD-Net and MTI-Net do: magnifying the image ``s`` times mimics
    a camera ``s`` times closer to the scene.

    Args:
        scales: discrete factors to choose from (default {1, 1.2, 1.5} when neither is given).
        scale_range: ``(low, high)`` for a continuous factor; exclusive with ``scales``.
        depth_divide: divide depth by the factor.
        rules: per-key rules (default :data:`TARGET_RULES`).
    """

    def __init__(
        self,
        scales: Sequence[float] | None = None,
        *,
        scale_range: tuple[float, float] | None = None,
        depth_divide: bool = True,
        rules: Mapping[str, TargetRule] | None = None,
    ):
        if scales is not None and scale_range is not None:
            raise ConfigError("RandomScale: give either scales or scale_range, not both")
        if scale_range is not None:
            low, high = (float(v) for v in scale_range)
            if not 0 < low <= high:
                raise ConfigError(f"RandomScale: scale_range must satisfy 0 < low <= high, got {scale_range}")
            self.scale_range: tuple[float, float] | None = (low, high)
            self.scales: tuple[float, ...] | None = None
        else:
            chosen = tuple(float(s) for s in (scales if scales is not None else (1.0, 1.2, 1.5)))
            if not chosen or min(chosen) <= 0:
                raise ConfigError(f"RandomScale: scales must be positive and non-empty, got {scales}")
            self.scales, self.scale_range = chosen, None
        self.depth_divide = depth_divide
        self.rules = TARGET_RULES if rules is None else rules

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.scales is not None:
            scale = float(self.scales[int(rng.integers(len(self.scales)))])
        else:
            scale = float(rng.uniform(*self.scale_range))  # type: ignore[misc]
        height, width = _size_of(sample, _maps(sample, self.rules))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))

        def fn(x: Tensor, rule: TargetRule) -> Tensor:
            x = _resize(x, rule, size)
            return x / scale if rule.depth and self.depth_divide else x

        return _apply(sample, self.rules, fn)

    def __repr__(self) -> str:
        choice = f"scales={self.scales}" if self.scales is not None else f"scale_range={self.scale_range}"
        return f"RandomScale({choice}, depth_divide={self.depth_divide})"


class Resize:
    """Resize every map to ``size = (H, W)`` (evaluation); same interpolation as :class:`RandomScale`.

    Depth values are **not** changed: resizing to a fixed size is a change of resolution, not of
    viewpoint.
    """

    def __init__(self, size: int | Sequence[int], *, rules: Mapping[str, TargetRule] | None = None):
        self.size = _pair(size, "Resize")
        self.rules = TARGET_RULES if rules is None else rules

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return _apply(sample, self.rules, lambda x, rule: _resize(x, rule, self.size))

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class RandomCrop:
    """Crop an ``(H, W)`` window at a uniformly random position, the same for every map.

    A map smaller than the window is padded (when ``pad_if_needed``) with each key's fill value: 0
    for the image, 255 (ignore) for semseg and edge, 0 (invalid) for depth and normals; the map's
    position inside the padded window is random as well.

    Raises:
        DataError: the sample is smaller than the window and ``pad_if_needed`` is false.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        pad_if_needed: bool = True,
        rules: Mapping[str, TargetRule] | None = None,
    ):
        self.size = _pair(size, "RandomCrop")
        self.pad_if_needed = pad_if_needed
        self.rules = TARGET_RULES if rules is None else rules

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = _size_of(sample, _maps(sample, self.rules))
        h, w = self.size
        if not self.pad_if_needed and (height < h or width < w):
            raise DataError(
                f"sample {_sample_id(sample)!r}: RandomCrop of {h}x{w} on a {height}x{width} sample "
                f"with pad_if_needed=False"
            )
        # Negative offsets place the (smaller) map inside a padded window.
        top = int(rng.integers(min(0, height - h), max(0, height - h) + 1))
        left = int(rng.integers(min(0, width - w), max(0, width - w) + 1))
        return _apply(sample, self.rules, lambda x, rule: _window(x, rule.fill, top, left, self.size))

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, pad_if_needed={self.pad_if_needed})"


class CenterCrop:
    """Crop the central ``(H, W)`` window (PSD: 416×416); smaller maps are padded evenly with fill."""

    def __init__(self, size: int | Sequence[int], *, rules: Mapping[str, TargetRule] | None = None):
        self.size = _pair(size, "CenterCrop")
        self.rules = TARGET_RULES if rules is None else rules

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = _size_of(sample, _maps(sample, self.rules))
        top, left = (height - self.size[0]) // 2, (width - self.size[1]) // 2
        return _apply(sample, self.rules, lambda x, rule: _window(x, rule.fill, top, left, self.size))

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class RandomHorizontalFlip:
    """Mirror every map left-right with probability ``p``; normals get their x component negated.

    Mirroring the image is mirroring the scene about the camera's y–z plane, which maps a surface
    normal ``(x, y, z)`` to ``(−x, y, z)``. Zero (invalid) normals stay zero.
    """

    def __init__(self, p: float = 0.5, *, rules: Mapping[str, TargetRule] | None = None):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p
        self.rules = TARGET_RULES if rules is None else rules

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return dict(sample)

        def fn(x: Tensor, rule: TargetRule) -> Tensor:
            x = x.flip(-1)
            if rule.vector:
                x = torch.cat([-x[:, :1], x[:, 1:]], dim=1)
            return x

        return _apply(sample, self.rules, fn)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomRotation:
    """Rotate every map in-plane about its centre by a uniform angle in ``[−degrees, degrees]``.

    Positive angles turn the picture counter-clockwise as displayed (torchvision's convention). The
    image is resampled bilinearly, other maps with nearest-neighbour; corners rotated in from outside
    get each key's fill value (image 0, labels 255, depth and normals 0 = invalid). The size is
    unchanged. Rotating the picture about its centre is (for a principal point at the centre) rolling
    the camera about its optical axis, so the normals' (x, y) components are rotated by the same
    angle and z is kept. PASCAL-Context recipe: ±20°.
    """

    def __init__(self, degrees: float, *, rules: Mapping[str, TargetRule] | None = None):
        if degrees < 0:
            raise ConfigError(f"RandomRotation: degrees must be >= 0, got {degrees}")
        self.degrees = float(degrees)
        self.rules = TARGET_RULES if rules is None else rules

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        angle = math.radians(float(rng.uniform(-self.degrees, self.degrees)))
        height, width = _size_of(sample, _maps(sample, self.rules))
        c, s = math.cos(angle), math.sin(angle)
        # Pixel offsets from the centre (x right, y down) move as out = R·in with
        # R = [[c, s], [−s, c]] (counter-clockwise on screen). grid_sample needs in = R⁻¹·out in
        # normalised coordinates, whose x and y units are W/2 and H/2 pixels.
        theta = torch.tensor([[[c, -s * height / width, 0.0], [s * width / height, c, 0.0]]])
        rotation = torch.tensor([[c, s], [-s, c]])

        def fn(x: Tensor, rule: TargetRule) -> Tensor:
            grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
            # Zero padding shifted by the fill value gives "fill" outside the view.
            shifted = x - rule.fill
            mode = "bilinear" if rule.smooth else "nearest"
            out = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=False)
            out = out + rule.fill
            if rule.vector:
                xy = torch.einsum("ij,bjhw->bihw", rotation.to(out), out[:, :2])
                out = torch.cat([xy, out[:, 2:]], dim=1)
            return out

        return _apply(sample, self.rules, fn)

    def __repr__(self) -> str:
        return f"RandomRotation(degrees={self.degrees})"


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights torchvision's grayscale uses


def _gray(image: Tensor) -> Tensor:
    r, g, b = image.unbind(dim=-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def _shift_hue(image: Tensor, shift: float) -> Tensor:
    """Rotate the hue of an RGB ``(3, H, W)`` image in [0, 1] by ``shift`` turns (HSV space)."""
    r, g, b = image.unbind(dim=0)
    value = image.amax(dim=0)
    chroma = value - image.amin(dim=0)
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, 1.0), 0.0)
    hue = torch.where(
        value == r,
        ((g - b) / safe_chroma) % 6.0,
        torch.where(value == g, (b - r) / safe_chroma + 2.0, (r - g) / safe_chroma + 4.0),
    )
    hue = torch.where(chroma > 0, hue, 0.0) / 6.0
    hue = (hue + shift) % 1.0
    # HSV → RGB: channel n ∈ {5, 3, 1} (R, G, B) is v − v·s·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6.
    n = torch.tensor([5.0, 3.0, 1.0], dtype=image.dtype, device=image.device).view(3, 1, 1)
    k = (n + 6.0 * hue) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value - value * saturation * ramp


class PhotometricJitter:
    """Random brightness, contrast, saturation and hue changes of the image only; targets untouched.

    As torchvision's ColorJitter: factors ``b, c, s`` are drawn from ``[max(0, 1 − x), 1 + x]`` and a
    hue shift from ``[−hue, hue]`` (in turns, ``hue ≤ 0.5``); the four operations are applied in a
    random order, each followed by clamping to [0, 1]. Brightness multiplies the image by ``b``;
    contrast blends with the mean grey level; saturation blends with the per-pixel grey image
    (BT.601 weights); hue rotates in HSV space.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if value < 0:
                raise ConfigError(f"PhotometricJitter: {name} must be >= 0, got {value}")
        if not 0.0 <= hue <= 0.5:
            raise ConfigError(f"PhotometricJitter: hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        # Always draw the same count of numbers, so the stream consumed does not depend on settings.
        order = rng.permutation(4)
        b = rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)
        c = rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)
        s = rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)
        h = rng.uniform(-self.hue, self.hue)
        if "image" not in sample:
            return dict(sample)
        image: Tensor = sample["image"]
        if image.ndim != 3 or image.shape[0] != 3:
            raise DataError(
                f"sample {_sample_id(sample)!r}: PhotometricJitter: image: expected (3, H, W), got {tuple(image.shape)}"
            )
        operations: list[Callable[[Tensor], Tensor]] = [
            lambda x: x * b,
            lambda x: c * x + (1 - c) * _gray(x).mean(),
            lambda x: s * x + (1 - s) * _gray(x),
            lambda x: _shift_hue(x, h),
        ]
        out = image
        for index in order:
            out = operations[int(index)](out).clamp(0.0, 1.0)
        return {**sample, "image": out.to(image.dtype)}

    def __repr__(self) -> str:
        return (
            f"PhotometricJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue})"
        )
