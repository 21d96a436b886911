"""Per-task losses: values derived by hand on tiny maps, masking, gradients, shape errors, registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtdense.errors import ConfigError, ShapeError
from mtdense.losses import (
    LOSSES,
    BerHuLoss,
    CrossEntropyLoss,
    UnknownNameError,
    balanced_bce_loss,
    berhu_loss,
    build_loss,
    cross_entropy_loss,
    depth_l1_loss,
    depth_l2_loss,
    normals_cosine_loss,
    normals_l1_loss,
    normals_l2_loss,
)

NAN, INF = float("nan"), float("inf")


def _row(values: list[float], channels: int = 1) -> torch.Tensor:
    """A (1, channels, 1, W) map from a flat list of length channels·W (channel-major)."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, channels, 1, -1)


# ---------------------------------------------------------------------------------- cross-entropy


def _ce_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Three pixels, K = 2.

    pixel 0: logits (0, 0), label 1      → p = 1/2, nll = log 2
    pixel 1: logits (log 3, 0), label 0  → p = 3/4, nll = log(4/3)
    pixel 2: logits (9, −9), label 255   → ignored
    """
    logits = torch.tensor([[0.0, math.log(3.0), 9.0], [0.0, 0.0, -9.0]]).reshape(1, 2, 1, 3)
    labels = torch.tensor([[[1, 0, 255]]])
    return logits.requires_grad_(), labels


def test_cross_entropy_value_ignores_255():
    logits, labels = _ce_inputs()
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert cross_entropy_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_class_weights_follow_weighted_mean():
    """Weights (1, 3): (3·log 2 + 1·log(4/3)) / (3 + 1); equals torch's weighted mean."""
    logits, labels = _ce_inputs()
    weights = torch.tensor([1.0, 3.0])
    expected = (3 * math.log(2.0) + math.log(4.0 / 3.0)) / 4
    value = CrossEntropyLoss(class_weights=[1.0, 3.0])(logits, labels)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    reference = F.cross_entropy(logits, labels, weight=weights, ignore_index=255)
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)


def test_cross_entropy_gradient_zero_on_ignored_pixel():
    logits, labels = _ce_inputs()
    cross_entropy_loss(logits, labels).backward()
    assert torch.all(logits.grad[..., 2] == 0)
    assert torch.all(logits.grad[..., :2] != 0)


def test_cross_entropy_all_ignored_is_zero_not_nan():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    labels = torch.full((2, 3, 3), 255)
    for weights in (None, torch.ones(4)):
        value = cross_entropy_loss(logits, labels, class_weights=weights)
        assert value.item() == 0.0 and value.requires_grad
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.all(grad == 0)


def test_cross_entropy_shape_and_dtype_errors():
    logits = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ShapeError, match=r"expected \(1, 4, 4\).*got shape \(1, 4, 5\)"):
        cross_entropy_loss(logits, torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ShapeError, match="integer"):
        cross_entropy_loss(logits, torch.zeros(1, 4, 4))
    with pytest.raises(ShapeError, match=r"class_weights.*\(3,\)"):
        cross_entropy_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long), class_weights=torch.ones(2))
    with pytest.raises(ShapeError, match="pred"):
        cross_entropy_loss(torch.zeros(3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


# ---------------------------------------------------------------------------------- depth


def _depth_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """pred (1, 2, 3, 4, 7); target (2, 0, 5, NaN, inf): only pixels 0 and 2 are valid.

    residuals on valid pixels: 1 − 2 = −1 and 3 − 5 = −2.
    """
    return _row([1.0, 2.0, 3.0, 4.0, 7.0]).requires_grad_(), _row([2.0, 0.0, 5.0, NAN, INF])


def test_depth_l1_value_and_gradient():
    """L1 = (1 + 2)/2 = 1.5; dL/dpred = sign(d)/2 = −0.5 on valid pixels, 0 elsewhere."""
    pred, target = _depth_inputs()
    value = depth_l1_loss(pred, target)
    assert value.item() == pytest.approx(1.5)
    value.backward()
    assert pred.grad.flatten().tolist() == pytest.approx([-0.5, 0.0, -0.5, 0.0, 0.0])


def test_depth_l2_value_and_gradient():
    """L2 = (1 + 4)/2 = 2.5; dL/dpred = 2d/2 = d: −1 and −2 on the valid pixels."""
    pred, target = _depth_inputs()
    value = depth_l2_loss(pred, target)
    assert value.item() == pytest.approx(2.5)
    value.backward()
    assert pred.grad.flatten().tolist() == pytest.approx([-1.0, 0.0, -2.0, 0.0, 0.0])


def _berhu_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Valid residuals d = (0.5, −1, 5); an invalid pixel (target 0) with d = 100 must not set c.

    c = max|d|/5 = 5/5 = 1.
      |0.5| ≤ c → 0.5          (L1 branch)
      |−1| ≤ c → 1             (boundary, L1 branch)
      |5| > c  → (25 + 1)/2 = 13
    mean over the 3 valid pixels: 14.5/3.
    """
    pred = _row([1.5, 1.0, 7.0, 100.0]).requires_grad_()
    target = _row([1.0, 2.0, 2.0, 0.0])
    return pred, target


def test_berhu_value_both_branches():
    pred, target = _berhu_inputs()
    assert berhu_loss(pred, target).item() == pytest.approx(14.5 / 3, rel=1e-6)


def test_berhu_gradient_treats_c_as_constant():
    """With c detached: dL/dd = sign(d)/3 on the L1 branch and (d/c)/3 = 5/3 on the quadratic one.

    Were c not detached the quadratic pixel (which also sets c) would get an extra
    ∂L/∂c·∂c/∂d = ((c² − d²)/(2c²))/3 · 1/5 = (−12/3)/5 = −0.8.
    """
    pred, target = _berhu_inputs()
    berhu_loss(pred, target).backward()
    assert pred.grad.flatten().tolist() == pytest.approx([1 / 3, -1 / 3, 5 / 3, 0.0], rel=1e-6)


def test_berhu_continuous_at_threshold_and_custom_fraction():
    """threshold_fraction = 1 → c = max|d| = 2: d = (2, 1) are both on the L1 branch → (2 + 1)/2.

    With the default 1/5, c = 0.4: (4 + 0.16)/0.8 = 5.2 and (1 + 0.16)/0.8 = 1.45 → mean 3.325.
    """
    pred, target = _row([3.0, 2.0]), _row([1.0, 1.0])
    assert BerHuLoss(threshold_fraction=1.0)(pred, target).item() == pytest.approx(1.5)
    assert berhu_loss(pred, target).item() == pytest.approx(3.325, rel=1e-6)
    # At |d| = c both branches give c: (c² + c²)/(2c) = c.
    c = torch.tensor(0.7)
    assert ((c * c + c * c) / (2 * c)).item() == pytest.approx(c.item())


def test_berhu_perfect_prediction_is_zero_with_finite_gradient():
    pred = _row([1.0, 2.0]).requires_grad_()
    value = berhu_loss(pred, _row([1.0, 2.0]))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("loss", [depth_l1_loss, depth_l2_loss, berhu_loss])
def test_depth_all_invalid_is_zero_not_nan(loss):
    pred = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 0, 0] = NAN
    value = loss(pred, target)
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.all(pred.grad == 0)


@pytest.mark.parametrize("loss", [depth_l1_loss, depth_l2_loss, berhu_loss])
def test_depth_shape_errors(loss):
    with pytest.raises(ShapeError, match=r"pred: expected \(B, 1, H, W\), got shape \(2, 2, 4, 4\)"):
        loss(torch.zeros(2, 2, 4, 4), torch.ones(2, 1, 4, 4))
    with pytest.raises(ShapeError, match=r"target: expected \(2, 1, 4, 4\)"):
        loss(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 5))


# ---------------------------------------------------------------------------------- normals


def _normals_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Four pixels (x, y, z per pixel):

    pixel 0: pred (2, 0, 0) → n̂ = (1, 0, 0); target (0, 1, 0): L1 (1 + 1 + 0)/3 = 2/3; 1 − cos = 1
    pixel 1: pred (0, 0, −5) → (0, 0, −1);  target (0, 0, −1): L1 0;             1 − cos = 0
    pixel 2: pred (−3, 0, 0) → (−1, 0, 0); target (1, 0, 0):  L1 2/3;            1 − cos = 2
    pixel 3: pred (1, 1, 1); target (0, 0, 0): invalid
    L1 mean = (2/3 + 0 + 2/3)/3 = 4/9; cosine mean = (1 + 0 + 2)/3 = 1.
    """
    pred = torch.tensor([[2.0, 0.0, -3.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0, -5.0, 0.0, 1.0]])
    target = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    return pred.reshape(1, 3, 1, 4).requires_grad_(), target.reshape(1, 3, 1, 4)


def test_normals_l1_value_and_masking():
    pred, target = _normals_inputs()
    value = normals_l1_loss(pred, target)
    assert value.item() == pytest.approx(4 / 9, rel=1e-6)
    value.backward()
    assert torch.all(pred.grad[..., 3] == 0)


def test_normals_cosine_value_scale_invariance_and_masking():
    pred, target = _normals_inputs()
    value = normals_cosine_loss(pred, target)
    assert value.item() == pytest.approx(1.0, rel=1e-6)
    assert normals_cosine_loss(pred * 7.0, target).item() == pytest.approx(1.0, rel=1e-6)
    value.backward()
    assert torch.all(pred.grad[..., 3] == 0)


def test_normals_l2_on_raw_prediction():
    """Same pixels, no normalisation: (2−0)² + (0−1)² = 5 → 5/3; (−5+1)² = 16 → 16/3;
    (−3−1)² = 16 → 16/3; mean over the 3 valid pixels = 37/9."""
    pred, target = _normals_inputs()
    value = normals_l2_loss(pred, target)
    assert value.item() == pytest.approx(37 / 9, rel=1e-6)
    value.backward()
    assert torch.all(pred.grad[..., 3] == 0)


@pytest.mark.parametrize("loss", [normals_l1_loss, normals_cosine_loss, normals_l2_loss])
def test_normals_zero_prediction_has_finite_gradient(loss):
    pred = torch.zeros(1, 3, 2, 2, requires_grad=True)
    target = torch.zeros(1, 3, 2, 2)
    target[:, 2] = -1.0
    loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("loss", [normals_l1_loss, normals_cosine_loss, normals_l2_loss])
def test_normals_all_invalid_is_zero(loss):
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.zeros(2, 3, 4, 4)
    target[1, :, 0, 0] = NAN
    value = loss(pred, target)
    assert value.item() == 0.0
    value.backward()
    assert torch.all(pred.grad == 0)


def test_normals_shape_error():
    with pytest.raises(ShapeError, match=r"expected \(B, 3, H, W\)"):
        normals_l1_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


# ---------------------------------------------------------------------------------- edges


def test_balanced_bce_value_by_hand():
    """Logits x and labels y; softplus(0) = log 2, softplus(log 3) = log 4 = 2 log 2.

    pixel 0: y = 1, x = 0      → 0.95 · softplus(−0)    = 0.95 log 2
    pixel 1: y = 0, x = 0      → 0.05 · softplus(0)     = 0.05 log 2
    pixel 2: y = 0, x = log 3  → 0.05 · softplus(log 3) = 0.10 log 2
    pixel 3: y = 255           → ignored
    mean over 3 valid pixels: 1.1 log 2 / 3.
    """
    pred = _row([0.0, 0.0, math.log(3.0), 50.0]).requires_grad_()
    target = _row([1.0, 0.0, 0.0, 255.0])
    value = balanced_bce_loss(pred, target)
    assert value.item() == pytest.approx(1.1 * math.log(2.0) / 3, rel=1e-6)
    value.backward()
    assert pred.grad[..., 3].item() == 0.0
    # d/dx of 0.95·softplus(−x) at 0 = −0.95·σ(0) = −0.475, divided by 3 valid pixels.
    assert pred.grad[..., 0].item() == pytest.approx(-0.475 / 3, rel=1e-6)


def test_balanced_bce_matches_weighted_bce_and_authors_convention():
    """Without ignored pixels the loss is Σ w_i·bce_i / N, the MTI-Net code's size-averaged sum;
    with w = 0.5 it is half the plain BCE."""
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 5, 5)
    labels = (torch.rand(2, 1, 5, 5) > 0.8).float()
    weight_map = torch.where(labels > 0.5, 0.95, 0.05)
    reference = F.binary_cross_entropy_with_logits(logits, labels, weight=weight_map, reduction="sum")
    assert balanced_bce_loss(logits, labels).item() == pytest.approx(reference.item() / 50, rel=1e-5)
    plain = F.binary_cross_entropy_with_logits(logits, labels)
    assert balanced_bce_loss(logits, labels, pos_weight=0.5).item() == pytest.approx(
        0.5 * plain.item(), rel=1e-5
    )


def test_balanced_bce_all_ignored_and_bad_weight():
    pred = torch.randn(1, 1, 3, 3, requires_grad=True)
    value = balanced_bce_loss(pred, torch.full((1, 1, 3, 3), 255.0))
    assert value.item() == 0.0
    value.backward()
    assert torch.all(pred.grad == 0)
    with pytest.raises(ConfigError, match="pos_weight"):
        build_loss("balanced_bce", pos_weight=1.5)


# ---------------------------------------------------------------------------------- registry


def test_registry_builds_every_loss_and_rejects_unknown():
    for name in LOSSES:
        assert isinstance(build_loss(name), torch.nn.Module)
    assert isinstance(build_loss("berhu", threshold_fraction=0.1), BerHuLoss)
    with pytest.raises(KeyError) as info:
        build_loss("focal")
    assert isinstance(info.value, UnknownNameError) and isinstance(info.value, ConfigError)
    assert "focal" in str(info.value) and "berhu" in str(info.value) and "cross_entropy" in str(info.value)
    with pytest.raises(ConfigError, match="bad arguments"):
        build_loss("l1", nonsense=3)


def test_cross_entropy_module_moves_weights_with_state_dict():
    loss = CrossEntropyLoss(class_weights=[1.0, 2.0])
    assert torch.equal(loss.state_dict()["class_weights"], torch.tensor([1.0, 2.0]))
