"""``mtdense demo`` end to end at toy size: render, single-task runs, the multi-task run, Δm, table, figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from mtdense.cli.main import main
from mtdense.tasks import TASKS

TASKS_USED = ("semseg", "depth")
TOY = [
    "data.synth.train=8",
    "data.synth.val=4",
    "data.synth.size=[32, 32]",
    f"data.tasks=[{', '.join(TASKS_USED)}]",
    "loss.weights={semseg: 1.0, depth: 1.0}",
    "train.max_steps=2",
    "train.batch_size=4",
    "train.threads=1",
    "train.log_every=1",
    "eval.batch_size=4",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The packaged demo config through the CLI, shrunk by overrides: 8 + 4 images of 32×32, 2 steps per model
    (one epoch of batch 4)."""
    root = tmp_path_factory.mktemp("demo")
    out = root / "out"
    rc = main(["demo", "--out", str(out), f"data.root={root / 'data'}", *TOY])
    assert rc == 0
    return root, out


def test_demo_writes_every_run_and_its_metrics(demo):
    root, out = demo
    meta = json.loads((root / "data" / "meta.json").read_text())
    assert meta["splits"] == {"train": 8, "val": 4} and meta["size"] == [32, 32]
    runs = {f"stl_{t}": [t] for t in TASKS_USED} | {"mtinet": list(TASKS_USED)}
    for name, tasks in runs.items():
        run = out / name
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["data"]["tasks"] == tasks and cfg["train"]["max_steps"] == 2
        assert (run / "checkpoints" / "last.pt").is_file()
        steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert {1, 2} <= set(steps)
        results = json.loads((run / "results.json").read_text())
        for task in tasks:
            metric = TASKS[task].primary_metric.name
            assert np.isfinite(results[task][metric])


def test_demo_delta_m_table_and_figure(demo):
    """results.json is the multi-task run's, with Δm (MTI-Net eq. 2) against the single-task runs the demo trained:
    Δm = 100 / T · Σ_i (−1)^{l_i} (M_m,i − M_s,i) / M_s,i, l_i = 1 when lower is better."""
    _, out = demo
    mt = json.loads((out / "results.json").read_text())
    assert mt == json.loads((out / "mtinet" / "results.json").read_text())
    stl = json.loads((out / "stl_results.json").read_text())
    terms = []
    for task in TASKS_USED:
        m = TASKS[task].primary_metric
        assert stl[task] == json.loads((out / f"stl_{task}" / "results.json").read_text())[task]
        sign = -1.0 if m.lower_is_better else 1.0
        terms.append(sign * (mt[task][m.name] - stl[task][m.name]) / stl[task][m.name])
    assert mt["multitask"]["delta_m"] == pytest.approx(100 * np.mean(terms), rel=1e-6)

    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| model |") and "semseg mIoU" in table[0] and "depth rmse" in table[0]
    assert [row.split("|")[1].strip() for row in table[2:]] == ["stl (semseg)", "stl (depth)", "mtinet"]

    with Image.open(out / "predictions.png") as fig:
        assert fig.format == "PNG"
        w, h = fig.size
        pixels = np.asarray(fig.convert("RGB"))
    assert w > 200 and h > 100
    assert pixels.std() > 10  # drawn, not blank
