"""The losses give the same values and gradients whatever the memory layout of the prediction.

A channels-last model returns channels-last predictions; the cross-entropy then runs on a
``(pixels, classes)`` view of them (no NCHW copy) and the normals losses normalise by an explicit sum
of squares. These tests pin both against PyTorch's reference functions and the NCHW layout.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtdense.losses import cross_entropy_loss, normals_cosine_loss, normals_l1_loss
from mtdense.losses.semseg import _pixels_by_class

CL = torch.channels_last


def _labels(k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, k, (2, 6, 7), generator=g)
    labels[0, :2] = 255
    return labels


def _grad_of(loss_fn, logits: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.detach().clone().requires_grad_()
    value = loss_fn(x, *args, **kwargs)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("weights", [None, torch.tensor([0.5, 2.0, 1.0, 0.0, 3.0])])
def test_cross_entropy_channels_last_equals_nchw_and_reference(weights):
    logits = torch.randn(2, 5, 6, 7, generator=torch.Generator().manual_seed(0)) * 3
    labels = _labels(5)
    v_nchw, g_nchw = _grad_of(cross_entropy_loss, logits, labels, class_weights=weights)
    v_cl, g_cl = _grad_of(cross_entropy_loss, logits.contiguous(memory_format=CL), labels, class_weights=weights)
    reference = F.cross_entropy(logits, labels, weight=weights, ignore_index=255)  # PyTorch's weighted mean
    assert v_cl.item() == pytest.approx(reference.item(), rel=1e-5)
    assert v_nchw.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(g_cl, g_nchw, rtol=1e-5, atol=1e-7)
    assert g_cl[0, :, :2].abs().max().item() == 0.0  # ignored pixels: no gradient


def test_cross_entropy_channels_last_runs_on_a_view_without_copy():
    logits = torch.randn(2, 5, 6, 7).contiguous(memory_format=CL)
    flat, target = _pixels_by_class(logits, _labels(5))
    assert flat.shape == (2 * 6 * 7, 5) and flat.data_ptr() == logits.data_ptr()
    assert target.shape == (2 * 6 * 7,)
    # pixel (b, y, x) is row b*H*W + y*W + x, with its K logits in order
    torch.testing.assert_close(flat[1 * 42 + 3 * 7 + 4], logits[1, :, 3, 4], rtol=0, atol=0)
    nchw = torch.randn(2, 5, 6, 7)
    assert _pixels_by_class(nchw, _labels(5))[0] is nchw


@pytest.mark.parametrize("loss", [normals_l1_loss, normals_cosine_loss])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_normals_match_f_normalize_reference(loss, layout):
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 3, 5, 6, generator=g)
    pred[0, :, 0, 0] = 0.0  # a zero prediction: finite gradient, as F.normalize
    target = F.normalize(torch.randn(2, 3, 5, 6, generator=g), dim=1)
    target[1, :, 2] = 0.0  # invalid pixels
    valid = target.abs().sum(dim=1) > 0
    unit = F.normalize(pred, dim=1, eps=1e-12)
    if loss is normals_l1_loss:
        per_pixel = (unit - target).abs().mean(dim=1)
    else:
        per_pixel = 1.0 - (unit * target).sum(dim=1)
    reference = per_pixel[valid].mean()
    value, grad = _grad_of(loss, pred.contiguous(memory_format=layout), target)
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)
    x = pred.clone().requires_grad_()
    ref_pp = (F.normalize(x, dim=1, eps=1e-12) - target).abs().mean(dim=1) if loss is normals_l1_loss else None
    if ref_pp is None:
        ref_pp = 1.0 - (F.normalize(x, dim=1, eps=1e-12) * target).sum(dim=1)
    ref_pp[valid].mean().backward()
    torch.testing.assert_close(grad, x.grad, rtol=1e-4, atol=1e-6)
    assert torch.isfinite(grad).all()


def test_engine_losses_of_channels_last_outputs_equal_nchw():
    """The trainer's path: coarse channels-last outputs (as a channels-last MTI-Net returns them) are
    upsampled by the task and scored; the losses and gradients equal those of NCHW outputs."""
    from mtdense.engine.trainer import compute_losses
    from mtdense.tasks import NormalsTask, SemsegTask

    tasks = {"semseg": SemsegTask(5), "normals": NormalsTask()}
    g = torch.Generator().manual_seed(3)
    normals = F.normalize(torch.randn(2, 3, 16, 20, generator=g), dim=1)
    normals[0, :, :4] = 0.0
    labels = torch.randint(0, 5, (2, 16, 20), generator=g)
    labels[1, :, :3] = 255
    batch = {tasks["semseg"].target_key: labels, tasks["normals"].target_key: normals}
    coarse = {
        "semseg": torch.randn(2, 5, 16, 20, generator=g),
        "initial/s4/semseg": torch.randn(2, 5, 4, 5, generator=g),
        "initial/s4/normals": torch.randn(2, 3, 4, 5, generator=g),
    }
    results = []
    for layout in (torch.contiguous_format, CL):
        outputs = {k: v.clone(memory_format=layout).requires_grad_() for k, v in coarse.items()}
        losses = compute_losses(outputs, batch, tasks)
        sum(losses.values()).backward()
        results.append(({k: v.item() for k, v in losses.items()}, {k: v.grad for k, v in outputs.items()}))
    (l_nchw, g_nchw), (l_cl, g_cl) = results
    assert set(l_cl) == set(coarse) and all(l_cl[k] == pytest.approx(l_nchw[k], rel=1e-5) for k in coarse)
    for k in coarse:
        torch.testing.assert_close(g_cl[k], g_nchw[k], rtol=1e-4, atol=1e-7)
