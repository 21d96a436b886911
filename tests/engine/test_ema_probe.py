"""benchmarks/ema_probe.py: the EMA recursion, a training left unchanged, and the Δm summary on hand-made records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mtdense.config import validate_config
from mtdense.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def probe(monkeypatch):
    spec = importlib.util.spec_from_file_location("ema_probe", ROOT / "benchmarks" / "ema_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "FROM_STEP", 0)
    return module


def _val_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "val"]


def test_emas_follow_the_recursion_and_the_training_is_the_runs(probe, monkeypatch, tiny_raw_config, tmp_path):
    raw = tiny_raw_config(
        **{"train.max_steps": 3, "train.eval_every": 1, "train.threads": 1, "data.tasks": ["semseg", "depth"]}
    )
    plain = tmp_path / "plain"
    Trainer(validate_config(raw), plain, progress=False).train()
    # decay 0: the average is the last weights; decay 0.5: a short memory the recursion below is checked against
    monkeypatch.setattr(probe, "DECAYS", (0.0, 0.5))
    snapshots: list[dict[str, torch.Tensor]] = []
    trainers: list = []

    class Recording(probe.EmaTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)
            snapshots.append({n: p.detach().clone() for n, p in self.model.named_parameters()})

        def train_step(self, batch):
            log = super().train_step(batch)
            snapshots.append({n: p.detach().clone() for n, p in self.model.named_parameters()})
            return log

    monkeypatch.setattr(probe, "EmaTrainer", Recording)
    out = tmp_path / "probe"
    probe.train(plain, out)
    records = [json.loads(line) for line in (out / "ema.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    # the training and the raw scores are the plain run's: swapping the averages in and out changes nothing
    assert [r["raw"] for r in records] == [r["results"] for r in _val_records(plain)]
    assert [r["0.0"] for r in records] == [r["raw"] for r in records]
    # the 0.5 average after three steps: 0.5³ θ0 + 0.5³ θ1 + 0.5² θ2 + 0.5 θ3 (θ0 the initial weights), every tensor
    assert len(snapshots) == 4
    for name, average in trainers[0].emas[0.5].items():
        theta = [s[name].float() for s in snapshots]
        expected = 0.125 * theta[0] + 0.125 * theta[1] + 0.25 * theta[2] + 0.5 * theta[3]
        torch.testing.assert_close(average, expected)
        torch.testing.assert_close(trainers[0].emas[0.0][name], theta[3])
    assert records[-1]["0.5"] != records[-1]["raw"]


def test_the_summary_is_delta_m_against_same_seed_references(probe, tmp_path, capsys):
    def write(name: str, seed: int, results: dict) -> None:
        folder = tmp_path / name / f"seed{seed}"
        folder.mkdir(parents=True)
        record = {"step": 10, "raw": results, **{str(d): results for d in probe.DECAYS}}
        (folder / "ema.jsonl").write_text(json.dumps(record) + "\n")

    for seed, (ref_miou, ref_rmse, miou, rmse) in enumerate([(40.0, 1.0, 44.0, 1.0), (50.0, 0.5, 50.0, 0.4)]):
        write("stl_semseg", seed, {"semseg": {"mIoU": ref_miou}})
        write("stl_depth", seed, {"depth": {"rmse": ref_rmse}})
        write("m", seed, {"semseg": {"mIoU": miou}, "depth": {"rmse": rmse}})
    probe.summary(tmp_path, "m", {"semseg": "stl_semseg", "depth": "stl_depth"})
    lines = capsys.readouterr().out.splitlines()
    # seed 0: (+10 % + 0) / 2 = +5; seed 1: (0 + 20 %) / 2 = +10; mean 7.5, std 3.54
    expected = "raw step 10 refs semseg 45.00 ± 7.07 depth 0.7500 ± 0.3536 Δm m 7.50 ± 3.54 (+5.00, +10.00)"
    assert lines[0].split() == expected.split()
    assert len(lines) == 1 + len(probe.DECAYS)
