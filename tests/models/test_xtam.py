"""xTAM / mTEB (DenseMTL, Lopes et al., WACV 2023, seed 004) and the 3-ways decoder: the equations, the
block's parameter count against Table 3, the fixed source order (across hash seeds, from one checkpoint),
a Trainer run, the shipped configs, and the partial deltas of Tables 1-2 by hand.

The generic contract (shapes, backward, state dict, channels-last) runs from ``TINY_CASES["threeways"]``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mtdense.config import load_config, validate_config
from mtdense.config.load import PACKAGED_CONFIGS
from mtdense.errors import ConfigError, MtdenseError
from mtdense.metrics.multitask import multitask_delta, partial_deltas
from mtdense.models import build_model, model_config_class
from mtdense.models.xtam import MTEB, CorrelationAttention, DirectionalXTAM

TASKS3 = ["semseg", "depth", "normals"]


def _feats(tasks, c=8, h=12, w=10, *, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return {t: torch.randn(batch, c, h, w, generator=g) for t in tasks}


def _block(tasks=TASKS3, c=8, *, s=2, **kw) -> MTEB:
    torch.manual_seed(0)
    return MTEB(tasks, c, downscale=s, **kw)


_HEADS = {"semseg": 5, "depth": 1, "normals": 3, "edge": 1}


def _tiny_raw(*, exchange: str = "xtam", **overrides) -> dict:
    return {
        "name": "threeways",
        "backbone": {"name": "resnet18", "output_stride": 16},
        "exchange": exchange,
        "decoder_channels": [8, 8, 8, 8, 8],
        "aspp_channels": 8,
        **overrides,
    }


def _tiny_net(tasks=TASKS3, *, exchange="xtam", seed=0, **overrides):
    raw = _tiny_raw(exchange=exchange, **overrides)
    torch.manual_seed(seed)
    return build_model(model_config_class("threeways").model_validate(raw), heads={t: _HEADS[t] for t in tasks})


# ----------------------------------------------------------------------------------------------
# Eqs. (1)-(4): xTAM
# ----------------------------------------------------------------------------------------------
def test_attention_rows_are_a_softmax_over_source_positions() -> None:
    """Eq. (1): ``(B, N_t, N_s)`` with ``N = ceil(H/s) ceil(W/s)``, non-negative, each row sums to 1."""
    att = CorrelationAttention(8, downscale=4).eval()
    f = _feats(["i", "j"], h=13, w=11)
    with torch.no_grad():
        a = att.attention(f["i"], f["j"])
    n = math.ceil(13 / 4) * math.ceil(11 / 4)
    assert a.shape == (2, n, n)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, n), rtol=0, atol=1e-6)
    # the softmax is over the source axis, not the target one: columns do not sum to 1 in general
    assert not torch.allclose(a.sum(-2), torch.ones(2, n), atol=1e-3)


def test_correlation_branch_is_eq_2() -> None:
    """``xtask = up_s(V A^T)`` with ``Q`` from the nearest-downscaled target, ``K, V`` from the max-pooled
    source and ``A = softmax(Q^T K / sqrt(d))``, recomputed here step by step."""
    att = CorrelationAttention(8, downscale=2).eval()
    f = _feats(["i", "j"], h=8, w=6)
    with torch.no_grad():
        got = att(f["i"], f["j"])
        q = att.query(f["i"][:, :, ::2, ::2]).flatten(2)  # nearest x1/2 picks every other pixel
        pooled = torch.nn.functional.max_pool2d(f["j"], 2)
        k, v = att.key(pooled).flatten(2), att.value(pooled).flatten(2)
        a = torch.softmax(torch.einsum("bcq,bck->bqk", q, k) / math.sqrt(8), dim=-1)
        small = torch.einsum("bck,bqk->bcq", v, a).view(2, 8, 4, 3)
        want = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_channel_and_both_attention_are_table_4b() -> None:
    """channel: ``softmax(Q K^T / sqrt(N))`` over source channels times ``V`` (DANet); both: spatial + channel."""
    f = _feats(["i", "j"], h=8, w=8)
    out = {}
    for kind in ("spatial", "channel", "both"):
        torch.manual_seed(0)
        out[kind] = CorrelationAttention(8, downscale=2, kind=kind).eval()
    att = out["channel"]
    with torch.no_grad():
        q = att.query(f["i"][:, :, ::2, ::2]).flatten(2)
        pooled = torch.nn.functional.max_pool2d(f["j"], 2)
        k, v = att.key(pooled).flatten(2), att.value(pooled).flatten(2)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(16), dim=-1)  # (B, C, C), N = 4 x 4
        want = (a @ v).view(2, 8, 4, 4).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        torch.testing.assert_close(att(f["i"], f["j"]), want, rtol=1e-5, atol=1e-6)
        both = out["both"](f["i"], f["j"])
        torch.testing.assert_close(both, out["spatial"](f["i"], f["j"]) + want, rtol=1e-5, atol=1e-6)


def test_mteb_input_errors_name_the_problem() -> None:
    from mtdense.errors import ShapeError

    block = _block()
    with pytest.raises(ConfigError, match="expected features of tasks"):
        block(_feats(["semseg", "depth"]))
    bad = {**_feats(TASKS3), "depth": torch.zeros(2, 4, 12, 10)}
    with pytest.raises(ShapeError, match="expected"):
        block(bad)
    with pytest.raises(ConfigError, match="at least two distinct tasks"):
        MTEB(["depth", "depth"], 8, downscale=2)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_alpha_zero_makes_the_correlation_branch_contribute_nothing(mode) -> None:
    """Eq. (4) with ``alpha = 0`` at init: the mTEB output equals that of the block whose correlation
    branches output zeros, bit for bit; with ``alpha != 0`` it differs, and ``alpha`` gets a gradient."""
    block = _block()
    block.train(mode == "train")
    f = _feats(TASKS3)
    assert all(float(p.alpha.detach().abs().sum()) == 0.0 for p in block.pairs.values())
    with torch.no_grad():
        full = block(f)
    for pair in block.pairs.values():  # remove the branch: it now returns exact zeros
        pair.correlation.forward = lambda target, source: torch.zeros_like(target)
    with torch.no_grad():
        removed = block(f)
    for t in TASKS3:
        torch.testing.assert_close(full[t], removed[t], rtol=0, atol=0)

    restored = _block()
    restored.train(mode == "train")
    for pair in restored.pairs.values():
        torch.nn.init.constant_(pair.alpha, 0.5)
    with torch.no_grad():
        changed = restored(f)
    assert any(not torch.allclose(changed[t], full[t]) for t in TASKS3), "alpha != 0 should open the branch"

    fresh = _block()
    sum(v.sum() for v in fresh(f).values()).backward()
    assert all(p.alpha.grad is not None and p.alpha.grad.abs().sum() > 0 for p in fresh.pairs.values())


def test_directional_feature_concatenates_scaled_xtask_and_self_attention() -> None:
    """Eq. (4): ``f_{j->i} = P_out([alpha * xtask, F_f(e) * sigmoid(F_m(e))])``, ``e = ReLU(conv3x3(f_j))``."""
    torch.manual_seed(1)
    x = DirectionalXTAM(8, downscale=2).eval()
    torch.nn.init.uniform_(x.alpha, 0.5, 1.5)
    f = _feats(["i", "j"], h=8, w=8)
    with torch.no_grad():
        e = torch.relu(x.extractor[0](f["j"]))
        sa = x.self_attention.features(e) * torch.sigmoid(x.self_attention.mask(e))
        want = x.project(torch.cat([x.alpha * x.correlation(f["i"], e), sa], dim=1))
        torch.testing.assert_close(x(f["i"], f["j"]), want, rtol=0, atol=0)
    assert sa.shape[1] == 4  # Eq. (3) halves the channels


# ----------------------------------------------------------------------------------------------
# Eq. (5): mTEB
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["spatial", "channel", "both"])
@pytest.mark.parametrize("fusion", ["add", "prod", "concat"])
def test_mteb_preserves_shapes(fusion, attention) -> None:
    block = _block(s=4, fusion=fusion, attention=attention).eval()
    f = _feats(TASKS3, h=13, w=11)  # not divisible by s
    with torch.no_grad():
        out = block(f)
    assert set(out) == set(TASKS3)
    for t in TASKS3:
        assert out[t].shape == f[t].shape
        assert torch.isfinite(out[t]).all()


def test_mteb_fusions_are_eq_5_and_table_4a() -> None:
    """add: ``f_i + F([f_{j->i}])``; prod: ``f_i * F(...)``; concat: ``F'([f_i, f_{j->i} ...])``."""
    f = _feats(TASKS3)
    with torch.no_grad():
        for fusion, combine in {
            "add": lambda base, d, proj: base + proj(torch.cat(d, 1)),
            "prod": lambda base, d, proj: base * proj(torch.cat(d, 1)),
            "concat": lambda base, d, proj: proj(torch.cat([base, *d], 1)),
        }.items():
            block = _block(fusion=fusion).eval()
            out, directional = block(f), block.directional(f)
            for t in TASKS3:
                assert len(directional[t]) == 2
                torch.testing.assert_close(out[t], combine(f[t], directional[t], block.fuse[t]), rtol=0, atol=0)


def test_source_order_is_the_task_order_and_matters() -> None:
    """Sources enter ``F_{->i}`` in the order the tasks were given (config order), never a set's; feeding
    them permuted changes the output, so the order is part of what a checkpoint means."""
    block = _block().eval()
    assert block.sources("depth") == ["semseg", "normals"]
    assert block.sources("semseg") == ["depth", "normals"]
    assert _block(["normals", "depth", "semseg"]).sources("depth") == ["normals", "semseg"]
    f = _feats(TASKS3)
    with torch.no_grad():
        d = block.directional(f)["depth"]
        ordered = block.fuse["depth"](torch.cat(d, 1))
        permuted = block.fuse["depth"](torch.cat(d[::-1], 1))
        torch.testing.assert_close(block(f)["depth"], f["depth"] + ordered, rtol=0, atol=0)
    assert not torch.allclose(ordered, permuted)


_HASH_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from mtdense.models import build_model, model_config_class
    torch.set_num_threads(1)
    torch.manual_seed(7)  # other weights than the checkpoint's: loading must set all of them
    cfg = model_config_class("threeways").model_validate(json.loads({raw!r}))
    net = build_model(cfg, heads=json.loads({heads!r})).eval()
    net.load_state_dict(torch.load({ckpt!r}, weights_only=True), strict=True)
    with torch.no_grad():
        out = net(torch.load({image!r}, weights_only=True))
    torch.save({{k: v for k, v in out.items()}}, sys.argv[1])
    print(list({{"semseg", "depth", "normals"}}))
    """
)


def test_checkpoint_gives_identical_outputs_under_any_hash_seed(tmp_path) -> None:
    """DenseMTL's code concatenates sources in a Python set's order, which follows PYTHONHASHSEED. Ours:
    one checkpoint, reloaded in a process whose hash seed orders a set differently from the saving
    process, gives outputs identical to the saving process's.

    One child process is enough (each costs a torch import): the saving process is the first hash seed.
    Seeds are tried in turn until a child's set order differs from ours (the first usually does); every
    child tried must reproduce the outputs."""
    net = _tiny_net().eval()
    with torch.no_grad():
        for pair in net.blocks["scale1"].pairs.values():
            torch.nn.init.uniform_(pair.alpha, 0.5, 1.0)  # open the correlation branches too
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save(net.state_dict(), tmp_path / "ckpt.pt")
    torch.save(image, tmp_path / "image.pt")
    with torch.no_grad():
        expected = net(image)
    heads = json.dumps({t: _HEADS[t] for t in TASKS3})
    script = _HASH_SCRIPT.format(
        raw=json.dumps(_tiny_raw()), heads=heads, ckpt=str(tmp_path / "ckpt.pt"), image=str(tmp_path / "image.pt")
    )
    ours = str(list({"semseg", "depth", "normals"}))
    child_orders = []
    for seed in ("0", "1", "2", "3", "4", "5"):
        proc = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"out{seed}.pt")],
            env={**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        child_orders.append(proc.stdout.strip().splitlines()[-1])
        got = torch.load(tmp_path / f"out{seed}.pt", weights_only=True)
        assert got.keys() == expected.keys()
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0, msg=lambda m, k=k, s=seed: f"{s} {k}: {m}")
        if child_orders[-1] != ours:
            break
    assert child_orders[-1] != ours, f"no hash seed ordered a set differently from {ours}: {child_orders}"


# ----------------------------------------------------------------------------------------------
# Parameter count (Table 3, 'Param.' column)
# ----------------------------------------------------------------------------------------------
def _by_hand(c: int, t: int, *, concat: bool = False) -> int:
    """Per directed pair: extractor 9C^2 + C (bias); F_f, F_m 2 x 9C(C/2) (no bias); P_Q, P_K, P_V 3(C^2 + 2C)
    (conv + BN); alpha C; P_out (3C/2)C + 2C. Per target F_{->i}: (T-1)C^2 + 2C (TC^2 + 2C for concat)."""
    pair = (9 * c * c + c) + 2 * 9 * c * (c // 2) + 3 * (c * c + 2 * c) + c + (3 * c // 2) * c + 2 * c
    fuse = (t if concat else t - 1) * c * c + 2 * c
    return t * (t - 1) * pair + t * fuse


@pytest.mark.parametrize(("c", "t"), [(8, 2), (8, 3), (6, 4)])
def test_param_count_by_hand(c, t) -> None:
    tasks = ["semseg", "depth", "normals", "edge"][:t]
    assert MTEB(tasks, c, downscale=2).param_count() == _by_hand(c, t)
    assert MTEB(tasks, c, downscale=2, fusion="concat").param_count() == _by_hand(c, t, concat=True)


def test_param_count_reproduces_table_3() -> None:
    """Table 3 (VKITTI2), "#M added": 0.77 (S-D) and 2.32 (S-D-N) for one block at scale 1 (128 channels),
    3.09 and 9.26 at scales 3-4 (256 channels)."""
    for tasks, c, millions in [(2, 128, 0.77), (3, 128, 2.32), (2, 256, 3.09), (3, 256, 9.26)]:
        assert round(_by_hand(c, tasks) / 1e6, 2) == millions
    assert round(MTEB(TASKS3, 128, downscale=4).param_count() / 1e6, 2) == 2.32


def test_network_reports_its_exchange_parameters() -> None:
    net = _tiny_net()
    assert net.exchange_param_count() == _by_hand(8, 3)
    assert _tiny_net(exchange="none").exchange_param_count() == 0


# ----------------------------------------------------------------------------------------------
# The 3-ways network
# ----------------------------------------------------------------------------------------------
def test_outputs_and_baselines_share_the_decoder() -> None:
    """Side outputs before the exchange at ``1/2^i``, finals at the input size; xtam / padnet / none differ
    only by the exchange block's parameters."""
    counts = {}
    for exchange in ("xtam", "padnet", "none"):
        net = _tiny_net(exchange=exchange, exchange_scales=[1, 3]).eval()
        with torch.no_grad():
            out = net(torch.rand(2, 3, 64, 48))
        assert set(out) == set(TASKS3) | {f"scale{s}/{t}" for s in (1, 3) for t in TASKS3}
        assert out["scale1/semseg"].shape == (2, 5, 32, 24) and out["scale3/depth"].shape == (2, 1, 8, 6)
        assert out["normals"].shape == (2, 3, 64, 48)
        counts[exchange] = sum(p.numel() for p in net.parameters()) - net.exchange_param_count()
    assert len(set(counts.values())) == 1, counts


def test_exchange_none_is_the_identity_between_decoder_steps() -> None:
    """With ``exchange: none`` each task's output depends on its own decoder only."""
    net = _tiny_net(exchange="none").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        for p in net.decoders["depth"].parameters():
            p.add_(0.1)
        after = net(x)
    torch.testing.assert_close(before["semseg"], after["semseg"], rtol=0, atol=0)
    assert not torch.allclose(before["depth"], after["depth"])


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="at least two tasks"):
        _tiny_net(["depth"], exchange="xtam")
    with pytest.raises(ConfigError, match="stride 16 or 32"):
        _tiny_net(backbone={"name": "resnet18", "output_stride": 8})
    cls = model_config_class("threeways")
    with pytest.raises(ValueError, match="exchange_scales"):
        cls.model_validate({"name": "threeways", "exchange_scales": [5]})
    with pytest.raises(ValueError, match="even width"):
        cls.model_validate({"name": "threeways", "decoder_channels": [8, 7, 8, 8, 8]})
    _tiny_net(["depth"], exchange="none")  # STL: one task, no exchange


def test_trainer_runs_xtam_with_supervision_before_and_after_the_mteb(tiny_raw_config, tmp_path) -> None:
    from mtdense.engine.checkpoint import load_checkpoint
    from mtdense.engine.trainer import Trainer, compute_losses

    raw = tiny_raw_config(
        **{
            "data.tasks": TASKS3,
            "model": {
                "name": "threeways",
                "backbone": {"name": "resnet18", "output_stride": 16},
                "decoder_channels": [8, 8, 8, 8, 8],
                "aspp_channels": 8,
            },
            "loss.depth": "berhu",
            "loss.normals": "cosine",
            "train.clip_grad_norm": 10.0,
            "train.betas": [0.9, 0.98],
            "train.max_steps": 3,
        }
    )
    trainer = Trainer(validate_config(raw), tmp_path / "run", progress=False)
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=2)))
    with torch.no_grad():
        losses = compute_losses(trainer.model(batch["image"]), batch, trainer.tasks)
    assert set(losses) == {f"scale1/{t}" for t in TASKS3} | set(TASKS3)
    assert all(torch.isfinite(v) for v in losses.values())
    result = trainer.train()
    assert result.step == 3
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert "blocks.scale1.pairs.depth_to_semseg.alpha" in state
    # alpha left 0 after three Adam steps: the correlation branch is being learnt
    assert float(state["blocks.scale1.pairs.depth_to_semseg.alpha"].abs().sum()) > 0


# ----------------------------------------------------------------------------------------------
# Shipped configs (Sec. 4.1)
# ----------------------------------------------------------------------------------------------
_SETS = {
    "sd": {"semseg": 50.0, "depth": 1.0},
    "sdn": {"semseg": 100.0, "depth": 1.0, "normals": 100.0},
    "sdne": {"semseg": 100.0, "depth": 1.0, "normals": 100.0, "edge": 50.0},
}
_ROWS = {
    **{f"nyud/xtam_resnet101_{s}": ("xtam", s, [1]) for s in _SETS},
    "nyud/threeways_padnet_resnet101_sdne": ("padnet", "sdne", [2]),
    "nyud/threeways_mtl_resnet101_sdne": ("none", "sdne", [1]),
    **{f"synthetic/xtam_resnet18_{s}": ("xtam", s, [1]) for s in _SETS},
    **{f"synthetic/threeways_padnet_resnet18_{s}": ("padnet", s, [2]) for s in _SETS},
    **{f"synthetic/threeways_mtl_resnet18_{s}": ("none", s, [1]) for s in _SETS},
}


@pytest.mark.parametrize("name", list(_ROWS))
def test_shipped_configs_are_the_papers_recipe(name) -> None:
    exchange, task_set, scales = _ROWS[name]
    cfg = load_config(PACKAGED_CONFIGS / f"{name}.yaml")
    m, t, loss = cfg.model, cfg.train, cfg.loss
    assert (m.name, m.exchange, m.exchange_scales, m.fusion, m.attention) == (
        "threeways", exchange, scales, "add", "spatial"
    )  # fmt: skip
    assert m.decoder_channels == [64, 128, 128, 256, 256] and m.backbone.output_stride == 16
    assert m.backbone.name == ("resnet101" if name.startswith("nyud/") else "resnet18")
    assert cfg.data.tasks == list(_SETS[task_set]) and not cfg.data.aux_tasks
    assert {k: loss.weights[k] for k in cfg.data.tasks} == _SETS[task_set]
    assert (loss.depth, loss.normals, loss.edge, loss.edge_pos_weight) == ("berhu", "cosine", "balanced", 0.95)
    assert (t.optimizer, t.betas, t.schedule, t.step_gamma, t.clip_grad_norm, t.weight_decay) == (
        "adam", [0.9, 0.98], "step", 0.1, 10.0, 0.0
    )  # fmt: skip
    assert t.step_milestones == [t.max_steps * 3 // 4]  # 30k of 40k
    assert t.lr * t.backbone_lr_mult == pytest.approx(t.lr * 2 / 3)  # 2e-4 backbone vs 3e-4 decoders
    if name.startswith("nyud/"):
        assert (t.lr, t.max_steps) == (3e-4, 40000)


# ----------------------------------------------------------------------------------------------
# Partial deltas (Tables 1-2)
# ----------------------------------------------------------------------------------------------
def test_partial_deltas_by_hand(tmp_path) -> None:
    """S-D-N model: mIoU 46 vs 40 (+15 %), rmse 0.55 vs 0.5 (-10 %), normals mean 18 vs 20 (+10 %):
    Delta_SD = (15 - 10) / 2 = 2.5 %, Delta_SDN = (15 - 10 + 10) / 3 = 5 %; read from results files
    (the run's results.json carries a "multitask" entry, which is ignored)."""
    results = {"semseg": {"mIoU": 46.0}, "depth": {"rmse": 0.55}, "normals": {"mean": 18.0}, "multitask": {"x": 1}}
    stl = {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 0.5}, "normals": {"mean": 20.0}, "edge": {"odsF": 50.0}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "stl.json").write_text(json.dumps(stl))
    sets = {"SD": ["semseg", "depth"], "SDN": ["semseg", "depth", "normals"]}
    out = partial_deltas(tmp_path / "results.json", str(tmp_path / "stl.json"), sets)
    assert list(out) == ["SD", "SDN"]
    assert out["SD"] == pytest.approx(2.5) and out["SDN"] == pytest.approx(5.0)
    assert multitask_delta(results, stl, tasks=["depth"]) == pytest.approx(-10.0)
    with pytest.raises(MtdenseError, match="task 'edge' missing from results"):
        partial_deltas(results, stl, {"SDNE": ["semseg", "depth", "normals", "edge"]})
    with pytest.raises(MtdenseError, match="results file not found"):
        partial_deltas(tmp_path / "nope.json", stl, sets)


def test_partial_delta_reproduces_table_1() -> None:
    """Table 1, Synthia 'S-D', "Ours" vs STL: ((80.53 - 67.43) / 67.43 + (5.379 - 4.161) / 5.379) / 2
    = (19.428 + 22.644) / 2 = +21.04 %, the paper's value."""
    ours = {"semseg": {"mIoU": 80.53}, "depth": {"rmse": 4.161}}
    stl = {"semseg": {"mIoU": 67.43}, "depth": {"rmse": 5.379}}
    assert round(partial_deltas(ours, stl, {"SD": ["semseg", "depth"]})["SD"], 2) == 21.04
