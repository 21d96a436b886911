"""PAD-Net (seed 001): distillation modules A/B/C checked against the paper's equations, and the model's
wiring in its two settings (``paper`` and the MTI-Net paper's ``mtinet_hrnet``).

Hand-checked cases use one channel per task on a 1x1 map: a 3x3 conv with padding 1 then sees only its
centre tap, so each conv is a scalar multiplication by the centre weight and the equations can be
evaluated by hand.
"""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import nn

from mtdense.backbones import fuse_hrnet_features
from mtdense.errors import ConfigError, ShapeError
from mtdense.models import build_model
from mtdense.models.layers.distillation import (
    AttentionGuidedDistillation,
    ConcatDistillation,
    MessagePassingDistillation,
    PairwiseGatedDistillation,
    build_distillation,
)
from mtdense.models.padnet import PADNet, PADNetConfig

HEADS = {"semseg": 5, "depth": 1}
AUX = {"normals": 3, "edge": 1}


def _scalar_conv(conv: nn.Conv2d, value: float) -> None:
    """Make a 1-in/1-out 3x3 conv multiply a 1x1 map by ``value`` (only the centre tap is inside)."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = value


def _scalars(**values: float) -> dict[str, torch.Tensor]:
    return {k: torch.full((1, 1, 1, 1), v) for k, v in values.items()}


def _random_features(channels: dict[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {t: torch.randn(2, c, 5, 6, generator=g) for t, c in channels.items()}


# ------------------------------------------------------------------------------------------------
# Distillation modules A, B, C
# ------------------------------------------------------------------------------------------------
def test_module_a_concatenates_every_task_for_every_target() -> None:
    """Module A: ``F^o = CONCAT(F^1, ..., F^T)`` in source order, the same map for each final task."""
    channels = {"semseg": 2, "depth": 3, "normals": 1}
    module = ConcatDistillation(channels, ["semseg", "depth"])
    feats = _random_features(channels)
    out = module(feats)
    expected = torch.cat([feats["semseg"], feats["depth"], feats["normals"]], dim=1)
    assert set(out) == {"semseg", "depth"}
    assert module.out_channels == {"semseg": 6, "depth": 6}
    for t in out:
        torch.testing.assert_close(out[t], expected, rtol=0, atol=0)
    assert not list(module.parameters())


def test_module_b_eq1_by_hand() -> None:
    """Module B, Eq. (1): ``F^{o,k} = F^k + sum_{t != k} W_{t,k} * F^t``.

    F_a = 2, F_b = 3, F_c = -0.5; W_{b,a} = 0.5, W_{c,a} = 2, W_{a,b} = 1, W_{c,b} = 3:
    out_a = 2 + 0.5*3 + 2*(-0.5) = 2.5;  out_b = 3 + 1*2 + 3*(-0.5) = 3.5.
    """
    module = MessagePassingDistillation({"a": 1, "b": 1, "c": 1}, ["a", "b"])
    for (k, t), w in {("a", "b"): 0.5, ("a", "c"): 2.0, ("b", "a"): 1.0, ("b", "c"): 3.0}.items():
        _scalar_conv(module.message[k][t], w)
    out = module(_scalars(a=2.0, b=3.0, c=-0.5))
    assert out["a"].item() == pytest.approx(2.5)
    assert out["b"].item() == pytest.approx(3.5)


def test_module_c_eqs2_3_by_hand() -> None:
    """Module C, Eqs. (2)-(3): ``G^k = sigma(W_g^k * F^k)`` from the *target*, one ``W_t`` per source.

    F_a = 2, F_b = 3, F_c = -0.5; W_g^a = 0.25, W_g^b = -1; W_a = 1, W_b = 0.5, W_c = 2:
    out_a = 2 + sigma(0.25*2) * (0.5*3 + 2*(-0.5)) = 2 + 0.5 sigma(0.5);
    out_b = 3 + sigma(-1*3) * (1*2 + 2*(-0.5)) = 3 + sigma(-3).
    """
    module = AttentionGuidedDistillation({"a": 1, "b": 1, "c": 1}, ["a", "b"])
    assert set(module.gate) == {"a", "b"} and set(module.message) == {"a", "b", "c"}
    _scalar_conv(module.gate["a"], 0.25)
    _scalar_conv(module.gate["b"], -1.0)
    for t, w in {"a": 1.0, "b": 0.5, "c": 2.0}.items():
        _scalar_conv(module.message[t], w)
    out = module(_scalars(a=2.0, b=3.0, c=-0.5))
    assert out["a"].item() == pytest.approx(2 + 0.5 / (1 + math.exp(-0.5)))
    assert out["b"].item() == pytest.approx(3 + 1 / (1 + math.exp(3)))


@pytest.mark.parametrize("cls", [MessagePassingDistillation, AttentionGuidedDistillation])
def test_modules_b_c_are_residual_messages(cls) -> None:
    """With every message conv zeroed the targets are returned unchanged (residual form), and the fused
    forward equals the per-pair reference evaluation of the equation on random weights."""
    channels = {"semseg": 4, "depth": 4, "normals": 2, "edge": 3}
    torch.manual_seed(0)
    module = cls(channels, ["semseg", "depth"])
    feats = _random_features(channels)
    ref = module.reference_forward(feats)
    out = module(feats)
    for t in ("semseg", "depth"):
        torch.testing.assert_close(out[t], ref[t], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out[t], feats[t])
    with torch.no_grad():
        for m in module.message.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
    out = module(feats)
    for t in ("semseg", "depth"):
        torch.testing.assert_close(out[t], feats[t], rtol=0, atol=0)


def test_module_c_needs_equal_target_widths() -> None:
    """Eq. (3) shares ``W_t`` across targets, so targets of different widths are a config error."""
    with pytest.raises(ConfigError, match="same number of channels"):
        AttentionGuidedDistillation({"a": 2, "b": 3}, ["a", "b"])


def test_build_distillation_by_name_and_errors() -> None:
    channels = {"a": 2, "b": 2}
    expected = {
        "concat": ConcatDistillation,
        "message": MessagePassingDistillation,
        "attention": AttentionGuidedDistillation,
        "pairwise": PairwiseGatedDistillation,
    }
    for name, cls in expected.items():
        assert type(build_distillation(name, channels=channels, targets=["a"])) is cls
    with pytest.raises(ConfigError, match="valid: concat"):
        build_distillation("D", channels=channels, targets=["a"])
    with pytest.raises(ConfigError, match="target"):
        build_distillation("message", channels=channels, targets=["z"])
    module = build_distillation("message", channels=channels, targets=["a"])
    with pytest.raises(ShapeError, match=r"expected \(B, 2, 5, 6\)"):
        module({"a": torch.zeros(1, 2, 5, 6), "b": torch.zeros(1, 3, 5, 6)})


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------
def _padnet(**cfg) -> PADNet:
    torch.manual_seed(0)
    raw = {
        "name": "padnet",
        "backbone": {"name": "resnet18", "output_stride": 8},
        "channels": 16,
        "agg_channels": 8,
        **cfg,
    }
    return build_model(PADNetConfig.model_validate(raw), heads=HEADS, aux_heads=AUX)


def test_config_defaults_follow_the_setting() -> None:
    paper = PADNetConfig.model_validate({"name": "padnet"})
    assert (paper.distillation, paper.channels) == ("attention", 512)
    hr = PADNetConfig.model_validate({"name": "padnet", "setting": "mtinet_hrnet"})
    assert (hr.distillation, hr.channels) == ("pairwise", 256)
    with pytest.raises(pydantic.ValidationError, match="multiple of 4"):
        PADNetConfig.model_validate({"name": "padnet", "channels": 30})
    with pytest.raises(pydantic.ValidationError):
        PADNetConfig.model_validate({"name": "padnet", "distillation": "D"})
    with pytest.raises(pydantic.ValidationError):
        PADNetConfig.model_validate({"name": "padnet", "nonsense": 1})


@pytest.mark.parametrize("kind", ["concat", "message", "attention"])
def test_paper_setting_outputs_and_widths(kind: str) -> None:
    """Intermediate predictions of all four tasks at 1/4 (16x16 for 64x64), finals at the input size;
    features of N = 16 channels for main and N/2 = 8 for auxiliary tasks; module A's decoders read the
    concatenation (16 + 16 + 8 + 8 = 48 channels) and halve it twice (48 -> 24 -> 12)."""
    model = _padnet(distillation=kind).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert set(out) == {"semseg", "depth"} | {f"initial/{t}" for t in {**HEADS, **AUX}}
    for t, k in {**HEADS, **AUX}.items():
        assert out[f"initial/{t}"].shape == (1, k, 16, 16)
    for t, k in HEADS.items():
        assert out[t].shape == (1, k, 64, 64)
    assert model.frontend.out_channels == {"semseg": 16, "depth": 16, "normals": 8, "edge": 8}
    c_in = 48 if kind == "concat" else 16
    deconv1 = model.decoders["depth"][0][0]
    deconv2 = model.decoders["depth"][1][0]
    assert (deconv1.in_channels, deconv1.out_channels, deconv2.out_channels) == (c_in, c_in // 2, c_in // 4)


def test_paper_setting_distills_features_of_the_predictions() -> None:
    """Sec. 3.4: the distillation input of each task is a conv of its intermediate *prediction*."""
    model = _padnet(distillation="message").eval()
    seen = {}
    model.distillation.register_forward_pre_hook(lambda m, args: seen.update(args[0]))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
        for t in {**HEADS, **AUX}:
            torch.testing.assert_close(seen[t], model.frontend.embed[t](out[f"initial/{t}"]), rtol=0, atol=0)


def test_mtinet_hrnet_setting() -> None:
    """Fused HRNet levels (270 channels at 1/4) -> two Bottlenecks per task -> 1x1 initial prediction,
    pairwise distillation on the task features (no bias), Bottleneck heads, finals at the input size."""
    torch.manual_seed(0)
    cfg = PADNetConfig.model_validate(
        {
            "name": "padnet",
            "setting": "mtinet_hrnet",
            "backbone": {"name": "hrnet_w18_small_v2"},
            "channels": 16,
        }
    )
    model = build_model(cfg, heads=HEADS, aux_heads=AUX).eval()
    assert isinstance(model.distillation, PairwiseGatedDistillation)
    assert all(c.bias is None for c in model.distillation.modules() if isinstance(c, nn.Conv2d))
    first = model.frontend.task_features["edge"][0]
    assert first.conv1.in_channels == 270 and first.downsample is not None
    seen = {}
    model.distillation.register_forward_pre_hook(lambda m, args: seen.update(args[0]))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 48))
    for t, k in {**HEADS, **AUX}.items():
        assert out[f"initial/{t}"].shape == (1, k, 16, 12)
        assert seen[t].shape == (1, 16, 16, 12)
    for t, k in HEADS.items():
        assert out[t].shape == (1, k, 64, 48)


@pytest.mark.parametrize("setting", ["paper", "mtinet_hrnet"])
def test_backward_reaches_every_parameter(setting: str) -> None:
    model = _padnet(setting=setting).train()
    out = model(torch.rand(2, 3, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_two_phase_schedule() -> None:
    """Phase 1 (Sec. 4.1): backbone + front-end aggregation + the scene-parsing branch, supervised by
    ``initial/semseg`` only; phase 2: every parameter, every output."""
    model = _padnet()
    phase1 = {id(p) for p in model.phase_parameters(1)}
    expected = [
        model.backbone,
        model.frontend.aggregate,
        model.frontend.task_features["semseg"],
        model.frontend.score["semseg"],
    ]
    assert phase1 == {id(p) for m in expected for p in m.parameters()}
    others = [model.distillation, model.decoders, model.frontend.task_features["depth"], model.frontend.embed]
    assert not phase1 & {id(p) for m in others for p in m.parameters()}
    assert model.phase_outputs(1) == ["initial/semseg"]
    assert {id(p) for p in model.phase_parameters(2)} == {id(p) for p in model.parameters()}
    assert model.phase_outputs(2) is None
    with pytest.raises(ConfigError, match="phase"):
        model.phase_parameters(3)
    depth_only = build_model(
        PADNetConfig.model_validate({"name": "padnet", "backbone": {"name": "resnet18"}, "channels": 8}),
        heads={"depth": 1},
        aux_heads={},
    )
    with pytest.raises(ConfigError, match="pretrain_task"):
        depth_only.phase_parameters(1)


def test_mtinet_hrnet_fuse_layer_and_authors_parameter_count() -> None:
    """The MTI-Net authors' PAD-Net (config ``pad_net`` with ``fuse_hrnet``) has a fuse layer on the
    concatenated HRNet levels: 1x1 conv 270 -> 270 with bias (72,900 + 270) + BN (2 x 270) = 73,710
    parameters. With it, PAD-Net + N + E on HRNet-W18-small-v2 with the NYUD heads (semseg 40,
    depth 1; aux normals 3, edge 1) has exactly the authors' 12,161,332 parameters (12,087,622 without).
    The fuse layer belongs to the shared front-end trained in phase 1."""
    cfg = PADNetConfig.model_validate(
        {"name": "padnet", "setting": "mtinet_hrnet", "backbone": {"name": "hrnet_w18_small_v2"}}
    )
    model = build_model(cfg, heads={"semseg": 40, "depth": 1}, aux_heads={"normals": 3, "edge": 1})
    conv, bn, relu = model.frontend.fuse
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (270, 270, (1, 1)) and conv.bias is not None
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 270 and isinstance(relu, nn.ReLU)
    assert sum(p.numel() for p in model.frontend.fuse.parameters()) == 73_710
    assert sum(p.numel() for p in model.parameters()) == 12_161_332
    assert {id(p) for p in model.frontend.fuse.parameters()} <= {id(p) for p in model.phase_parameters(1)}


def test_mtinet_hrnet_fuse_layer_is_applied() -> None:
    """The task branches read ``ReLU(BN(conv1x1(concat of levels)))``, not the raw concatenation."""
    torch.manual_seed(0)
    cfg = PADNetConfig.model_validate(
        {"name": "padnet", "setting": "mtinet_hrnet", "backbone": {"name": "hrnet_w18_small_v2"}, "channels": 16}
    )
    model = build_model(cfg, heads=HEADS, aux_heads={}).eval()
    seen = {}
    model.frontend.task_features["depth"].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
        fused = fuse_hrnet_features(model.backbone(_imagenet_normalize(x)))
        conv, bn, _ = model.frontend.fuse
        expected = torch.relu(bn(conv(fused)))
    torch.testing.assert_close(seen["x"], expected)
    assert (seen["x"] >= 0).all()


def _imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std
