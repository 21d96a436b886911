"""Cross-stitch networks: the unit's equation and initialisation, and the reduction to single-task
networks when alpha is the identity."""

from __future__ import annotations

import pydantic
import pytest
import torch

from mtdense.backbones import build_backbone
from mtdense.errors import ConfigError, ShapeError
from mtdense.models import build_model, model_config_class
from mtdense.models.cross_stitch import CrossStitchNet, CrossStitchUnit
from mtdense.models.layers import HeadSpec
from mtdense.models.stl_mtl import SharedEncoderNet


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Add noise to every parameter and give BN random statistics, so that copies differ and BN in eval
    mode is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))


def test_unit_initialisation() -> None:
    """Two tasks: alpha = [[0.9, 0.1], [0.1, 0.9]] for every channel. Three tasks: diagonal 0.9 and
    off-diagonal (1 - 0.9) / 2 = 0.05, so each row sums to 1 (a convex combination)."""
    two = CrossStitchUnit(2, 4)
    assert two.alpha.shape == (2, 2, 4)
    torch.testing.assert_close(two.alpha, torch.tensor([[0.9, 0.1], [0.1, 0.9]])[..., None].expand(2, 2, 4))
    three = CrossStitchUnit(3, 5, alpha_self=0.9)
    expected = torch.full((3, 3), 0.05)
    expected.fill_diagonal_(0.9)
    torch.testing.assert_close(three.alpha, expected[..., None].expand(3, 3, 5))
    torch.testing.assert_close(three.alpha.sum(1), torch.ones(3, 5))
    assert CrossStitchUnit(2, 4, per_channel=False).alpha.shape == (2, 2, 1)


def test_unit_mixes_by_hand() -> None:
    """x_A = 1, x_B = 2 everywhere: x~_A = 0.9 * 1 + 0.1 * 2 = 1.1, x~_B = 0.1 * 1 + 0.9 * 2 = 1.9.
    Setting alpha[A, B] = 0.5 on channel 0 only changes channel 0 of x~_A: 0.9 + 0.5 * 2 = 1.9."""
    unit = CrossStitchUnit(2, 3)
    a, b = torch.ones(2, 3, 4, 5), torch.full((2, 3, 4, 5), 2.0)
    out_a, out_b = unit([a, b])
    torch.testing.assert_close(out_a, torch.full_like(a, 1.1))
    torch.testing.assert_close(out_b, torch.full_like(a, 1.9))
    with torch.no_grad():
        unit.alpha[0, 1, 0] = 0.5
    out_a, out_b = unit([a, b])
    torch.testing.assert_close(out_a[:, 0], torch.full_like(a[:, 0], 1.9))
    torch.testing.assert_close(out_a[:, 1:], torch.full_like(a[:, 1:], 1.1))
    torch.testing.assert_close(out_b, torch.full_like(a, 1.9))


def test_unit_input_checks() -> None:
    unit = CrossStitchUnit(2, 3)
    with pytest.raises(ShapeError, match="expected 2 task maps"):
        unit([torch.ones(1, 3, 2, 2)])
    with pytest.raises(ShapeError, match="expected"):
        unit([torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 3)])
    with pytest.raises(ConfigError, match="at least 2 tasks"):
        CrossStitchUnit(1, 3)


def test_units_follow_backbone_stages() -> None:
    """ResNet-18: one unit per stage with 64/128/256/512 channels. HRNet-W18-small: stage 1 (layer1,
    4 x 64 = 256 channels), then one unit per branch: [18, 36], [18, 36, 72], [18, 36, 72, 144]."""
    res = CrossStitchNet(build_backbone("resnet18"), {"depth": 1}, {"edge": 1}, head=HeadSpec("hrnet"))
    assert [[u.channels for u in units] for units in res.cross_stitch] == [[64], [128], [256], [512]]
    hr = CrossStitchNet(build_backbone("hrnet_w18_small_v2"), {"depth": 1}, {"edge": 1})
    assert [[u.channels for u in units] for units in hr.cross_stitch] == [
        [256],
        [18, 36],
        [18, 36, 72],
        [18, 36, 72, 144],
    ]


@pytest.mark.parametrize("backbone_name", ["resnet18", "hrnet_w18_small_v2"])
def test_identity_alpha_equals_single_task_networks(backbone_name) -> None:
    """With alpha = I no information crosses networks, so every task's features and prediction equal
    those of a single-task network holding the same backbone and head weights. With the initial alpha
    (0.9 / 0.1) and copies that differ, they do not (so the comparison can fail)."""
    torch.manual_seed(0)
    backbone = build_backbone(backbone_name)
    model = CrossStitchNet(backbone, {"semseg": 4}, {"depth": 1}, head=HeadSpec("hrnet"))
    for i, t in enumerate(model.tasks):
        _perturb(model.backbone[t], seed=i)
    model.eval()
    x = torch.rand(1, 3, 35, 27)
    xn = (x - model.pixel_mean) / model.pixel_std

    singles = {}
    for t, channels in {"semseg": 4, "depth": 1}.items():
        stl = SharedEncoderNet(build_backbone(backbone_name), {t: channels}, head=HeadSpec("hrnet"))
        stl.backbone.load_state_dict(model.backbone[t].state_dict())
        heads = model.task_heads if t in model.task_heads else model.aux_task_heads
        stl.task_heads[t].load_state_dict(heads[t].state_dict())
        singles[t] = stl.eval()

    with torch.no_grad():
        mixed = model.task_features(xn)
        assert any(
            not torch.allclose(m, s, rtol=1e-4, atol=1e-4)
            for m, s in zip(mixed["semseg"], singles["semseg"].backbone(xn), strict=True)
        )
        for units in model.cross_stitch:
            for unit in units:
                unit.alpha.copy_(torch.eye(2)[..., None].expand_as(unit.alpha))
        features = model.task_features(xn)
        out = model(x)
        for t, stl in singles.items():
            for level, (got, want) in enumerate(zip(features[t], stl.backbone(xn), strict=True)):
                torch.testing.assert_close(got, want, msg=f"{t} level {level}")
        torch.testing.assert_close(out["semseg"], singles["semseg"](x)["semseg"])
        torch.testing.assert_close(out["aux/depth"], singles["depth"].task_heads["depth"](features["depth"]))


def test_forward_applies_the_initial_alpha() -> None:
    """Inside the network, the first unit's outputs are 0.9 * own + 0.1 * other input (hooked)."""
    torch.manual_seed(0)
    model = CrossStitchNet(build_backbone("resnet18"), {"semseg": 4}, {"depth": 1}, head=HeadSpec("hrnet"))
    _perturb(model.backbone["depth"], seed=3)
    seen = {}
    model.cross_stitch[1][0].register_forward_hook(lambda m, args, out: seen.update(inp=args[0], out=out))
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 32, 32))
    (a, b), (out_a, out_b) = seen["inp"], seen["out"]
    assert not torch.allclose(a, b)
    torch.testing.assert_close(out_a, 0.9 * a + 0.1 * b)
    torch.testing.assert_close(out_b, 0.1 * a + 0.9 * b)


def test_copies_start_identical_and_are_backbone_params() -> None:
    """Every task network starts from the same weights (one built backbone deep-copied); all copies are
    in the ``backbone`` parameter group, the alphas in ``alpha`` and the heads in ``new``."""
    model = build_model(
        model_config_class("cross_stitch").model_validate({"name": "cross_stitch", "head": "hrnet"}),
        heads={"semseg": 4, "depth": 1},
        aux_heads={"edge": 1},
    )
    states = [model.backbone[t].state_dict() for t in ("semseg", "depth", "edge")]
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])
    assert model.backbone["semseg"].conv1.weight is not model.backbone["depth"].conv1.weight
    groups = model.param_groups()
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.backbone.parameters()}
    alphas = {id(u.alpha) for units in model.cross_stitch for u in units}
    assert {id(p) for p in groups["alpha"]} == alphas
    heads = {id(p) for m in (model.task_heads, model.aux_task_heads) for p in m.parameters()}
    assert {id(p) for p in groups["new"]} == heads
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    assert model.lr_mults == {"alpha": 1.0}


def test_config_options_and_errors() -> None:
    cls = model_config_class("cross_stitch")
    cfg = cls.model_validate({"name": "cross_stitch", "alpha_self": 0.7, "alpha_per": "layer", "head": "hrnet"})
    model = build_model(cfg, heads={"semseg": 4, "depth": 1})
    for units in model.cross_stitch:
        for unit in units:
            assert unit.alpha.shape == (2, 2, 1)
            torch.testing.assert_close(unit.alpha[:, :, 0], torch.tensor([[0.7, 0.3], [0.3, 0.7]]))
    for bad in ({"alpha_self": 1.5}, {"alpha_per": "pixel"}):
        with pytest.raises(pydantic.ValidationError):
            cls.model_validate({"name": "cross_stitch", **bad})
    with pytest.raises(ConfigError, match="at least two tasks"):
        build_model(cls.model_validate({"name": "cross_stitch"}), heads={"depth": 1})
    with pytest.raises(ConfigError, match="cannot be cross-stitched"):
        build_model(
            cls.model_validate({"name": "cross_stitch", "backbone": {"name": "fpn_resnet18"}}),
            heads={"semseg": 4, "depth": 1},
        )


def test_alpha_lr_mult_config_and_errors() -> None:
    cls = model_config_class("cross_stitch")
    assert cls.model_validate({"name": "cross_stitch"}).alpha_lr_mult == 1.0
    model = build_model(
        cls.model_validate({"name": "cross_stitch", "alpha_lr_mult": 100}), heads={"semseg": 4, "depth": 1}
    )
    assert model.lr_mults == {"alpha": 100.0}
    for bad in (0, -1):
        with pytest.raises(pydantic.ValidationError, match="alpha_lr_mult"):
            cls.model_validate({"name": "cross_stitch", "alpha_lr_mult": bad})


def test_engine_sgd_step_moves_alpha_at_its_own_learning_rate(tiny_raw_config) -> None:
    """Through the engine's optimiser builder, one SGD step (first step: the momentum buffer is the
    gradient) changes a parameter by ``-lr_g * (grad + weight_decay * p)`` with ``lr_g = lr x 100``
    for the alphas and ``lr`` for the heads and the backbones."""
    from mtdense.config.load import validate_config
    from mtdense.engine.setup import build_balancer, build_model_for, build_optimizer, build_tasks

    raw = tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth"],
            "model": {"name": "cross_stitch", "head": "hrnet", "alpha_lr_mult": 100, "backbone": {"name": "resnet18"}},
            "train.optimizer": "sgd",
            "train.lr": 1e-3,
            "train.weight_decay": 1e-4,
        }
    )
    cfg = validate_config(raw)
    tasks = build_tasks(cfg, {"num_classes": 5})
    torch.manual_seed(0)
    model = build_model_for(cfg, tasks).train()
    optimizer = build_optimizer(cfg, model, build_balancer(cfg, tasks))
    out = model(torch.rand(2, 3, 32, 32))
    (out["semseg"].square().mean() + out["depth"].mean()).backward()
    alpha = model.cross_stitch[2][0].alpha
    head = next(iter(model.task_heads["depth"].parameters()))
    conv = model.backbone["semseg"].conv1.weight
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in (("alpha", alpha), ("head", head), ("conv", conv))}
    assert before["alpha"][1].abs().sum() > 0
    optimizer.step()
    for name, p, lr in (("alpha", alpha, 0.1), ("head", head, 1e-3), ("conv", conv, 1e-3)):
        p0, g = before[name]
        torch.testing.assert_close(p.detach(), p0 - lr * (g + 1e-4 * p0), msg=name)
