"""Precise BN (eval.precise_bn): BatchNorm statistics re-estimated before each evaluation, through the trainer."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mtdense.config import validate_config
from mtdense.engine import checkpoint as C
from mtdense.engine import data as D
from mtdense.engine.evaluation import evaluate_run
from mtdense.engine.precise_bn import bn_layers, recompute_bn_stats
from mtdense.engine.trainer import Trainer


def _batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased variance of an NCHW batch, by hand."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.var(1, unbiased=True)


def test_statistics_are_the_equal_weight_average_of_the_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.Dropout(0.5), nn.ReLU())
    model.eval()
    batches = [{"image": torch.randn(2, 3, 6, 6) * (k + 1) + k} for k in range(5)]
    rng = torch.get_rng_state()
    used = recompute_bn_stats(model, batches, 3)
    assert used == 3
    conv = model[0]
    stats = [_batch_stats(conv(b["image"]).detach()) for b in batches[:3]]  # the 4th and 5th are not used
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, torch.stack([m for m, _ in stats]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([v for _, v in stats]).mean(0))
    assert bn.momentum == 0.01 and not model.training  # momentum and mode restored
    assert torch.equal(torch.get_rng_state(), rng)  # the dropout draws did not move the global RNG


def test_an_empty_source_of_batches_is_an_error_and_models_without_bn_are_left_alone():
    with pytest.raises(ValueError, match="no batch"):
        recompute_bn_stats(nn.BatchNorm2d(2), [], 4)
    model = nn.Conv2d(3, 2, 1)
    assert recompute_bn_stats(model, [{"image": torch.randn(1, 3, 2, 2)}], 4) == 0


def _train(raw, out, **kw):
    trainer = Trainer(validate_config(raw), out, progress=False)
    trainer.train(**kw)
    return trainer


@pytest.fixture(scope="module")
def runs(tiny_raw_config, tmp_path_factory):
    """The same tiny run without and with eval.precise_bn: 3 (4 steps, evaluating at steps 2 and 4)."""
    base = {"train.max_steps": 4, "train.eval_every": 2, "train.threads": 1, "data.tasks": ["semseg", "depth"]}
    tmp = tmp_path_factory.mktemp("precise_bn")
    plain = _train(tiny_raw_config(**base), tmp / "plain")
    precise = _train(tiny_raw_config(**base, **{"eval.precise_bn": 3}), tmp / "precise")
    return base, plain, precise


def test_the_trainer_evaluates_and_checkpoints_statistics_of_the_final_weights(runs):
    """Every BN layer's saved statistics are the average, over the run's first 3 training batches, of the
    batch statistics the final weights produce (derived here with hooks, in training mode, where a layer's
    input does not depend on any running statistics); the moving averages of a plain run are not."""
    _, plain, precise = runs
    state = C.load_checkpoint(precise.out / "checkpoints" / "last.pt")["model"]
    model = precise.model
    model.load_state_dict(state)
    names = {m: n for n, m in model.named_modules()}
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: inputs.setdefault(names[mod], []).append(args[0].detach()))
        for m in bn_layers(model)
    ]
    model.train()
    with torch.no_grad():
        for k, batch in enumerate(D.make_train_loader(precise.cfg, precise.train_set)):
            if k == 3:
                break
            model(batch["image"])
    for h in hooks:
        h.remove()
    assert len(inputs) == len(bn_layers(model)) > 10
    plain_state = C.load_checkpoint(plain.out / "checkpoints" / "last.pt")["model"]
    for name, xs in inputs.items():
        assert len(xs) == 3
        stats = [_batch_stats(x) for x in xs]
        mean, var = torch.stack([m for m, _ in stats]).mean(0), torch.stack([v for _, v in stats]).mean(0)
        torch.testing.assert_close(state[f"{name}.running_mean"], mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(state[f"{name}.running_var"], var, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(plain_state[f"{name}.running_mean"], mean, rtol=1e-4, atol=1e-5)


def test_precise_bn_leaves_the_training_itself_unchanged(runs):
    """Same losses at every step, bitwise-equal parameters: only the BN buffers (and the scores) differ."""
    _, plain, precise = runs
    lines = [
        [json.loads(line) for line in (r.out / "metrics.jsonl").read_text().splitlines()] for r in (plain, precise)
    ]
    losses = [[rec["loss"] for rec in recs if rec["split"] == "train"] for recs in lines]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    a = C.load_checkpoint(plain.out / "checkpoints" / "last.pt")["model"]
    b = C.load_checkpoint(precise.out / "checkpoints" / "last.pt")["model"]
    for name, _ in plain.model.named_parameters():
        assert torch.equal(a[name], b[name]), name
    assert json.loads((plain.out / "results.json").read_text()) != json.loads(
        (precise.out / "results.json").read_text()
    )


def test_mtdense_eval_of_the_run_reproduces_the_trainers_scores(runs):
    _, _, precise = runs
    results, _ = evaluate_run(precise.out, out=precise.out.parent / "re-eval.json", device="cpu")
    assert results == json.loads((precise.out / "results.json").read_text())


def test_a_resumed_run_re_estimates_as_the_uninterrupted_one(runs, tiny_raw_config, tmp_path):
    base, _, precise = runs
    raw = tiny_raw_config(**base, **{"eval.precise_bn": 3})
    _train(raw, tmp_path / "part", stop_after=3)  # the evaluation at step 2 re-estimated; step 3 moved them
    resumed = Trainer(validate_config(raw), tmp_path / "part", resume=True, progress=False)
    resumed.train()
    a = C.load_checkpoint(precise.out / "checkpoints" / "last.pt")["model"]
    b = C.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "part" / "results.json").read_text() == (precise.out / "results.json").read_text()


def test_mtdense_eval_precise_bn_scores_a_plain_run_as_training_with_it_would(runs, tmp_path, capsys):
    """``mtdense eval RUN --precise-bn 3`` of the run trained without it gives the scores of the run trained with
    ``eval.precise_bn: 3`` (precise BN does not change the training), and leaves the checkpoint as it was."""
    from mtdense.cli.main import main

    _, plain, precise = runs
    ckpt = plain.out / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    assert main(["eval", str(plain.out), "--precise-bn", "3", "--out", str(tmp_path / "pbn.json")]) == 0
    got = json.loads((tmp_path / "pbn.json").read_text())
    want = json.loads((precise.out / "results.json").read_text())
    assert got.keys() == want.keys()
    for task, metrics in want.items():
        assert got[task] == pytest.approx(metrics, rel=1e-5, abs=1e-6), task
    assert got != json.loads((plain.out / "results.json").read_text())
    assert ckpt.read_bytes() == before
    with pytest.raises(SystemExit):
        main(["eval", str(plain.out), "--precise-bn", "0"])
    assert "--precise-bn" in capsys.readouterr().err


def test_runs_written_before_the_key_existed_still_equal_their_config(tiny_raw_config):
    """Off is ``null``: a saved config without ``eval.precise_bn`` is no change against one with it off (so old
    checkpoints resume and ``mtdense bench`` reuses old runs), and one with it on is."""
    from mtdense.config.load import config_to_dict
    from mtdense.engine.checkpoint import material_changes

    current = config_to_dict(validate_config(tiny_raw_config()))
    old = {**current, "eval": {k: v for k, v in current["eval"].items() if k != "precise_bn"}}
    assert current["eval"]["precise_bn"] is None and material_changes(old, current) == {}
    on = config_to_dict(validate_config(tiny_raw_config(**{"eval.precise_bn": 60})))
    assert material_changes(old, on) == {"eval.precise_bn": ("<absent>", 60)}
    with pytest.raises(Exception, match="precise_bn"):
        validate_config(tiny_raw_config(**{"eval.precise_bn": 0}))
