"""Joint transforms: every target moves with the image and keeps its meaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtdense.data.transforms import (
    CenterCrop,
    Compose,
    PhotometricJitter,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    RandomScale,
    Resize,
    TargetRule,
    _shift_hue,
)
from mtdense.errors import ConfigError, DataError

KEYS = ("image", "semseg", "depth", "normals", "edge")


def make_sample(h: int = 8, w: int = 10, seed: int = 0, *, ignore: bool = True) -> dict:
    """A sample per the data contract with invalid pixels in every target."""
    g = torch.Generator().manual_seed(seed)
    semseg = torch.randint(0, 5, (h, w), generator=g)
    depth = 0.5 + 9 * torch.rand(1, h, w, generator=g)
    depth[0, 0, :3] = 0.0
    normals = torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0)
    normals[:, 1, :2] = 0.0
    edge = (torch.rand(1, h, w, generator=g) > 0.7).float()
    if ignore:
        semseg[-1, -2:] = 255
        edge[0, 0, -1] = 255.0
    return {
        "image": torch.rand(3, h, w, generator=g),
        "semseg": semseg,
        "depth": depth,
        "normals": normals,
        "edge": edge,
        "meta": {"id": f"s{seed}"},
    }


def _unit_or_zero(normals: torch.Tensor) -> bool:
    norm = normals.norm(dim=0)
    return bool(torch.all((norm == 0) | ((norm - 1).abs() < 1e-5)))


class _FixedAngle:
    """Stands in for the generator so that a rotation by exactly ``angle`` degrees can be tested."""

    def __init__(self, angle: float):
        self.angle = angle

    def uniform(self, low: float, high: float) -> float:
        return self.angle


# ---------------------------------------------------------------------------------- flip


def test_flip_twice_is_identity_and_input_untouched():
    sample = make_sample()
    snapshot = {k: sample[k].clone() for k in KEYS}
    flip = RandomHorizontalFlip(p=1.0)
    twice = flip(flip(sample, np.random.default_rng(0)), np.random.default_rng(1))
    for key in KEYS:
        assert torch.equal(twice[key], sample[key]), key
        assert torch.equal(sample[key], snapshot[key]), key
        assert twice[key].dtype == sample[key].dtype
    assert twice["meta"] is sample["meta"]


def test_flip_negates_normal_x_and_mirrors_every_map():
    sample = make_sample()
    out = RandomHorizontalFlip(p=1.0)(sample, np.random.default_rng(0))
    n = sample["normals"].flip(-1)
    assert torch.equal(out["normals"][0], -n[0])
    assert torch.equal(out["normals"][1:], n[1:])
    assert torch.all(out["normals"][:, 1, -2:] == 0)  # the zero vectors moved to the right end, still zero
    for key in ("image", "semseg", "depth", "edge"):
        assert torch.equal(out[key], sample[key].flip(-1)), key


def test_flip_probability_zero_changes_nothing():
    sample = make_sample()
    out = RandomHorizontalFlip(p=0.0)(sample, np.random.default_rng(0))
    assert all(torch.equal(out[k], sample[k]) for k in KEYS)


# ---------------------------------------------------------------------------------- crop


def test_crop_padding_values_and_content_kept():
    """A 4×5 sample in a 6×7 window: the 4×5 block appears intact somewhere, everything else is
    padding: image 0, semseg/edge 255, depth 0, normals zero vectors."""
    sample = make_sample(4, 5, ignore=False)
    out = RandomCrop((6, 7))(sample, np.random.default_rng(3))
    assert out["image"].shape == (3, 6, 7) and out["semseg"].shape == (6, 7)
    inside = out["semseg"] != 255
    rows, cols = torch.nonzero(inside, as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    assert int(inside.sum()) == 20 and int(rows.max()) == top + 3 and int(cols.max()) == left + 4
    block = (..., slice(top, top + 4), slice(left, left + 5))
    for key in KEYS:
        assert torch.equal(out[key][block], sample[key]), key
    outside = ~inside
    assert torch.all(out["image"][:, outside] == 0)
    assert torch.all(out["edge"][0][outside] == 255)
    assert torch.all(out["depth"][0][outside] == 0)
    assert torch.all(out["normals"][:, outside] == 0)


def test_crop_window_is_the_same_for_every_key():
    sample = make_sample(8, 10)
    sample["image"][0] = torch.arange(80.0).reshape(8, 10) / 80  # unique values reveal the offset
    out = RandomCrop(5)(sample, np.random.default_rng(7))
    first = round(out["image"][0, 0, 0].item() * 80)
    top, left = divmod(first, 10)
    for key in KEYS:
        assert torch.equal(out[key], sample[key][..., top : top + 5, left : left + 5]), key


def test_crop_without_padding_rejects_small_samples():
    with pytest.raises(DataError, match=r"'s0'.*6x7 on a 4x5"):
        RandomCrop((6, 7), pad_if_needed=False)(make_sample(4, 5), np.random.default_rng(0))


def test_center_crop_offsets():
    """(8 − 4)//2 = 2 rows, (10 − 6)//2 = 2 columns."""
    sample = make_sample(8, 10)
    out = CenterCrop((4, 6))(sample, np.random.default_rng(0))
    for key in KEYS:
        assert torch.equal(out[key], sample[key][..., 2:6, 2:8]), key


# ---------------------------------------------------------------------------------- scale / resize


def test_scale_divides_depth_by_the_factor():
    """A constant 2 m map zoomed ×1.5 becomes 12×15 and 2/1.5 m; without division it stays 2 m."""
    sample = make_sample(8, 10)
    sample["depth"] = torch.full((1, 8, 10), 2.0)
    out = RandomScale(scales=(1.5,))(sample, np.random.default_rng(0))
    assert out["depth"].shape == (1, 12, 15) and out["image"].shape == (3, 12, 15)
    assert torch.allclose(out["depth"], torch.full((1, 12, 15), 2.0 / 1.5))
    kept = RandomScale(scales=(1.5,), depth_divide=False)(sample, np.random.default_rng(0))
    assert torch.equal(kept["depth"], torch.full((1, 12, 15), 2.0))


@pytest.mark.parametrize("seed", range(4))
def test_scale_keeps_labels_in_their_set_and_never_blends_invalid_depth(seed):
    sample = make_sample(8, 10, seed)
    rng = np.random.default_rng(seed)
    out = RandomScale(scale_range=(0.6, 1.4))(sample, rng)
    scale = np.random.default_rng(seed).uniform(0.6, 1.4)  # the factor the transform drew
    assert out["semseg"].dtype == torch.int64
    assert set(out["semseg"].unique().tolist()) <= set(sample["semseg"].unique().tolist())
    assert set(out["edge"].unique().tolist()) <= {0.0, 1.0, 255.0}
    allowed = torch.cat([torch.zeros(1), sample["depth"].flatten() / scale])
    assert torch.isin(out["depth"], allowed).all()  # every depth is a copied (scaled) value or 0
    assert _unit_or_zero(out["normals"])
    assert out["image"].min() >= 0 and out["image"].max() <= 1


def test_scale_draws_from_the_discrete_set_and_bilinear_keeps_constants():
    sample = make_sample(8, 10)
    sample["image"] = torch.full((3, 8, 10), 0.3)
    sizes = set()
    for seed in range(12):
        out = RandomScale()(sample, np.random.default_rng(seed))
        sizes.add(tuple(out["image"].shape[-2:]))
        assert torch.allclose(out["image"], torch.tensor(0.3))
    assert sizes <= {(8, 10), (10, 12), (12, 15)} and len(sizes) > 1


def test_resize_for_evaluation_keeps_depth_values():
    sample = make_sample(8, 10)
    out = Resize((4, 5))(sample, np.random.default_rng(0))
    assert out["semseg"].shape == (4, 5) and out["normals"].shape == (3, 4, 5)
    assert torch.isin(out["depth"], sample["depth"]).all()
    assert set(out["semseg"].unique().tolist()) <= set(sample["semseg"].unique().tolist())


# ---------------------------------------------------------------------------------- rotation


def test_rotation_by_90_moves_maps_and_rotates_normals():
    """Counter-clockwise by 90° on a 5×9 map: the pixel 2 columns right of the centre (2, 4), i.e.
    (2, 6), goes 2 rows above it, (0, 4). A normal pointing right, (0.6, 0, −0.8), now points up,
    (0, −0.6, −0.8). Rows outside the rotated 5-wide band are filled."""
    sample = make_sample(5, 9)
    sample["semseg"] = torch.zeros(5, 9, dtype=torch.long)
    sample["semseg"][2, 6] = 1
    sample["normals"] = torch.tensor([0.6, 0.0, -0.8]).view(3, 1, 1).expand(3, 5, 9).clone()
    out = RandomRotation(90)(sample, _FixedAngle(90.0))
    assert out["semseg"].shape == (5, 9)
    assert out["semseg"][0, 4].item() == 1 and int((out["semseg"] == 1).sum()) == 1
    assert torch.all(out["semseg"][:, :2] == 255) and torch.all(out["depth"][0, :, -2:] == 0)
    inside = out["semseg"] != 255
    assert torch.allclose(out["normals"][:, inside], torch.tensor([[0.0], [-0.6], [-0.8]]), atol=1e-6)
    assert torch.all(out["normals"][:, ~inside] == 0)


def test_rotation_by_zero_is_identity():
    sample = make_sample(6, 8)
    out = RandomRotation(0)(sample, np.random.default_rng(0))
    assert torch.allclose(out["image"], sample["image"], atol=1e-6)
    for key in ("semseg", "depth", "normals", "edge"):
        assert torch.equal(out[key], sample[key]), key


def test_rotation_keeps_label_sets_and_unit_normals():
    sample = make_sample(16, 16)
    out = RandomRotation(30)(sample, np.random.default_rng(5))
    assert set(out["semseg"].unique().tolist()) <= set(sample["semseg"].unique().tolist()) | {255}
    assert _unit_or_zero(out["normals"])


# ---------------------------------------------------------------------------------- photometric


def test_photometric_jitter_changes_only_the_image():
    sample = make_sample()
    out = PhotometricJitter(0.4, 0.4, 0.4, 0.1)(sample, np.random.default_rng(0))
    for key in ("semseg", "depth", "normals", "edge"):
        assert out[key] is sample[key]
    assert not torch.equal(out["image"], sample["image"])
    assert out["image"].min() >= 0 and out["image"].max() <= 1 and out["image"].dtype == torch.float32


def test_photometric_brightness_is_a_uniform_factor():
    sample = make_sample()
    sample["image"] = sample["image"] * 0.5  # keep clear of the clamp
    out = PhotometricJitter(brightness=0.3)(sample, np.random.default_rng(2))
    ratio = out["image"] / sample["image"]
    assert torch.allclose(ratio, ratio.flatten()[0]) and 0.7 <= ratio.flatten()[0].item() <= 1.3


def test_hue_shift_by_hand():
    """Red (1, 0, 0) has hue 0: +1/3 turn → green, +1/6 → yellow (1, 1, 0), −1/3 → blue.
    Grey has no hue and is unchanged; a zero shift is the identity."""
    colours = torch.tensor([[1.0, 0.5, 0.2], [0.0, 0.5, 0.7], [0.0, 0.5, 0.4]]).view(3, 1, 3)
    red = colours[:, :, :1]
    assert torch.allclose(_shift_hue(red, 1 / 3).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(_shift_hue(red, 1 / 6).flatten(), torch.tensor([1.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(_shift_hue(red, -1 / 3).flatten(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(_shift_hue(colours[:, :, 1:2], 0.25), colours[:, :, 1:2], atol=1e-6)
    assert torch.allclose(_shift_hue(colours, 0.0), colours, atol=1e-6)


# ---------------------------------------------------------------------------------- plumbing


def test_same_seed_same_result_and_meta_passes_through():
    pipeline = Compose(
        [
            RandomScale(scale_range=(0.75, 1.25)),
            RandomRotation(20),
            RandomCrop((6, 6)),
            RandomHorizontalFlip(),
            PhotometricJitter(0.2, 0.2, 0.2, 0.05),
        ]
    )
    sample = make_sample()
    a = pipeline(sample, np.random.default_rng(11))
    b = pipeline(sample, np.random.default_rng(11))
    c = pipeline(sample, np.random.default_rng(12))
    assert all(torch.equal(a[k], b[k]) for k in KEYS)
    assert not torch.equal(a["image"], c["image"])
    assert a["meta"] is sample["meta"]


def test_absent_keys_are_skipped_and_extra_rules_accepted():
    sample = {"image": torch.rand(3, 4, 4), "meta": {"id": "x"}}
    out = RandomScale(scales=(2.0,))(sample, np.random.default_rng(0))
    assert set(out) == {"image", "meta"} and out["image"].shape == (3, 8, 8)
    rules = {"image": TargetRule(smooth=True), "mask": TargetRule(fill=7.0)}
    out = RandomCrop((6, 6), rules=rules)(
        {"image": torch.rand(3, 4, 4), "mask": torch.zeros(4, 4)}, np.random.default_rng(0)
    )
    assert set(out["mask"].unique().tolist()) == {0.0, 7.0}


def test_unknown_key_and_size_mismatch_are_data_errors():
    sample = make_sample()
    sample["flow"] = torch.zeros(2, 8, 10)
    with pytest.raises(DataError, match="'s0'.*'flow'"):
        RandomHorizontalFlip(1.0)(sample, np.random.default_rng(0))
    sample = make_sample()
    sample["depth"] = torch.ones(1, 8, 9)
    with pytest.raises(DataError, match="'depth' is 8x9"):
        Resize(4)(sample, np.random.default_rng(0))


def test_config_errors():
    with pytest.raises(ConfigError, match="either"):
        RandomScale(scales=(1.0,), scale_range=(0.5, 1.0))
    with pytest.raises(ConfigError, match="hue"):
        PhotometricJitter(hue=0.7)
