"""Contract tests on every registered backbone (timm-style): shapes, gradients, state dict, memory format."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from mtdense.backbones import build_backbone, list_backbones
from mtdense.errors import ShapeError

NAMES = list_backbones()


def _randomise_bn_statistics(model: torch.nn.Module, seed: int) -> None:
    """Give every BN running mean/var a non-default value, so that an unloaded buffer shows in the output.

    (Parameters already differ between two instances built under different seeds.)
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("size", [(64, 64), (65, 47)])
@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_feature_info(name, size, cached_backbone):
    """Level i has feature_info[i].channels and spatial size ceil(H / r_i) x ceil(W / r_i)."""
    model = cached_backbone(name)
    h, w = size
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    assert len(outs) == len(model.feature_info) == 4
    for out, info in zip(outs, model.feature_info, strict=True):
        assert out.shape == (1, info.channels, math.ceil(h / info.reduction), math.ceil(w / info.reduction))
        assert torch.isfinite(out).all()
    assert model.channels() == [f.channels for f in model.feature_info]
    assert model.reductions() == [4, 8, 16, 32]


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_backbone(name).train()
    outs = model(torch.randn(2, 3, 64, 64))
    # squared outputs: a plain sum would give exactly zero gradient behind a train-mode BN whose
    # output is only summed (the normalised output sums to a constant)
    loss = sum((o**2).mean() for o in outs)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:10]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not bad, f"non-finite or all-zero gradients: {bad[:10]}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name, cached_backbone):
    """save -> fresh instance (other init) -> load -> identical eval outputs.

    The source is a copy of the session's instance (built under seed 0) with random BN statistics, which
    saves one build of each backbone; the target is built under seed 3."""
    source = copy.deepcopy(cached_backbone(name))
    _randomise_bn_statistics(source, seed=2)
    source.eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)

    torch.manual_seed(3)
    target = build_backbone(name).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = source(x)
        before = target(x)
    assert any(not torch.equal(a, b) for a, b in zip(expected, before, strict=True))  # the test can fail

    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        after = target(x)
    for a, b in zip(expected, after, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches_contiguous(name, cached_backbone):
    model = cached_backbone(name)
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        expected = model(x)
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        got = cl_model(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(expected, got, strict=True):
        assert b.shape == a.shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())


@pytest.mark.parametrize("bad", [(1, 4, 32, 32), (3, 32, 32)])
def test_wrong_input_shape_raises(bad, cached_backbone):
    with pytest.raises(ShapeError, match=r"expected \(B, 3, H, W\), got shape"):
        cached_backbone("resnet18")(torch.randn(*bad))
