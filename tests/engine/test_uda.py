"""MTL-UDA (DenseMTL, Lopes et al., WACV 2023, Sec. 4.5) as a trainer extension: the discriminators' architecture
and spectral norm, their inputs' equations, where the adversarial gradient flows, the discriminators' separate
optimiser, exact resume, the checkpoint state, evaluation on the target domain and config errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from mtdense.cli.main import main
from mtdense.config import validate_config
from mtdense.engine import uda as U
from mtdense.engine.checkpoint import load_checkpoint
from mtdense.engine.trainer import Trainer
from mtdense.errors import ConfigError, ShapeError


@pytest.fixture(scope="module")
def target_root(tmp_path_factory):
    """The target domain: the tiny source's family (indoor) in style b, other scenes (seed 4), 32x48."""
    from mtdense.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("uda") / "indoor_b"
    write_synthetic_dataset(
        root, train=6, val=2, size=(32, 48), seed=4, family="indoor", style="b", progress=False, workers=1
    )
    return root


@pytest.fixture
def uda_raw(tiny_raw_config, target_root):
    """A tiny 'S-D' xTAM run (3-ways decoder at width 8-16, side outputs at scale 1) with UDA to ``target_root``."""

    def make(**overrides):
        raw = tiny_raw_config(
            **{
                "data.tasks": ["semseg", "depth"],
                "data.val_data": {"root": str(target_root)},
                "model": {
                    "name": "threeways",
                    "exchange": "xtam",
                    "decoder_channels": [8, 8, 8, 16, 16],
                    "aspp_channels": 16,
                    "backbone": {"name": "resnet18", "output_stride": 16},
                },
                "loss.weights": {"semseg": 1.0, "depth": 1.0},
                "train.max_steps": 2,
                "train.threads": 1,
                "uda": {"target": {"root": str(target_root)}, "disc_channels": 8, "adv_weight": 0.5},
            }
        )
        for key, value in overrides.items():
            node = raw
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        return raw

    return make


def _trainer(raw, out, **kw):
    return Trainer(validate_config(raw), out, progress=False, **kw)


def _uda(trainer) -> U.UdaExtension:
    (ext,) = trainer.extensions
    assert isinstance(ext, U.UdaExtension)
    return ext


def _first_batch(trainer):
    from mtdense.engine import data as D

    return next(iter(D.make_train_loader(trainer.cfg, trainer.train_set)))


# -- the discriminator ---------------------------------------------------------------------------------------


def test_patch_discriminator_layers_and_spectral_norm_on_every_conv():
    """Five 4x4 stride-2 convs (padding 1) with widths w, 2w, 4w, 8w, 1, LeakyReLU(0.2) between them, each weight
    spectrally normalised: after enough power iterations (train-mode forwards) the largest singular value of every
    effective weight matrix is 1; an H x W input gives H/32 x W/32 patch logits."""
    torch.manual_seed(0)
    d = U.PatchDiscriminator(5, width=8)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(5, 8), (8, 16), (16, 32), (32, 64), (64, 1)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    assert all(type(c.parametrizations.weight[0]).__name__ == "_SpectralNorm" for c in convs)
    relus = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(relus) == 4 and all(r.negative_slope == 0.2 for r in relus)
    d.train()
    for _ in range(100):
        d(torch.rand(1, 5, 32, 32))
    d.eval()  # no power iteration on access
    for c in convs:
        sigma = torch.linalg.matrix_norm(c.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=5e-3)
    d.train()
    assert d(torch.rand(2, 5, 64, 96)).shape == (2, 1, 2, 3)
    with pytest.raises(ShapeError, match=r"at least 32×32.*\(16, 16\)"):
        d(torch.rand(1, 5, 16, 16))
    with pytest.raises(ShapeError, match=r"expected \(B, 5, H, W\), got \(1, 4, 32, 32\)"):
        d(torch.rand(1, 4, 32, 32))


def test_discriminator_inputs_follow_their_equations():
    """semseg: −p log p / log C (uniform p: 1/C per channel; channel sum = normalised entropy, by hand for
    p = (1/4, 3/4): H = −(¼ ln ¼ + ¾ ln ¾) / ln 2 = 0.811278); depth: (relu(d) − lo) / (hi − lo) with the source
    batch's valid range; normals: unit vectors; edge: the binary self-information (p = 1/2: 1/2 per channel)."""
    info = U.self_information(torch.zeros(1, 4, 2, 2))
    assert torch.allclose(info, torch.full_like(info, 0.25))
    two = U.self_information(torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1))
    assert float(two.sum()) == pytest.approx(0.811278, abs=1e-6)
    assert float(U.self_information(torch.tensor([0.0, 60.0]).view(1, 2, 1, 1)).sum()) == pytest.approx(0, abs=1e-6)

    source_depth = torch.tensor([0.0, 2.0, 6.0, 0.0]).view(1, 1, 2, 2)  # 0 = invalid: range [2, 6]
    pred = torch.tensor([-1.0, 2.0, 4.0, 8.0]).view(1, 1, 2, 2)
    assert U.normalised_depth(pred, source_depth).flatten().tolist() == [-0.5, 0.0, 0.5, 1.5]
    assert U.depth_range(torch.zeros(1, 1, 2, 2)) == (0.0, 1.0)

    n = U.unit_normals(torch.tensor([3.0, 4.0, 0.0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(n, torch.tensor([0.6, 0.8, 0.0]))
    assert torch.allclose(U.binary_self_information(torch.zeros(1, 1, 1, 1)), torch.full((1, 2, 1, 1), 0.5))
    with pytest.raises(ConfigError, match="parts.*semseg, depth, normals, edge"):
        U.discriminator_input("parts")


# -- through the trainer -------------------------------------------------------------------------------------


def test_uda_run_trains_discriminators_and_evaluates_on_the_target(uda_raw, target_root, tmp_path):
    """One discriminator per output of the main tasks (final and side outputs), each conv spectrally normalised;
    the discriminators' optimiser holds exactly their parameters (none of the model's), Adam (1e-4, (0.9, 0.99))
    with poly decay; a run logs the adversarial and discriminator terms, saves the extension's state in the
    checkpoint and evaluates on the target domain's val split."""
    out = tmp_path / "run"
    trainer = _trainer(uda_raw(), out)
    ext = _uda(trainer)
    assert ext.keys == ["scale1/semseg", "scale1/depth", "semseg", "depth"]
    for d in ext.discriminators.values():
        convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 5 and all(parametrize.is_parametrized(c, "weight") for c in convs)
    in_channels = {k: ext.discriminators[U._module_name(k)].in_channels for k in ext.keys}
    assert in_channels == {"scale1/semseg": 13, "scale1/depth": 1, "semseg": 13, "depth": 1}

    disc_params = {id(p) for p in ext.discriminators.parameters()}
    opt_params = [id(p) for g in ext.optimizer.param_groups for p in g["params"]]
    assert set(opt_params) == disc_params and len(opt_params) == len(disc_params)
    assert not disc_params & {id(p) for p in trainer.model.parameters()}
    assert not disc_params & {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    group = ext.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.9, 0.99), 0.0)
    assert str(trainer.val_set.base.root) == str(target_root)  # data.val_data: scored on the target domain

    trainer.train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert all(f"loss/uda/adv/{k}" in r and f"uda/disc/{k}" in r for r in train for k in ext.keys)
    # poly decay (1 - step / max_steps)^0.9 after each of the 2 steps
    assert [r["uda/lr_disc"] for r in train] == pytest.approx([1e-4 * 0.5**0.9, 0.0])
    state = load_checkpoint(out / "checkpoints" / "last.pt")["extensions"]["uda"]
    assert state["keys"] == ext.keys
    assert set(state["discriminators"]) == set(ext.discriminators.state_dict())
    assert any(k.endswith("_u") for k in state["discriminators"])  # spectral norm's power-iteration vectors
    assert state["optimizer"]["state"] and state["scheduler"]["last_epoch"] == 2
    assert "semseg" in json.loads((out / "results.json").read_text())


def test_adversarial_gradient_flows_only_through_the_target_outputs(uda_raw, tmp_path):
    """In one UDA step the generator's adversarial term reaches the model through the target forward only: the
    gradients at the source outputs are bitwise those of a run with adv_weight 0, the target outputs receive a
    gradient only with adv_weight > 0, the term does not depend on the source outputs, and the discriminators
    receive no gradient from it."""
    grads: dict[float, dict[tuple[int, str], torch.Tensor]] = {}
    for weight in (0.0, 0.5):
        trainer = _trainer(uda_raw(**{"uda.adv_weight": weight}), tmp_path / f"w{weight}")
        seen = grads.setdefault(weight, {})
        calls = []

        def capture(module, args, outputs, seen=seen, calls=calls):
            call = len(calls)
            calls.append(call)
            for k, v in outputs.items():
                v.register_hook(lambda g, key=(call, k): seen.__setitem__(key, g.detach().clone()))

        handle = trainer.model.register_forward_hook(capture)
        ext = _uda(trainer)
        original_after = ext.after_step
        ext.after_step = lambda tr, step: {}  # look at the generator's gradients before the discriminator step
        trainer.model.train()
        trainer.train_step(_first_batch(trainer))
        handle.remove()
        assert len(calls) == 2  # the source forward (trainer), the target forward (extension)
        assert all(p.grad is None for p in ext.discriminators.parameters())
        ext.after_step = original_after
    for k in ("semseg", "depth", "scale1/semseg", "scale1/depth"):
        assert torch.equal(grads[0.0][(0, k)], grads[0.5][(0, k)]), k  # source outputs: task losses only
        assert not grads[0.0][(1, k)].any(), k
        assert grads[0.5][(1, k)].abs().sum() > 0, k

    # the term, built by the extension from a batch and the source outputs, has no path to those outputs
    trainer = _trainer(uda_raw(), tmp_path / "direct")
    batch = _first_batch(trainer)
    source_out = {k: v.detach().requires_grad_(True) for k, v in trainer.model(batch["image"]).items()}
    terms = _uda(trainer).extra_loss(trainer, batch, source_out, 0)
    assert set(terms) == {f"uda/adv/{k}" for k in _uda(trainer).keys}
    total = torch.stack(list(terms.values())).sum()
    assert all(g is None for g in torch.autograd.grad(total, list(source_out.values()), allow_unused=True))
    model_grads = torch.autograd.grad(total, [p for p in trainer.model.parameters() if p.requires_grad])
    assert sum(float(g.abs().sum()) for g in model_grads) > 0


def test_a_discriminator_step_leaves_the_model_bitwise_unchanged(uda_raw, tmp_path):
    trainer = _trainer(uda_raw(), tmp_path / "run")
    ext = _uda(trainer)
    batch = {k: v for k, v in _first_batch(trainer).items()}
    trainer.model.train()
    source_out = trainer.model(batch["image"])
    ext.extra_loss(trainer, batch, {k: v.detach() for k, v in source_out.items()}, 0)
    model_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    disc_before = {k: v.clone() for k, v in ext.discriminators.state_dict().items()}
    log = ext.after_step(trainer, 0)
    assert log["uda/disc"] > 0 and math.isfinite(log["uda/disc"])
    after = trainer.model.state_dict()
    assert all(torch.equal(model_before[k], after[k]) for k in model_before)
    assert all(p.grad is None for p in trainer.model.parameters())
    changed = [k for k, v in ext.discriminators.state_dict().items() if not torch.equal(disc_before[k], v)]
    assert any(k.endswith("original0") or k.endswith("bias") for k in changed)


def _assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_uda_run_resumes_exactly(uda_raw, tmp_path):
    """3 steps in one go vs 2 steps, stop, resume for 1: identical model, discriminators (weights and spectral-norm
    vectors), both optimisers and schedules; the resumed run's target batches continue where they stopped."""
    raw = uda_raw(**{"train.max_steps": 3})
    _trainer(raw, tmp_path / "full").train()
    _trainer(raw, tmp_path / "part").train(stop_after=2)
    _trainer(raw, tmp_path / "part", resume=True).train()
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    part = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert full["step"] == part["step"] == 3
    for key in ("model", "optimizer", "scheduler", "extensions"):
        _assert_same(full[key], part[key], key)


def test_uda_config_errors_are_named(uda_raw, tmp_path, capsys):
    """An unknown or ill-typed ``uda`` key, or a missing target, is a ConfigError naming the dotted key; through the
    CLI: one ``error:`` line, exit code 2, no run directory written."""
    with pytest.raises(ConfigError, match=r"uda\.adv_wieght"):
        validate_config(uda_raw(**{"uda.adv_wieght": 0.01}))
    with pytest.raises(ConfigError, match=r"uda\.target\.scales"):
        validate_config(uda_raw(**{"uda.target.scales": "big"}))
    raw = uda_raw()
    del raw["uda"]["target"]
    with pytest.raises(ConfigError, match=r"uda\.target"):
        validate_config(raw)

    import yaml

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(uda_raw(**{"uda.disc_chanels": 8})))
    code = main(["train", str(cfg), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "uda.disc_chanels" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_target_with_other_classes_is_refused(uda_raw, tmp_path):
    """A target domain (or val_data) whose classes differ from the source's cannot be adapted to or scored."""
    from mtdense.data.synthetic import write_synthetic_dataset

    street = write_synthetic_dataset(
        tmp_path / "street", train=2, val=1, size=(32, 48), seed=0, family="street", progress=False, workers=1
    )
    with pytest.raises(ConfigError, match=r"uda\.target.*classes 12.*13"):
        _trainer(uda_raw(**{"uda.target.root": str(street)}), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"data\.val_data.*classes 12.*13"):
        _trainer(uda_raw(**{"data.val_data.root": str(street)}), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
