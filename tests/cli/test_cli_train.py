"""``mtdense train`` through the command line: resume rules (what may change, what is refused and why),
and a non-finite loss that stops with the step named and the earlier checkpoint intact."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from mtdense.cli.main import _parser, main
from mtdense.engine.checkpoint import RESUME_MAY_CHANGE, load_checkpoint


@pytest.fixture
def config_file(tiny_raw_config, tmp_path):
    def write(name: str = "cfg.yaml", **overrides):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_raw_config(**overrides)))
        return str(path)

    return write


BASE = {"train.threads": 1, "train.schedule": "constant"}


@pytest.fixture(scope="module")
def base_run(tiny_raw_config, tmp_path_factory):
    """A config file and a 1-step run of it, trained once: each test that resumes it works on a copy."""
    tmp = tmp_path_factory.mktemp("cli_train")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw_config(**BASE)))
    assert main(["train", str(cfg), "--out", str(tmp / "run"), "--max-steps", "1"]) == 0
    return str(cfg), tmp / "run"


def _copy_of(base_run, tmp_path):
    cfg, run = base_run
    return cfg, shutil.copytree(run, tmp_path / "run")


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _train_steps(out) -> list[int]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["split"] == "train"]


def test_resume_with_changed_config_lists_the_changed_keys_and_writes_nothing(base_run, config_file, tmp_path, capsys):
    _, run = _copy_of(base_run, tmp_path)
    ckpt, saved_yaml = run / "checkpoints" / "last.pt", run / "config.yaml"
    before = ckpt.read_bytes(), saved_yaml.read_bytes(), (run / "metrics.jsonl").read_bytes()
    capsys.readouterr()

    other = config_file("other.yaml", **BASE, **{"model.backbone.name": "resnet34"})
    code = main(["train", other, "--out", str(run), "--resume", "--max-steps", "4", "train.lr=0.01"])
    err = _err(capsys)
    assert code == 2
    assert err.startswith("error: --resume: the config differs") and str(ckpt) in err
    assert "train.lr: 0.001 → 0.01" in err
    assert "model.backbone.name: 'resnet18' → 'resnet34'" in err
    assert "train.max_steps" not in err.split("only ")[0]  # an allowed change is not listed as a difference
    assert "2 key(s)" in err
    assert (ckpt.read_bytes(), saved_yaml.read_bytes(), (run / "metrics.jsonl").read_bytes()) == before


def test_resume_may_change_only_length_logging_and_data_location_and_then_is_exact(base_run, tmp_path, synth_root):
    """Allowed changes (max_steps, log/eval/checkpoint cadence, loader workers, a moved dataset) resume a
    1-step run to 4 steps; with a constant learning rate (max_steps also ends the poly schedule) the result
    equals an uninterrupted 4-step run."""
    cfg, part = _copy_of(base_run, tmp_path)
    full = tmp_path / "full"
    assert main(["train", cfg, "--out", str(full), "--max-steps", "4"]) == 0
    moved = tmp_path / "staged"
    shutil.copytree(synth_root, moved)
    changed = ["train.log_every=2", "train.eval_every=3", "train.checkpoint_every=3", "data.num_workers=1"]
    changed.append(f"data.root={moved}")
    assert main(["train", cfg, "--out", str(part), "--resume", "--max-steps", "4", *changed]) == 0
    a = load_checkpoint(full / "checkpoints" / "last.pt")
    b = load_checkpoint(part / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["config"]["train"]["max_steps"] == 4 and b["config"]["data"]["num_workers"] == 1
    assert _train_steps(part) == [1, 2, 4]  # step 1 at log_every=1, then log_every=2


def test_resume_refuses_a_moved_dataset_that_is_another_one(base_run, tmp_path, synth_root, capsys):
    cfg, run = _copy_of(base_run, tmp_path)
    other = tmp_path / "other"
    shutil.copytree(synth_root, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["seed"] = meta.get("seed", 0) + 1
    (other / "meta.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["train", cfg, "--out", str(run), "--resume", "--max-steps", "2", f"data.root={other}"]) == 2
    err = _err(capsys)
    assert f"data.root={other} is not the one" in err and "differs in: seed" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1


def test_resume_refuses_a_checkpoint_of_another_number_of_processes(base_run, tmp_path, capsys):
    cfg, run = _copy_of(base_run, tmp_path)
    ckpt = run / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt)
    state["rng"] = {"world_size": 2, "ranks": state["rng"]["ranks"] * 2}  # as two DDP ranks write it
    torch.save(state, ckpt)
    capsys.readouterr()
    assert main(["train", cfg, "--out", str(run), "--resume", "--max-steps", "2"]) == 2
    err = _err(capsys)
    assert "written by 2 training process(es), resuming with 1" in err and "--nproc_per_node=2" in err


def test_resume_without_a_checkpoint_is_an_error(config_file, tmp_path, capsys):
    assert main(["train", config_file(), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint to resume from" in _err(capsys)


def test_non_finite_loss_names_the_step_and_keeps_the_earlier_checkpoint(config_file, tmp_path, capsys):
    """SGD with a learning rate of 1e12 sends the weights to ±inf after one update, so the loss of a
    later step is not finite; the checkpoint of the last finite step must survive unchanged."""
    cfg = config_file(**{"train.threads": 1, "train.optimizer": "sgd", "train.lr": 1e12, "train.checkpoint_every": 1})
    run = tmp_path / "run"
    assert main(["train", cfg, "--out", str(run), "--max-steps", "6"]) == 2
    err = _err(capsys)
    assert "non-finite loss at step" in err and "is kept" in err
    bad_step = int(err.split("non-finite loss at step ")[1].split()[0])
    kept = load_checkpoint(run / "checkpoints" / "last.pt")
    assert kept["step"] == bad_step - 1 >= 1
    assert max(_train_steps(run)) == bad_step - 1  # nothing was logged for the failed step


def test_train_help_lists_exactly_the_keys_resume_may_change():
    sub = next(a for a in _parser()._subparsers._group_actions if a.dest == "command")  # noqa: SLF001
    text = sub.choices["train"].description
    listed = text.split("only in ")[1].split(" (")[0].replace(" and ", ", ").split(", ")
    assert set(listed) == RESUME_MAY_CHANGE
