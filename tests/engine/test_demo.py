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
    (one epoch of batch 4), in the default 2 parallel training processes."""
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
    assert {k: v for k, v in mt.items() if k != "multitask"} == json.loads(
        (out / "mtinet" / "results.json").read_text()
    )
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


def test_demo_ran_in_parallel_single_threaded_processes(demo):
    """The default --jobs 2: every run trained in its own process (a log each) with one intra-op thread."""
    _, out = demo
    for name in ("mtinet", *(f"stl_{t}" for t in TASKS_USED)):
        assert (out / "logs" / f"{name}_seed0.log").is_file()
        assert yaml.safe_load((out / name / "config.yaml").read_text())["train"]["threads"] == 1


def test_demo_is_seed_0_of_the_synthetic_demo_suite(tmp_path):
    """README's claim that the demo abbreviates `mtdense bench synthetic-demo`: the demo's runs are that suite's
    seed-0 `mtinet` row and references, config for config, except the suite's gradient probe (which leaves the
    weights unchanged, tests/engine/test_probe.py) and the Δm baseline file the bench points its methods to."""
    from mtdense.engine.bench import load_suite, plan_suite
    from mtdense.engine.demo import plan_demo

    suite, path = load_suite("synthetic-demo")
    plan = plan_suite(suite, path, out=tmp_path / "bench", seeds=[0], jobs=2, only_methods=["mtinet"])
    mt, stl = plan_demo(out=tmp_path / "demo", jobs=2)

    def strip(cfg):
        return {**cfg, "probe": None, "eval": {**cfg["eval"], "baseline": None}}

    assert strip(plan.methods[0].config) == strip(mt.config)
    assert {r.name: strip(r.config) for r in plan.references} == {r.name: strip(r.config) for r in stl.values()}


def test_demo_refuses_zero_jobs(capsys):
    assert main(["demo", "--jobs", "0"]) == 2
    assert "--jobs: expected at least 1, got 0" in capsys.readouterr().err
