"""PAD-Net's contour loss: plain binary cross-entropy (seed 001, Sec. 3.6), the ``loss.edge: ce`` option."""

from __future__ import annotations

import math

import pytest
import torch

from mtdense.config import validate_config
from mtdense.engine.setup import build_tasks
from mtdense.losses import BalancedBCELoss, BCELoss, bce_loss


def test_bce_values_by_hand():
    """Logits (0, 2, −1, 5) against (1, 1, 0, ignore): per pixel log 2, log(1 + e^−2), log(1 + e^−1);
    the ignored pixel counts nothing, so the loss is their mean over 3 pixels."""
    pred = torch.tensor([0.0, 2.0, -1.0, 5.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 1.0, 0.0, 255.0]).view(1, 1, 2, 2)
    expected = (math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 3
    assert bce_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    assert BCELoss()(pred, target).item() == pytest.approx(expected, rel=1e-6)
    # both classes weigh 1: twice the balanced loss at w = 0.5
    assert BalancedBCELoss(pos_weight=0.5)(pred, target).item() == pytest.approx(expected / 2, rel=1e-6)


def test_no_valid_pixel_gives_zero_with_gradient():
    pred = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = bce_loss(pred, torch.full((1, 1, 2, 2), 255.0))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_config_chooses_the_edge_loss():
    base = {"model": {"name": "mtl"}, "data": {"tasks": ["edge"]}}
    assert isinstance(build_tasks(validate_config(base), {}).get("edge").loss_fn, BalancedBCELoss)
    ce = validate_config({**base, "loss": {"edge": "ce"}})
    assert isinstance(build_tasks(ce, {})["edge"].loss_fn, BCELoss)
