"""TRL (Zhang et al., ECCV 2018): the equations of the TAM (eqs. 2-3), the upsampling block (Fig. 3b, eq. 4),
the recursive data flow of eq. (1), the Table 2 switches, and a few training steps through the Trainer with the
learned uncertainty weights of eq. (7)."""

from __future__ import annotations

import json
import math

import pydantic
import pytest
import torch
import torch.nn.functional as F

from mtdense.backbones import build_backbone
from mtdense.config.load import validate_config
from mtdense.engine.trainer import Trainer
from mtdense.errors import ConfigError, MtdenseError
from mtdense.models import build_model, model_config_class
from mtdense.models.trl import (
    TRL,
    BalanceUnit,
    ParallelDecoder,
    RecursiveDecoder,
    TaskAttentionalModule,
    UpsamplingBlock,
    _deepest_block,
    _Geometry,
)

HEADS = {"semseg": 5, "depth": 1}


def _trl(seed: int = 0, heads=HEADS, aux=None, **over) -> TRL:
    raw = {"name": "trl", "backbone": {"name": "resnet18"}, "width": 16, "task_order": ["depth", "semseg"], **over}
    torch.manual_seed(seed)
    return build_model(model_config_class("trl").model_validate(raw), heads=dict(heads), aux_heads=aux or {})


def _randomise_bn(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so that eval-mode checks do not pass by BN being the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _pair(c=8, h=7, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, c, h, w, generator=g), torch.randn(2, c, h, w, generator=g)


# ---------------------------------------------------------------------------------------------
# Task-attentional module: eqs. (2)-(3)
# ---------------------------------------------------------------------------------------------
def test_balance_unit_is_eq2():
    """f_b = Ψ2([B·f_d, (1−B)·f_s]) with B = σ(Ψ1([f_d, f_s])), computed here from Ψ1 and Ψ2 by hand."""
    torch.manual_seed(0)
    unit = BalanceUnit(8)
    _randomise_bn(unit)
    unit.eval()
    f_d, f_s = _pair()
    with torch.no_grad():
        b = torch.sigmoid(unit.psi1(torch.cat([f_d, f_s], 1)))
        expected = unit.psi2(torch.cat([b * f_d, (1 - b) * f_s], 1))
        assert b.shape == f_d.shape and ((b > 0) & (b < 1)).all()
        assert torch.allclose(unit.balance(f_d, f_s), b)
        assert torch.allclose(unit(f_d, f_s), expected, atol=1e-6)


def test_tam_gate_is_exactly_one_plus_m():
    """Eq. (3): the fusing conv receives [(1 + M)·f_d, (1 + M)·f_s] with M the module's attention map."""
    torch.manual_seed(0)
    tam = TaskAttentionalModule(8)
    _randomise_bn(tam)
    tam.eval()
    f_d, f_s = _pair(h=9, w=11)  # odd sizes: the conv-deconv branch must return exactly H x W
    seen = {}
    tam.fuse.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    with torch.no_grad():
        m = tam.attention_map(f_d, f_s)
        out, m_returned = tam(f_d, f_s)
    assert m.shape == f_d.shape and ((m > 0) & (m < 1)).all()
    assert torch.equal(m_returned, m)
    assert torch.allclose(seen["inp"], torch.cat([(1 + m) * f_d, (1 + m) * f_s], 1), atol=1e-6)
    assert torch.equal(out, seen["out"]) and out.shape == f_d.shape


@pytest.mark.parametrize("select", ["depth", "semseg"])
def test_saturated_balance_selects_one_task(select):
    """Forcing Ψ1's logits to +30 (B ≈ 1) makes f_b, M and the attention independent of f_s; −30 (B ≈ 0)
    makes them independent of f_d. The other input still matters."""
    torch.manual_seed(0)
    tam = TaskAttentionalModule(8)
    _randomise_bn(tam)
    tam.eval()
    conv, bn = tam.balance.psi1[0], tam.balance.psi1[1]
    with torch.no_grad():
        conv.weight.zero_()
        bn.weight.zero_()  # BN output = bias: the logits are the constant ±30
        bn.bias.fill_(30.0 if select == "depth" else -30.0)
    f_d, f_s = _pair(seed=1)
    other_d, other_s = _pair(seed=2)
    with torch.no_grad():
        b = tam.balance.balance(f_d, f_s)
        assert torch.allclose(b, torch.full_like(b, 1.0 if select == "depth" else 0.0), atol=1e-12)
        m = tam.attention_map(f_d, f_s)
        if select == "depth":  # only f_d reaches f_b
            same, changed = tam.attention_map(f_d, other_s), tam.attention_map(other_d, f_s)
        else:
            same, changed = tam.attention_map(other_d, f_s), tam.attention_map(f_d, other_s)
    assert torch.allclose(same, m, atol=1e-6)
    assert (changed - m).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Upsampling block: Fig. 3b and eq. (4)
# ---------------------------------------------------------------------------------------------
def test_upsampling_block_is_four_convs_and_a_pixel_shuffle():
    torch.manual_seed(0)
    block = UpsamplingBlock(16)
    _randomise_bn(block)
    block.eval()
    convs = [branch[0] for branch in block.branches]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (5, 5), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (1, 1), (1, 1), (2, 2)]  # conv-4: a 7x7 field
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        y = block(x)
        cat = torch.cat([branch(x) for branch in block.branches], 1)
    assert cat.shape == (2, 32, 5, 7)  # H x W x 2C
    assert y.shape == (2, 8, 10, 14)  # 2H x 2W x C/2
    assert torch.allclose(y, F.pixel_shuffle(cat, 2))
    # the sub-pixel rearrangement by index: output (c, 2i + a, 2j + b) is input channel 4c + 2a + b at (i, j)
    for c, a, b, i, j in [(0, 0, 0, 0, 0), (3, 1, 0, 2, 5), (7, 1, 1, 4, 6), (5, 0, 1, 3, 1)]:
        assert y[1, c, 2 * i + a, 2 * j + b] == cat[1, 4 * c + 2 * a + b, i, j]


def test_upsampling_block_refuses_odd_channels_and_wrong_inputs():
    with pytest.raises(ConfigError, match="even"):
        UpsamplingBlock(7)
    with pytest.raises(MtdenseError, match=r"expected \(B, 16, H, W\)"):
        UpsamplingBlock(16)(torch.zeros(1, 8, 4, 4))


# ---------------------------------------------------------------------------------------------
# The recursive decoder: eq. (1), Fig. 2
# ---------------------------------------------------------------------------------------------
def _record(model: TRL):
    """Inputs and outputs of every TAM, residual block and upsampling block of a forward pass."""
    rec: dict[str, object] = {}
    dec = model.decoder
    for p, tam in enumerate(dec.tams):
        tam.register_forward_hook(lambda m, i, o, p=p: rec.update({f"tam{p + 1}": (i, o)}))
    for p, block in enumerate(dec.blocks):
        block.register_forward_hook(lambda m, i, o, p=p: rec.update({f"res{p + 1}": (i[0], o)}))
    for n, ups in enumerate(dec.upsample):
        for t, up in ups.items():
            up.register_forward_hook(lambda m, i, o, n=n, t=t: rec.update({f"up{n + 1}/{t}": (i[0], o)}))
    return rec


def test_recursive_decoder_follows_eq1_with_k1():
    """D^p reads T(f_D^{p-1}, f_S^{p-1}); S^p reads T(f_D^p, f_S^{p-1}); across scales the latest states go
    through their task's upsampling block. Example of the paper: the TAM before Res-d5 takes the upsampled
    Res-d3 (depth) and Res-d4 (segmentation)."""
    model = _trl().eval()
    rec = _record(model)
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    dec = model.decoder
    assert [dec.state_task(p) for p in range(1, 9)] == ["depth", "semseg"] * 4

    def out(key):
        return rec[key][1]

    (d1_in, s1_in), _ = rec["tam1"]
    assert torch.equal(d1_in, s1_in)  # f_D^0 = f_S^0 = Up(Res-5)
    (d, s), _ = rec["tam2"]
    assert torch.equal(d, out("res1")) and torch.equal(s, s1_in)
    for n in range(1, 4):  # scale n + 1 starts with state p = 2n + 1
        p = 2 * n + 1
        assert torch.equal(rec[f"up{n}/depth"][0], out(f"res{p - 2}"))
        assert torch.equal(rec[f"up{n}/semseg"][0], out(f"res{p - 1}"))
        (d, s), _ = rec[f"tam{p}"]
        assert torch.equal(d, out(f"up{n}/depth")) and torch.equal(s, out(f"up{n}/semseg"))
        (d, s), _ = rec[f"tam{p + 1}"]
        assert torch.equal(d, out(f"res{p}")) and torch.equal(s, out(f"up{n}/semseg"))
    # each residual block reads the TAM output and the encoder skip of its scale (none at stride 2)
    skips = {16: 256, 8: 128, 4: 64, 2: 0}
    for p in range(1, 9):
        w = 16 // 2 ** ((p - 1) // 2)
        stride = 16 // 2 ** ((p - 1) // 2)
        x, _ = rec[f"res{p}"]
        assert x.shape[1] == w + skips[stride]
        assert torch.equal(x[:, :w], rec[f"tam{p}"][1][0])


def test_decoder_widths_and_block_type_mirror_the_encoder():
    """ResNet-18: BasicBlocks, 256/128/64/32; ResNet-50: Bottlenecks, 1024/512/256/128 (from feature_info)."""
    r18, r50 = build_backbone("resnet18"), build_backbone("resnet50")
    assert _deepest_block(r18).__name__ == "BasicBlock" and _deepest_block(r50).__name__ == "Bottleneck"
    assert _Geometry(r18.feature_info, None, _deepest_block(r18)).widths == [256, 128, 64, 32]
    g50 = _Geometry(r50.feature_info, None, _deepest_block(r50))
    assert g50.widths == [1024, 512, 256, 128] and g50.strides == [16, 8, 4, 2]
    assert g50.skip_channels == [1024, 512, 256, 0]
    model = _trl(block="bottleneck", width=32)
    assert type(model.decoder.blocks[0][0]).__name__ == "Bottleneck"
    with pytest.raises(ConfigError, match="multiple of 32"):
        _trl(block="bottleneck", width=16)


def test_outputs_at_every_scale_and_output_scale_rows():
    """Supervision at every scale: scale 1..3 keyed "scale<n>/<task>" at strides 16, 8, 4; scale 4 is the final
    output at the input size. output_scale (Table 2 "TRL scale-k") only relabels: same parameters, and its
    final output is the chosen scale's prediction upsampled."""
    x = torch.rand(1, 3, 65, 49)
    full = _trl().eval()
    with torch.no_grad():
        out = full(x)
    assert set(out) == {f"scale{n}/{t}" for n in (1, 2, 3) for t in HEADS} | set(HEADS)
    assert out["scale1/depth"].shape == (1, 1, 5, 4) and out["scale3/semseg"].shape == (1, 5, 17, 13)
    assert out["depth"].shape == (1, 1, 65, 49)
    s2 = _trl(output_scale=2).eval()
    s2.load_state_dict(full.state_dict())
    with torch.no_grad():
        out2 = s2(x)
    assert set(out2) == {f"scale{n}/{t}" for n in (1, 3, 4) for t in HEADS} | set(HEADS)
    assert torch.allclose(out2["depth"], F.interpolate(out["scale2/depth"], (65, 49), mode="bilinear"))
    assert out2["scale4/semseg"].shape == (1, 5, 33, 25)


# ---------------------------------------------------------------------------------------------
# Table 2 switches: each row changes the parameter set the way the row says
# ---------------------------------------------------------------------------------------------
def _names(model):
    return {n: tuple(p.shape) for n, p in model.named_parameters() if not n.startswith("backbone.")}


def test_switches_change_the_parameters_as_their_rows_say():
    full, notam = _trl(), _trl(tam=False)
    nogate, noexp = _trl(balance=False), _trl(tam=False, experience=False)
    base = _trl(decoder="parallel")
    f, nt, ng, ne, b = map(_names, (full, notam, nogate, noexp, base))
    tam_names = {n for n in f if n.startswith("decoder.tams.")}
    balance_names = {n for n in tam_names if ".balance." in n}
    assert len({n.split(".")[2] for n in tam_names}) == 8 and balance_names
    # w/o gate unit: exactly the balance units are gone; the attention branch reads [f_d, f_s] (2C channels)
    assert set(ng) == set(f) - balance_names
    for p in range(8):
        key = f"decoder.tams.{p}.attention.down.0.0.weight"
        assert ng[key][1] == 2 * f[key][1]
    # w/o TAM: no TAM parameters; each residual block reads both experience states (+ the skip)
    assert not any(n.startswith("decoder.tams.") for n in nt)
    assert set(nt) - {n for n in nt if n.startswith("decoder.blocks.")} == set(f) - tam_names - {
        n for n in f if n.startswith("decoder.blocks.")
    }
    w = [16, 16, 8, 8, 4, 4, 2, 2]
    skip = [256, 256, 128, 128, 64, 64, 0, 0]
    for p in range(8):
        assert nt[f"decoder.blocks.{p}.0.conv1.weight"][1] == 2 * w[p] + skip[p]
        assert f[f"decoder.blocks.{p}.0.conv1.weight"][1] == w[p] + skip[p]
        assert ne[f"decoder.blocks.{p}.0.conv1.weight"][1] == w[p] + skip[p]
    # w/o exp-TAM: no TAMs, and only the last state of a scale is carried to the next one
    assert not any(n.startswith("decoder.tams.") for n in ne)
    assert not any(".depth." in n for n in ne if n.startswith("decoder.upsample."))
    assert any(".semseg." in n for n in ne if n.startswith("decoder.upsample."))
    # Baseline-I: two decoders of four residual stages, a cross-stitch unit per scale, no TAMs
    assert isinstance(base.decoder, ParallelDecoder) and isinstance(full.decoder, RecursiveDecoder)
    assert not any("tams" in n for n in b)
    assert len({tuple(n.split(".")[2:4]) for n in b if n.startswith("decoder.blocks.")}) == 8
    assert [b[f"decoder.cross_stitch.{n}.alpha"] for n in range(4)] == [(2, 2, 16), (2, 2, 8), (2, 2, 4), (2, 2, 2)]


def test_no_experience_is_a_chain():
    """w/o exp-TAM: Res-d<p> reads only Res-d<p-1> (upsampled across scales) and the skip."""
    model = _trl(tam=False, experience=False).eval()
    rec = _record(model)
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    for p in range(2, 9):
        x, _ = rec[f"res{p}"]
        prev = rec[f"res{p - 1}"][1] if p % 2 == 0 else rec[f"up{(p - 1) // 2}/semseg"][1]
        assert torch.equal(x[:, : prev.shape[1]], prev)


def test_baseline_cross_stitch_identity_gives_independent_decoders():
    """With alpha = I the two decoders of Baseline-I do not interact: changing one task's decoder weights leaves
    the other task's outputs unchanged."""
    model = _trl(decoder="parallel", alpha_self=1.0).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        for prm in model.decoder.blocks[0]["semseg"].parameters():
            prm.add_(0.5)
        after = model(x)
    assert torch.equal(before["depth"], after["depth"]) and torch.equal(before["scale2/depth"], after["scale2/depth"])
    assert not torch.allclose(before["semseg"], after["semseg"])


def test_config_errors_name_the_problem():
    cls = model_config_class("trl")
    with pytest.raises(pydantic.ValidationError, match="also set tam: false"):
        cls.model_validate({"name": "trl", "experience": False})
    with pytest.raises(pydantic.ValidationError, match="no TAMs"):
        cls.model_validate({"name": "trl", "tam": False, "balance": False})
    with pytest.raises(pydantic.ValidationError, match="only apply to decoder: recursive"):
        cls.model_validate({"name": "trl", "decoder": "parallel", "tam": False})
    with pytest.raises(ConfigError, match="exactly two main tasks"):
        _trl(heads={"semseg": 5, "depth": 1, "normals": 3}, task_order=None)
    with pytest.raises(ConfigError, match="no auxiliary tasks"):
        _trl(aux={"normals": 3})
    with pytest.raises(ConfigError, match="permutation"):
        _trl(task_order=["depth", "normals"])


# ---------------------------------------------------------------------------------------------
# The explain hook: attention maps M (Fig. 4)
# ---------------------------------------------------------------------------------------------
def test_explain_returns_every_tam_attention_map():
    model = _trl().eval()
    with torch.no_grad():
        maps = model.explain(torch.rand(2, 3, 64, 48))
    assert list(maps) == [f"tam{p}/{t}" for p, t in zip(range(1, 9), ["depth", "semseg"] * 4, strict=True)]
    assert maps["tam1/depth"].shape == (2, 16, 4, 3) and maps["tam8/semseg"].shape == (2, 2, 32, 24)
    assert all(((m > 0) & (m < 1)).all() for m in maps.values())
    with pytest.raises(MtdenseError, match="no task-attentional modules"):
        _trl(tam=False).explain(torch.rand(1, 3, 64, 64))
    with pytest.raises(MtdenseError, match="exposes no explanation maps"):
        build_model(model_config_class("mtl").model_validate({"name": "mtl"}), heads=HEADS).explain(
            torch.rand(1, 3, 64, 64)
        )


# ---------------------------------------------------------------------------------------------
# Training through the engine: berHu + cross-entropy at every scale, uncertainty weights (eq. 7)
# ---------------------------------------------------------------------------------------------
def test_trainer_runs_trl_with_uncertainty_weights(tiny_raw_config, tmp_path):
    raw = tiny_raw_config(
        **{
            "data.tasks": ["semseg", "depth"],
            "model": {"name": "trl", "width": 16, "task_order": ["depth", "semseg"], "backbone": {"name": "resnet18"}},
            "loss.balancer": "uncertainty",
            "loss.depth": "berhu",
            "train.max_steps": 2,
        }
    )
    result = Trainer(validate_config(raw), tmp_path / "run", progress=False).train()
    assert result.step == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    first = train[0]
    keys = [f"{s}/{t}" for s in ("scale1", "scale2", "scale3") for t in ("depth", "semseg")] + ["depth", "semseg"]
    assert all(f"loss/{k}" in first for k in keys)
    # eq. (7) at δ = 0.5 (the first step): e^{-δ1}·Σ_n L_n^D + e^{-δ2}·Σ_n L_n^S + δ1 + δ2
    assert first["delta/depth"] == first["delta/semseg"] == 0.5
    depth = sum(first[f"loss/{k}"] for k in keys if k.endswith("depth"))
    semseg = sum(first[f"loss/{k}"] for k in keys if k.endswith("semseg"))
    assert first["loss/total"] == pytest.approx(math.exp(-0.5) * (depth + semseg) + 1.0, rel=1e-5)
    assert train[-1]["delta/depth"] != 0.5  # δ is learned
    assert all(math.isfinite(r["loss/total"]) for r in train)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results) == {"semseg", "depth"}
