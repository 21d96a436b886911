"""MTI-Net (seed 002): Eq. (1) distillation, the FPM (Sec. 2.4) and the multi-scale wiring.

Hand-checked distillation cases use one channel per task on a 1x1 map: a 3x3 conv with padding 1 then
sees only its centre tap, i.e. it multiplies by the centre weight.
"""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import nn

from mtdense.errors import ConfigError, ShapeError
from mtdense.models import build_model
from mtdense.models.layers.blocks import BasicBlock, residual_block
from mtdense.models.layers.distillation import PairwiseGatedDistillation
from mtdense.models.layers.heads import FuseLevels, PanopticFPNHead
from mtdense.models.mtinet import (
    FeaturePropagation,
    MTINet,
    MTINetConfig,
    MultiScaleHRNetHead,
    TaskBatchedBasicBlock,
)

HEADS = {"semseg": 5, "depth": 1}
AUX = {"normals": 3, "edge": 1}
ALL = {**HEADS, **AUX}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _scalar_conv(conv: nn.Conv2d, value: float) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = value


def _mtinet(backbone: str = "hrnet_w18_small_v2", aux: dict[str, int] | None = None, **cfg) -> MTINet:
    torch.manual_seed(0)
    config = MTINetConfig.model_validate({"name": "mtinet", "backbone": {"name": backbone}, **cfg})
    return build_model(config, heads=HEADS, aux_heads=AUX if aux is None else aux)


# ------------------------------------------------------------------------------------------------
# Multi-modal distillation, Eq. (1)
# ------------------------------------------------------------------------------------------------
def test_eq1_by_hand() -> None:
    """``F^o_a = F_a + sigma(W_{a,b} F_b) (W'_{a,b} F_b) + sigma(W_{a,c} F_c) (W'_{a,c} F_c)``: the gate
    comes from the *source*. F = (2, 3, -1); W_{a,b} = 0.5, W'_{a,b} = 4, W_{a,c} = 1, W'_{a,c} = 2:
    F^o_a = 2 + sigma(1.5) * 12 + sigma(-1) * (-2). Only ``a`` is a target (``b``, ``c`` are not refined)."""
    module = PairwiseGatedDistillation({"a": 1, "b": 1, "c": 1}, ["a"])
    _scalar_conv(module.gate["a"]["b"], 0.5)
    _scalar_conv(module.message["a"]["b"], 4.0)
    _scalar_conv(module.gate["a"]["c"], 1.0)
    _scalar_conv(module.message["a"]["c"], 2.0)
    out = module({k: torch.full((1, 1, 1, 1), v) for k, v in {"a": 2.0, "b": 3.0, "c": -1.0}.items()})
    assert set(out) == {"a"}
    assert out["a"].item() == pytest.approx(2 + 12 * _sigmoid(1.5) - 2 * _sigmoid(-1.0))
    assert set(module.gate["a"]) == {"b", "c"}  # no self-pair


def test_eq1_is_a_residual_of_gated_messages() -> None:
    """The fused forward (one conv per source) equals the per-pair evaluation of Eq. (1) with random
    weights and unequal widths; zeroing every message conv ``W'`` returns the targets unchanged, whatever
    the gates; all convs are bias-free."""
    channels = {"semseg": 3, "depth": 2, "normals": 4, "edge": 1}
    torch.manual_seed(0)
    module = PairwiseGatedDistillation(channels, ["semseg", "depth"])
    assert all(m.bias is None for m in module.modules() if isinstance(m, nn.Conv2d))
    g = torch.Generator().manual_seed(1)
    feats = {t: torch.randn(2, c, 5, 7, generator=g) for t, c in channels.items()}
    out, ref = module(feats), module.reference_forward(feats)
    for t in ("semseg", "depth"):
        assert out[t].shape == feats[t].shape
        torch.testing.assert_close(out[t], ref[t], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out[t], feats[t])
    with torch.no_grad():
        for m in module.message.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
    out = module(feats)
    for t in ("semseg", "depth"):
        torch.testing.assert_close(out[t], feats[t], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Task-batched BasicBlocks
# ------------------------------------------------------------------------------------------------
def _block_of_task(batched: TaskBatchedBasicBlock, t: int) -> nn.Module:
    """Task ``t``'s torchvision BasicBlock on ``[x, u_t]``, with its weights sliced out of ``batched``."""
    c, cx, cu = batched.out_channels, batched.shared_channels, batched.task_channels
    ref = residual_block(BasicBlock, cx + cu, c)
    rows = slice(t * c, (t + 1) * c)
    parts = [m.weight[rows] for m in (batched.conv1_shared, batched.conv1_task) if m is not None]
    downs = [m.weight[rows] for m in (batched.down_shared, batched.down_task) if m is not None]
    with torch.no_grad():
        ref.conv1.weight.copy_(torch.cat(parts, dim=1))
        ref.conv2.weight.copy_(batched.conv2.weight[rows])
        pairs = [(ref.bn1, batched.bn1), (ref.bn2, batched.bn2)]
        if ref.downsample is not None:
            ref.downsample[0].weight.copy_(torch.cat(downs, dim=1))
            pairs.append((ref.downsample[1], batched.down_bn))
        for r, b in pairs:
            r.weight.copy_(b.weight[rows])
            r.bias.copy_(b.bias[rows])
    return ref


@pytest.mark.parametrize(
    ("cx", "cu", "c"),
    [(4, 3, 4), (4, 0, 4), (0, 4, 4), (4, 0, 6), (2, 2, 4)],
    ids=["shared+task", "shared-identity", "task-identity", "shared-proj", "concat-identity"],
)
def test_task_batched_block_equals_separate_basic_blocks(cx: int, cu: int, c: int) -> None:
    """Three tasks: output slice ``t`` equals a torchvision BasicBlock(``cx + cu -> c``) applied to
    ``[x, u_t]`` with the same weights (train-mode BN: batch statistics are per channel, so per task);
    the default initialisation has the per-task fan-in (uniform bound ``1/sqrt(9 (cx + cu))``)."""
    torch.manual_seed(0)
    block = TaskBatchedBasicBlock(3, shared_channels=cx, task_channels=cu, out_channels=c).train()
    bound = (9 * (cx + cu)) ** -0.5
    first = block.conv1_shared if cx else block.conv1_task
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, cx, 5, 6, generator=g) if cx else None
    u = torch.randn(2, 3 * cu, 5, 6, generator=g) if cu else None
    out = block(x, u)
    assert out.shape == (2, 3 * c, 5, 6)
    for t in range(3):
        inputs = [v for v in (x, None if u is None else u[:, t * cu : (t + 1) * cu]) if v is not None]
        expected = _block_of_task(block, t).train()(torch.cat(inputs, dim=1))
        torch.testing.assert_close(out[:, t * c : (t + 1) * c], expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Feature propagation module
# ------------------------------------------------------------------------------------------------
def _fpm_inputs(n: int = 3, c: int = 8) -> tuple[FeaturePropagation, torch.Tensor]:
    torch.manual_seed(0)
    fpm = FeaturePropagation([f"t{i}" for i in range(n)], c, se_reduction=4).eval()
    return fpm, torch.randn(2, n * c, 6, 5, generator=torch.Generator().manual_seed(2))


def test_fpm_attention_sums_to_one_over_tasks() -> None:
    """The softmax runs along the task dimension (paper), not over groups of adjacent channels (authors'
    code): ``A`` is ``(B, N, C, H, W)``, positive, sums to 1 over ``N`` and not over ``C``."""
    fpm, x = _fpm_inputs()
    with torch.no_grad():
        att = fpm.attention(x)
    assert att.shape == (2, 3, 8, 6, 5)
    assert (att > 0).all()
    torch.testing.assert_close(att.sum(dim=1), torch.ones(2, 8, 6, 5))
    assert not torch.allclose(att.sum(dim=2), torch.ones(2, 3, 6, 5))


def test_fpm_output_is_se_of_shared_plus_task_feature() -> None:
    """``out_t = SE_t(S) + F_t`` with ``S = BasicBlock(N*C -> C)(A * X)``, recomputed from the parts:
    ``X`` the task-major concatenation, ``f`` = two BasicBlocks to ``N*C/4`` + 1x1 conv back to ``N*C``."""
    fpm, x = _fpm_inputs()
    with torch.no_grad():
        attended = (fpm.attention(x) * x.reshape(2, 3, 8, 6, 5)).reshape(2, 24, 6, 5)
        shared = fpm.reduce(attended)
        out = fpm(x)
    assert out.shape == x.shape
    for i, t in enumerate(fpm.tasks):
        task = slice(8 * i, 8 * (i + 1))
        torch.testing.assert_close(out[:, task], fpm.se[t](shared) + x[:, task])
    assert fpm.harmonize[0].conv1.out_channels == 6  # N*C/4 = 24/4
    assert fpm.harmonize[2].out_channels == 24
    with pytest.raises(ShapeError, match=r"expected \(B, 24, H, W\)"):
        fpm(x[:, :16])


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------
def test_deep_supervision_at_every_scale_for_every_task() -> None:
    """``initial/s<r>/<task>`` for r in 4..32 and every task incl. auxiliary, at ceil(size / r); finals
    at the input size; the HRNet aggregation reads 18 + 36 + 72 + 144 = 270 channels."""
    model = _mtinet().eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 48))
    expected = {f"initial/s{r}/{t}" for r in (4, 8, 16, 32) for t in ALL} | set(HEADS)
    assert set(out) == expected
    for r in (4, 8, 16, 32):
        for t, k in ALL.items():
            assert out[f"initial/s{r}/{t}"].shape == (1, k, math.ceil(64 / r), math.ceil(48 / r))
    for t, k in HEADS.items():
        assert out[t].shape == (1, k, 64, 48)
    assert model.aggregation_kind == "hrnet"
    assert model.aggregation["depth"].head.conv[0].in_channels == 270


def test_scales_subset_and_no_aux() -> None:
    """Table 3: scales {1/4, 1/16} only, no auxiliary tasks: only those deep-supervision outputs; the
    1/4 blocks read 18 + 72 channels (backbone + propagated from 1/16)."""
    model = _mtinet(aux={}, scales=[16, 4]).eval()
    assert model.scales == [16, 4]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert set(out) == {f"initial/s{r}/{t}" for r in (4, 16) for t in HEADS} | set(HEADS)
    assert model.initial["s4"].in_channels == 18 + 72
    assert set(model.fpm) == {"s16"}


def test_fpm_switch() -> None:
    """With FPM: one FPM per scale but the finest, and the finer scales read [x_s, FPM output]. Without:
    no FPM, every scale reads only x_s, and the 1/4 initial predictions no longer depend on the 1/32
    task blocks (scales are processed in isolation, Sec. 2.4)."""
    with_fpm = _mtinet()
    assert set(with_fpm.fpm) == {"s32", "s16", "s8"}
    assert [with_fpm.initial[f"s{r}"].in_channels for r in (32, 16, 8, 4)] == [
        144,
        72 + 144,
        36 + 72,
        18 + 36,
    ]
    without = _mtinet(fpm=False)
    assert len(without.fpm) == 0
    assert not any(isinstance(m, FeaturePropagation) for m in without.modules())
    assert [without.initial[f"s{r}"].in_channels for r in (32, 16, 8, 4)] == [144, 72, 36, 18]

    for model, depends in ((with_fpm, True), (without, False)):
        model.train()
        out = model(torch.rand(2, 3, 64, 64))
        coarse = list(model.initial["s32"].parameters())
        grads = torch.autograd.grad(out["initial/s4/depth"].sum(), coarse, allow_unused=True)
        assert any(g is not None for g in grads) == depends


def test_backward_reaches_every_head_parameter() -> None:
    """With a subset of scales (unused HRNet branches get no gradient, by design) every parameter
    outside the backbone receives a finite gradient."""
    model = _mtinet(scales=[4, 8]).train()
    out = model(torch.rand(2, 3, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    params = [(n, p) for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert [n for n, p in params if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for _, p in params)


def test_fpn_backbone_uses_panoptic_aggregation() -> None:
    """Supplementary A.2: on FPN the aggregation decodes like Panoptic FPN (``auto``); either kind can be
    forced on any backbone."""
    model = _mtinet("fpn_resnet18", aux={}).eval()
    assert model.aggregation_kind == "fpn"
    assert isinstance(model.aggregation["semseg"], PanopticFPNHead)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64))["semseg"].shape == (1, 5, 64, 64)
    forced = _mtinet(aggregation="fpn").eval()
    assert isinstance(forced.aggregation["depth"], PanopticFPNHead)
    with torch.no_grad():
        assert forced(torch.rand(1, 3, 48, 64))["depth"].shape == (1, 1, 48, 64)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"model.scales: reduction 2"):
        _mtinet(scales=[2, 4])
    # a dilated ResNet has three levels at 1/8: not a multi-scale backbone
    dilated = MTINetConfig.model_validate({"name": "mtinet", "backbone": {"name": "resnet18", "output_stride": 8}})
    with pytest.raises(ConfigError, match="reduction 8 must be exactly one level"):
        build_model(dilated, heads=HEADS, aux_heads={})
    with pytest.raises(pydantic.ValidationError, match="distinct"):
        MTINetConfig.model_validate({"name": "mtinet", "scales": [4, 4]})
    with pytest.raises(pydantic.ValidationError):
        MTINetConfig.model_validate({"name": "mtinet", "scales": []})
    with pytest.raises(pydantic.ValidationError):
        MTINetConfig.model_validate({"name": "mtinet", "fpm": "yes"})


@pytest.mark.parametrize("train", [True, False])
def test_aggregation_head_equals_hrnet_head_on_fused_maps(train: bool) -> None:
    """``MultiScaleHRNetHead`` (project each scale, then upsample and sum) equals the HRNet head on the
    upsampled-and-concatenated maps (its definition) in train and eval mode, up to float rounding."""
    torch.manual_seed(0)
    head = MultiScaleHRNetHead([4, 6, 8], 3).train(train)
    reference = nn.Sequential(FuseLevels(), head.head)
    g = torch.Generator().manual_seed(3)
    maps = [torch.randn(2, c, s, s + 1, generator=g) for c, s in ((4, 13), (6, 7), (8, 4))]
    if not train:
        with torch.no_grad():
            head.head.conv[1].running_mean.uniform_(-1, 1)
            head.head.conv[1].running_var.uniform_(0.5, 2)
    with torch.no_grad():
        torch.testing.assert_close(head(maps), reference(maps), rtol=1e-4, atol=1e-5)
