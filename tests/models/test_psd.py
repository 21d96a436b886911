"""PSD (seed 000): the equations against hand-derived values and a dense |V| x |V| reference, the ablation
switches against the parameters each Table 6 / Fig. 9 row adds, the explain hook, and a Trainer run.

The generic contract (odd sizes, backward to every parameter, state-dict round trip, channels-last) runs
through ``TINY_CASES["psd"]`` in ``test_all_models.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pydantic
import pytest
import torch

from mtdense.config import load_config, validate_config
from mtdense.errors import ConfigError, ShapeError
from mtdense.models import build_model, model_config_class
from mtdense.models.psd import (
    InterTaskPSD,
    IntraTaskPSD,
    PSDNet,
    graphlet_affinity,
    inter_task_affinity,
    intra_task_diffusion,
)

CONFIGS = Path(__file__).parents[2] / "src" / "mtdense" / "configs"
TASKS = {"semseg": 5, "depth": 1, "normals": 3}


def _window_mask(h: int, w: int, size: int) -> torch.Tensor:
    """``(size*size, h, w)``: whether neighbour k (raster order) of each pixel lies inside the image."""
    r = size // 2
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows = []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            rows.append((ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w))
    return torch.stack(rows)


def _dense(affinity: torch.Tensor, size: int) -> torch.Tensor:
    """The |V| x |V| matrix of one sample's window affinity ``(l*l, H, W)`` (or ``(l*l, C, H, W)`` ->
    ``(C, |V|, |V|)``): entry (p, q) is A_pk for q = p + k, zero elsewhere (Eq. 3, built in the test only)."""
    r = size // 2
    h, w = affinity.shape[-2:]
    per_channel = affinity.ndim == 4
    a = affinity if per_channel else affinity[:, None]
    dense = torch.zeros(a.shape[1], h * w, h * w, dtype=a.dtype)
    k = 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            for y in range(h):
                for x in range(w):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        dense[:, y * w + x, (y + dy) * w + (x + dx)] = a[k, :, y, x]
            k += 1
    return dense if per_channel else dense[0]


# ----------------------------------------------------------------------------------------------
# Eq. 1 / Eq. 4: graphlet affinities
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("channelwise", [False, True], ids=["summed", "channelwise"])
def test_affinity_is_a_normalised_window_and_zero_outside_the_image(size, channelwise) -> None:
    x = torch.randn(2, 4, 6, 7, generator=torch.Generator().manual_seed(0))
    a = graphlet_affinity(x, size, channelwise=channelwise)
    assert a.shape == ((2, size * size, 4, 6, 7) if channelwise else (2, size * size, 6, 7))
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(1), torch.ones_like(a.sum(1)))
    outside = ~_window_mask(6, 7, size)
    outside = outside[None, :, None] if channelwise else outside[None]
    assert outside.any() and (a.masked_select(outside.expand_as(a)) == 0).all()
    inside_min = a.masked_select(~outside.expand_as(a)).min()
    assert inside_min > 0  # exp(-d / sigma2) > 0 for every neighbour in the image


def test_affinity_equals_hand_example() -> None:
    """A 3x3 image, two channels, 3x3 graphlet, sigma^2 = 2::

        channel 0      channel 1
        0 1 0          0 1 0
        0 0 0          0 0 0
        0 0 2          0 0 0

    Centre pixel (1, 1) = (0, 0): squared distances to its 9 neighbours in raster order are
    0, 1+1=2, 0, 0, 0 (itself), 0, 0, 0, 4; weights exp(-d/2) = 1, e^-1, 1, 1, 1, 1, 1, 1, e^-2;
    the sum is 7 + e^-1 + e^-2 = 7.503214; so A = 1/7.503214 = 0.133276 for the seven zeros,
    e^-1/7.503214 = 0.049030 for the top neighbour and e^-2/7.503214 = 0.018037 for the corner.

    Corner pixel (0, 0) = (0, 0): only offsets (0,0), (0,1), (1,0), (1,1) are inside, with distances
    0, 2, 0, 0, weights 1, e^-1, 1, 1, sum 3 + e^-1 = 3.367879: A = 0.296923 (x3) and 0.109230;
    the five outside neighbours get 0.
    """
    x = torch.zeros(1, 2, 3, 3)
    x[0, 0, 0, 1] = x[0, 1, 0, 1] = 1.0
    x[0, 0, 2, 2] = 2.0
    a = graphlet_affinity(x, 3, 2.0)
    s = 7 + math.exp(-1) + math.exp(-2)
    centre = torch.tensor([1, math.exp(-1), 1, 1, 1, 1, 1, 1, math.exp(-2)]) / s
    torch.testing.assert_close(a[0, :, 1, 1], centre)
    torch.testing.assert_close(a[0, 1, 1, 1], torch.tensor(0.049030), atol=1e-6, rtol=0)
    s = 3 + math.exp(-1)
    corner = torch.tensor([0, 0, 0, 0, 1, math.exp(-1), 0, 1, 1]) / s
    torch.testing.assert_close(a[0, :, 0, 0], corner)
    torch.testing.assert_close(a[0, 4, 0, 0], torch.tensor(0.296923), atol=1e-6, rtol=0)


def test_channelwise_affinity_uses_each_channels_own_distance() -> None:
    x = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    a = graphlet_affinity(x, 3, 2.0, channelwise=True)
    for c in range(3):
        torch.testing.assert_close(a[:, :, c], graphlet_affinity(x[:, c : c + 1], 3, 2.0))


def test_affinity_rejects_bad_input() -> None:
    with pytest.raises(ShapeError, match=r"expected \(B, C, H, W\)"):
        graphlet_affinity(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        graphlet_affinity(torch.zeros(1, 1, 4, 4), size=4)


# ----------------------------------------------------------------------------------------------
# Eq. 6: intra-task diffusion against the dense reference
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("channelwise", [False, True], ids=["summed", "channelwise"])
def test_diffusion_equals_dense_reference(size, channelwise) -> None:
    """X(t+1) = X(t) + beta * A X(t) with A the dense |V| x |V| matrix (per channel when channel-wise)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    a = graphlet_affinity(x, size, channelwise=channelwise)
    states = intra_task_diffusion(x, a, beta=0.3, steps=4)
    assert len(states) == 4 and all(s.shape == x.shape for s in states)
    for b in range(2):
        dense = _dense(a[b], size)  # (|V|, |V|) or (C, |V|, |V|)
        v = x[b].reshape(3, -1, 1)  # (C, |V|, 1)
        for t in range(4):
            v = v + 0.3 * (dense @ v)
            torch.testing.assert_close(states[t][b], v.reshape(3, 5, 4))


@pytest.mark.parametrize("channelwise", [False, True], ids=["summed", "channelwise"])
def test_hand_written_backward_passes_gradcheck(channelwise) -> None:
    """The affinity and the window propagation have hand-written backward passes (memory): check them
    against finite differences, through the whole of Eqs. 1, 4 and 6 (gradients reach x via both paths)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x):
        a = graphlet_affinity(x, 3, 2.0, channelwise=channelwise)
        return torch.stack(intra_task_diffusion(x, a, beta=0.5, steps=2)), a

    assert torch.autograd.gradcheck(f, (x,))
    y = torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    a = graphlet_affinity(torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64), 5, channelwise=channelwise)
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y, a: intra_task_diffusion(y, a, 1.0, 1)[0], (y, a))


def test_diffusion_checks_shapes() -> None:
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ShapeError, match="affinity"):
        intra_task_diffusion(x, torch.zeros(1, 9, 4, 5))
    with pytest.raises(ShapeError, match="affinity"):
        intra_task_diffusion(x, torch.zeros(1, 8, 4, 4))


def test_intra_module_is_eq7_over_the_diffused_states() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 4, 6, 5)
    a = graphlet_affinity(x)
    module = IntraTaskPSD(4, steps=3, beta=0.05)
    expected = torch.relu(module.fuse(torch.cat(intra_task_diffusion(x, a, 0.05, 3), dim=1)))
    torch.testing.assert_close(module(x, a), expected)


# ----------------------------------------------------------------------------------------------
# Eqs. 8-10: inter-task affinity and diffusion
# ----------------------------------------------------------------------------------------------
def test_inter_task_affinity_is_the_normalised_product() -> None:
    g = torch.Generator().manual_seed(3)
    a_s = graphlet_affinity(torch.randn(2, 3, 5, 6, generator=g))
    a_d = graphlet_affinity(torch.randn(2, 3, 5, 6, generator=g))
    a_sd = inter_task_affinity(a_s, a_d)
    prod = a_s * a_d
    torch.testing.assert_close(a_sd, prod / prod.sum(1, keepdim=True))
    torch.testing.assert_close(a_sd.sum(1), torch.ones(2, 5, 6))
    assert (a_sd >= 0).all() and (a_sd[:, :, 0, 0][:, [0, 1, 2, 3, 6]] == 0).all()  # outside stays 0
    # a hand case: (1/2, 1/2) (.) (1/4, 3/4) = (1/8, 3/8) -> (1/4, 3/4)
    a = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1).repeat(1, 1, 1, 1)
    b = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    torch.testing.assert_close(inter_task_affinity(a, b).flatten(), torch.tensor([0.25, 0.75]))
    with pytest.raises(ShapeError, match="same shape"):
        inter_task_affinity(a_s, a_d[:, :, :4])


def test_inter_module_is_eq8_against_dense_reference() -> None:
    """D = X + sum_d beta_sd A^{sd} X with dense A^{sd}; output ReLU(conv1x1([X, D]))."""
    torch.manual_seed(0)
    feats = [torch.rand(1, 3, 4, 5, dtype=torch.float64) for _ in range(3)]
    affs = [graphlet_affinity(f) for f in feats]
    module = InterTaskPSD(3, beta=0.2).double()
    out = module(feats[0], affs[0], affs[1:])
    v = feats[0][0].reshape(3, -1, 1)
    diffused = v.clone()
    for a_d in affs[1:]:
        diffused = diffused + 0.2 * (_dense(inter_task_affinity(affs[0], a_d)[0], 3) @ v)
    expected = torch.relu(module.fuse(torch.cat([feats[0], diffused.reshape(1, 3, 4, 5)], dim=1)))
    torch.testing.assert_close(out, expected)


# ----------------------------------------------------------------------------------------------
# The network and its switches
# ----------------------------------------------------------------------------------------------
def _net(**overrides) -> PSDNet:
    raw = {"name": "psd", "backbone": {"name": "resnet18"}, "channels": 8, "steps": 3, **overrides}
    torch.manual_seed(0)
    model = build_model(model_config_class("psd").model_validate(raw), heads=TASKS)
    assert isinstance(model, PSDNet)
    return model


def _interaction_params(model: PSDNet) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.interactions.named_parameters()}


def _expected_psd(scales, *, intra=True, inter=True, c=8, steps=3) -> dict[str, tuple[int, ...]]:
    out = {}
    for r in scales:
        for t in TASKS:
            if intra:
                out |= {f"scale{r}.intra.{t}.fuse.weight": (c, steps * c, 1, 1), f"scale{r}.intra.{t}.fuse.bias": (c,)}
            if inter:
                out |= {f"scale{r}.inter.{t}.fuse.weight": (c, 2 * c, 1, 1), f"scale{r}.inter.{t}.fuse.bias": (c,)}
    return out


def test_decoder_scales_and_outputs() -> None:
    model = _net()
    assert model.scales == [16, 8, 4]
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 64, 48))
    assert set(out) == {f"scale{r}/{t}" for r in (16, 8) for t in TASKS} | set(TASKS)
    assert out["scale16/depth"].shape == (1, 1, 4, 3) and out["scale8/semseg"].shape == (1, 5, 8, 6)
    assert out["normals"].shape == (1, 3, 64, 48)


ROWS = {
    # Table 6 rows and Fig. 9 points: switches -> the interaction parameters the row adds
    "baseline": ({"interaction": "none"}, {}),
    "naive_fusion": (
        {"interaction": "naive_fusion", "psd_scales": [16]},
        {f"scale16.fuse.{t}.0.{k}": shape for t in TASKS for k, shape in (("weight", (8, 24, 1, 1)), ("bias", (8,)))},
    ),
    "cross_stitch": ({"interaction": "cross_stitch", "psd_scales": [16]}, {"scale16.unit.alpha": (3, 3, 8)}),
    "intra": ({"inter": False, "psd_scales": [16]}, _expected_psd([16], inter=False)),
    "inter": ({"intra": False, "psd_scales": [16]}, _expected_psd([16], intra=False)),
    "small": ({"psd_scales": [16]}, _expected_psd([16])),
    "middle": ({"psd_scales": [8]}, _expected_psd([8])),
    "big": ({"psd_scales": [4]}, _expected_psd([4])),
    "all": ({}, _expected_psd([16, 8, 4])),
    "l7": ({"psd_scales": [16], "graphlet_size": 7}, _expected_psd([16])),  # graphlets have no parameters
    "t5": ({"psd_scales": [16], "steps": 5}, _expected_psd([16], steps=5)),  # Eq. 7 reads T states
}


@pytest.mark.parametrize("row", list(ROWS))
def test_each_switch_adds_exactly_its_rows_parameters(row) -> None:
    """Every row shares the backbone, decoders and prediction convs; only the interaction part differs."""
    switches, expected = ROWS[row]
    model = _net(**switches)
    assert _interaction_params(model) == expected
    baseline = _net(interaction="none")
    shared = {n: p.shape for n, p in model.named_parameters() if not n.startswith("interactions.")}
    assert shared == {n: p.shape for n, p in baseline.named_parameters()}


def test_graphlet_size_and_channelwise_change_the_output_not_the_parameters() -> None:
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        variants = ({}, {"graphlet_size": 5}, {"channelwise": True})
        outs = [_net(psd_scales=[4], **kw).eval()(x)["depth"] for kw in variants]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])


def test_switches_change_the_output() -> None:
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        base = _net(interaction="none").eval()(x)["semseg"]
        intra = _net(inter=False).eval()(x)["semseg"]
    assert not torch.allclose(base, intra)


def test_bad_switches_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"psd_scales.*\[32\].*\[16, 8, 4\]"):
        _net(psd_scales=[32])
    with pytest.raises(ConfigError, match="intra or inter"):
        _net(intra=False, inter=False)
    with pytest.raises(ConfigError, match="two tasks"):
        build_model(model_config_class("psd").model_validate({"name": "psd", "channels": 8}), heads={"depth": 1})
    with pytest.raises(ConfigError, match="output_stride"):
        _net(backbone={"name": "resnet18", "output_stride": 8})
    with pytest.raises(pydantic.ValidationError, match="odd"):
        model_config_class("psd").model_validate({"name": "psd", "graphlet_size": 4})


def test_single_task_without_inter_task_psd_works() -> None:
    cfg = model_config_class("psd").model_validate({"name": "psd", "channels": 8, "steps": 2, "inter": False})
    model = build_model(cfg, heads={"depth": 1}).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32))["depth"].shape == (1, 1, 32, 32)


def test_explain_gives_response_maps_before_and_after_diffusion() -> None:
    """Fig. 8: the channel-mean response of each task's features around each PSD layer."""
    model = _net(psd_scales=[16, 4]).eval()
    with torch.no_grad():
        maps = model.explain(torch.rand(2, 3, 64, 48))
    expected = {f"psd/{t}/scale{r}/{s}" for t in TASKS for r in (16, 4) for s in ("before", "after_intra", "after")}
    assert set(maps) == expected
    assert maps["psd/depth/scale4/before"].shape == (2, 1, 16, 12)
    assert not torch.allclose(maps["psd/depth/scale4/before"], maps["psd/depth/scale4/after"])
    with torch.no_grad():
        none = _net(interaction="none", psd_scales=[16]).eval().explain(torch.rand(1, 3, 64, 48))
    assert set(none) == {f"psd/{t}/scale16/{s}" for t in TASKS for s in ("before", "after")}
    torch.testing.assert_close(none["psd/semseg/scale16/before"], none["psd/semseg/scale16/after"])


# ----------------------------------------------------------------------------------------------
# Shipped configs and a Trainer run
# ----------------------------------------------------------------------------------------------
SHIPPED = {
    "nyud/psd_resnet50.yaml": {"interaction": "psd", "psd_scales": None, "intra": True, "inter": True},
    "nyud/psd_resnet18.yaml": {"interaction": "psd", "psd_scales": None},
    "nyud/psd_resnet18_baseline.yaml": {"interaction": "none"},
    "nyud/psd_resnet18_naive_fusion.yaml": {"interaction": "naive_fusion", "psd_scales": [16]},
    "nyud/psd_resnet18_cross_stitch.yaml": {"interaction": "cross_stitch", "psd_scales": [16]},
    "nyud/psd_resnet18_intra.yaml": {"interaction": "psd", "intra": True, "inter": False, "psd_scales": [16]},
    "nyud/psd_resnet18_inter.yaml": {"interaction": "psd", "intra": False, "inter": True, "psd_scales": [16]},
    "nyud/psd_resnet18_small.yaml": {"psd_scales": [16], "graphlet_size": 3, "steps": 9},
    "nyud/psd_resnet18_middle.yaml": {"psd_scales": [8]},
    "nyud/psd_resnet18_big.yaml": {"psd_scales": [4]},
    **{f"nyud/psd_resnet18_l{n}.yaml": {"psd_scales": [16], "graphlet_size": n} for n in (5, 7, 9)},
    **{f"nyud/psd_resnet18_t{n}.yaml": {"psd_scales": [16], "steps": n} for n in (1, 3, 5, 7, 11)},
    "synthetic/psd_resnet18.yaml": {"interaction": "psd", "intra": True, "inter": True},
    "synthetic/psd_resnet18_baseline.yaml": {"interaction": "none"},
    "synthetic/psd_resnet18_naive_fusion.yaml": {"interaction": "naive_fusion"},
    "synthetic/psd_resnet18_cross_stitch.yaml": {"interaction": "cross_stitch"},
    "synthetic/psd_resnet18_intra.yaml": {"interaction": "psd", "inter": False},
    "synthetic/psd_resnet18_inter.yaml": {"interaction": "psd", "intra": False},
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_config_is_its_row(name) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.model.name == "psd" and set(cfg.data.tasks) == set(TASKS) and not cfg.data.aux_tasks
    assert cfg.loss.depth == "berhu" and cfg.loss.normals == "l1"
    assert cfg.model.backbone.name == ("resnet50" if "resnet50" in name else "resnet18")
    for key, value in SHIPPED[name].items():
        assert getattr(cfg.model, key) == value, (name, key)
    if name.startswith("nyud/"):
        t = cfg.train  # Sec. 4.2: SGD 0.9, wd 1e-4, 1e-2 new layers / 1e-4 encoder
        assert (t.optimizer, t.momentum, t.weight_decay, t.lr, t.lr * t.backbone_lr_mult) == (
            "sgd",
            0.9,
            1e-4,
            1e-2,
            pytest.approx(1e-4),
        )


def test_trainer_runs_psd_with_deep_supervision(tiny_raw_config, tmp_path) -> None:
    from mtdense.engine.checkpoint import load_checkpoint
    from mtdense.engine.trainer import Trainer, compute_losses

    raw = tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth", "normals"],
            "model": {"name": "psd", "backbone": {"name": "resnet18"}, "channels": 8, "steps": 2},
            "loss.depth": "berhu",
            "train.max_steps": 3,
        }
    )
    trainer = Trainer(validate_config(raw), tmp_path / "run", progress=False)
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=2)))
    with torch.no_grad():
        losses = compute_losses(trainer.model(batch["image"]), batch, trainer.tasks)
    assert set(losses) == {f"scale{r}/{t}" for r in (16, 8) for t in TASKS} | set(TASKS)
    assert all(torch.isfinite(v) for v in losses.values())
    result = trainer.train()
    assert result.step == 3
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert any(k.startswith("interactions.scale4.inter.depth") for k in state["model"])


def test_complexity_cli_reports_the_psd_configs(capsys) -> None:
    """``mtdense complexity CONFIG --size 64x64`` works on a shipped PSD config (the ResNet-18 "small" row,
    for speed; psd_resnet50.yaml is the same code path) and attributes the PSD layer its parameters."""
    from mtdense.cli.main import main

    path = CONFIGS / "nyud" / "psd_resnet18_small.yaml"
    assert main(["complexity", str(path), "--size", "64x64", "--no-stl", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "psd" and report["gflops"] > 0
    c = 128  # one PSD layer: three tasks x (Eq. 7: 9C -> C, Eq. 8 fusion: 2C -> C), 1x1 convs with bias
    assert report["per_module"]["interactions"]["params"] == 3 * ((9 * c * c + c) + (2 * c * c + c))
    assert report["per_module"]["interactions"]["gflops"] > 0
