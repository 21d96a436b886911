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

from mtdense.errors import ConfigError
from mtdense.models import build_model
from mtdense.models.layers.distillation import PairwiseGatedDistillation
from mtdense.models.layers.heads import FuseLevels, PanopticFPNHead
from mtdense.models.mtinet import FeaturePropagation, MTINet, MTINetConfig, MultiScaleHRNetHead

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
# Feature propagation module
# ------------------------------------------------------------------------------------------------
def _fpm_inputs(n: int = 3, c: int = 8) -> tuple[FeaturePropagation, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    tasks = [f"t{i}" for i in range(n)]
    fpm = FeaturePropagation(tasks, c, se_reduction=4).eval()
    g = torch.Generator().manual_seed(2)
    return fpm, {t: torch.randn(2, c, 6, 5, generator=g) for t in tasks}


def test_fpm_attention_sums_to_one_over_tasks() -> None:
    """The softmax runs along the task dimension (paper), not over groups of adjacent channels (authors'
    code): ``A`` is ``(B, N, C, H, W)``, positive, sums to 1 over ``N`` and not over ``C``."""
    fpm, feats = _fpm_inputs()
    with torch.no_grad():
        att = fpm.attention(feats)
    assert att.shape == (2, 3, 8, 6, 5)
    assert (att > 0).all()
    torch.testing.assert_close(att.sum(dim=1), torch.ones(2, 8, 6, 5))
    assert not torch.allclose(att.sum(dim=2), torch.ones(2, 3, 6, 5))


def test_fpm_output_is_se_of_shared_plus_task_feature() -> None:
    """``out_t = SE_t(S) + F_t`` with ``S = BasicBlock(N*C -> C)(A * X)``, recomputed from the parts."""
    fpm, feats = _fpm_inputs()
    with torch.no_grad():
        x = torch.cat([feats[t] for t in fpm.tasks], dim=1)
        attended = (fpm.attention(feats) * x.reshape(2, 3, 8, 6, 5)).reshape(2, 24, 6, 5)
        shared = fpm.reduce(attended)
        out = fpm(feats)
    for t in fpm.tasks:
        torch.testing.assert_close(out[t], fpm.se[t](shared) + feats[t])
    assert fpm.harmonize[0].conv1.out_channels == 6  # N*C/4 = 24/4
    assert fpm.harmonize[2].out_channels == 24


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
        coarse = list(model.initial["s32"].blocks["depth"].parameters())
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
    dilated = MTINetConfig.model_validate(
        {"name": "mtinet", "backbone": {"name": "resnet18", "output_stride": 8}}
    )
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
