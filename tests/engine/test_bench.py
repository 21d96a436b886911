"""``mtdense bench``: a tiny suite (2 methods × 2 seeds + 2 single-task references, 2 steps at 32×32,
HRNet-W18-small-v2: its MTL model has 4 M parameters against ResNet-18's 19 M, so each of the ten runs
writes a 5× smaller checkpoint) driven through the CLI: outputs exist, statistics equal hand-computed ones,
finished runs are reused (their files are not rewritten), a changed override retrains only that method and
interrupted runs are resumed (in parallel jobs)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from mtdense.cli.main import main
from mtdense.config import load_config
from mtdense.data.synthetic import write_synthetic_dataset
from mtdense.engine.bench import load_suite, packaged_suite_names, plan_suite
from mtdense.engine.bench.runner import decide, run_all
from mtdense.engine.trainer import Trainer

SUITE = """\
description: tiny test suite
seeds: [5]
references:
  semseg: {{config: stl_semseg.yaml}}
  depth: {{single_task_of: mtl.yaml}}
methods:
  mtl: {{config: mtl.yaml}}
  mtl_fast: {{config: mtl.yaml, overrides: [{fast}]}}
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    data = write_synthetic_dataset(root / "data", train=8, val=4, size=(32, 32), seed=0, progress=False, workers=0)
    (root / "mtl.yaml").write_text(
        f"data: {{dataset: synthetic, root: {data}, tasks: [semseg, depth], crop_size: [32, 32], cache: false}}\n"
        "model: {name: mtl, backbone: {name: hrnet_w18_small_v2}}\n"
        "train: {max_steps: 2, batch_size: 4, threads: 1, log_every: 1}\n"
        "eval: {batch_size: 4}\n"
    )
    (root / "stl_semseg.yaml").write_text("_base_: mtl.yaml\ndata: {tasks: [semseg]}\nmodel: {name: stl}\n")
    (root / "suite.yaml").write_text(SUITE.format(fast="train.lr=1.0e-3"))
    out = root / "out"
    assert main(["bench", str(root / "suite.yaml"), "--seeds", "0", "1", "--out", str(out)]) == 0
    return root, out


def _runs(out: Path) -> dict[str, Path]:
    return {f"{p.parent.parent.name}/{p.parent.name}": p for p in sorted(out.glob("*/seed*/results.json"))}


def test_outputs_and_statistics_match_hand_computation(bench: tuple[Path, Path]) -> None:
    _, out = bench
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1]
    assert set(_runs(out)) == {f"{n}/seed{s}" for n in ("stl_semseg", "stl_depth", "mtl", "mtl_fast") for s in (0, 1)}
    for fig in ("delta_m_vs_gflops", "per_task", "learning_curves"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000
    table = (out / "results.md").read_text()

    def res(name: str, seed: int) -> dict:
        return json.loads((out / name / f"seed{seed}" / "results.json").read_text())

    for method in ("mtl", "mtl_fast"):
        row = results["methods"][method]
        for task, metric in (("semseg", "mIoU"), ("depth", "rmse"), ("depth", "rel")):
            values = [res(method, s)[task][metric] for s in (0, 1)]
            assert row["metrics"][task][metric]["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
            assert row["metrics"][task][metric]["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
        # MTI-Net Eq. 2 by hand: mIoU higher is better, rmse lower is better; same-seed references
        deltas = []
        for s in (0, 1):
            m, b_sem, b_dep = res(method, s), res("stl_semseg", s), res("stl_depth", s)
            sem = (m["semseg"]["mIoU"] - b_sem["semseg"]["mIoU"]) / b_sem["semseg"]["mIoU"]
            dep = -(m["depth"]["rmse"] - b_dep["depth"]["rmse"]) / b_dep["depth"]["rmse"]
            deltas.append(100 * (sem + dep) / 2)
        assert row["delta_m"]["per_seed"] == pytest.approx(deltas, rel=1e-9)
        assert row["delta_m"]["mean"] == pytest.approx(statistics.mean(deltas), rel=1e-9)
        assert row["delta_m"]["std"] == pytest.approx(statistics.stdev(deltas), rel=1e-9)
        assert f"{statistics.mean(deltas):+.3g} ± {statistics.stdev(deltas):.2g}" in table
        assert row["params_m"] > 1 and row["gflops"] > 0 and row["train_step_s"]["mean"] > 0
    # the references' baseline of each seed is what the methods' runs compared against
    baseline = json.loads((out / "references" / "seed1.json").read_text())
    assert baseline == {"semseg": res("stl_semseg", 1)["semseg"], "depth": res("stl_depth", 1)["depth"]}
    assert res("mtl", 1)["multitask"]["delta_m"] == pytest.approx(results["methods"]["mtl"]["delta_m"]["per_seed"][1])


def test_resume_and_stale_decisions(bench: tuple[Path, Path]) -> None:
    root, out = bench
    suite, path = load_suite(root / "suite.yaml")
    same = plan_suite(suite, path, out=out, seeds=[0])
    assert all(decide(r)[0] == "reuse" for r in [*same.references, *same.methods])
    logged = plan_suite(suite, path, out=out, seeds=[0], overrides=["train.log_every=2", "train.threads=2"])
    assert all(decide(r)[0] == "reuse" for r in logged.methods)  # same training, other logging and threads
    # another length is another poly schedule: not the run asked for, even resumed
    longer = plan_suite(suite, path, out=out, seeds=[0], overrides=["train.max_steps=4"])
    assert all(decide(r)[0] == "train" for r in longer.methods)
    other = plan_suite(suite, path, out=out, seeds=[0], overrides=["train.weight_decay=0.0"])
    assert all(decide(r)[0] == "train" for r in other.methods)


def test_rerun_reuses_and_changed_override_retrains(bench: tuple[Path, Path]) -> None:
    root, out = bench
    mtimes = {k: p.stat().st_mtime_ns for k, p in _runs(out).items()}
    ckpts = {k: (p.parent / "checkpoints" / "last.pt").stat().st_mtime_ns for k, p in _runs(out).items()}
    assert main(["bench", str(root / "suite.yaml"), "--seeds", "0", "1", "--out", str(out)]) == 0
    assert {k: p.stat().st_mtime_ns for k, p in _runs(out).items()} == mtimes
    assert {k: (p.parent / "checkpoints" / "last.pt").stat().st_mtime_ns for k, p in _runs(out).items()} == ckpts
    assert set(json.loads((out / "results.json").read_text())["actions"].values()) == {"reuse"}

    # mtl seed 0 interrupted after step 1 of 2, as a killed job leaves it: a checkpoint, no results.json
    interrupted = out / "mtl" / "seed0"
    cfg = load_config(interrupted / "config.yaml")
    shutil.rmtree(interrupted)
    Trainer(cfg, interrupted, progress=False).train(stop_after=1)
    assert not (interrupted / "results.json").exists()

    (root / "suite.yaml").write_text(SUITE.format(fast="train.lr=2.0e-3"))
    assert main(["bench", str(root / "suite.yaml"), "--seeds", "0", "--out", str(out), "--jobs", "2"]) == 0
    actions = json.loads((out / "results.json").read_text())["actions"]
    assert actions == {
        "stl_semseg (seed 0)": "reuse",
        "stl_depth (seed 0)": "reuse",
        "mtl (seed 0)": "resume",
        "mtl_fast (seed 0)": "train",
    }
    steps = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert steps[:2] == [1, 2]  # step 1 from the interrupted session, step 2 from the resumed one
    after = {k: p.stat().st_mtime_ns for k, p in _runs(out).items()}
    assert {k for k in mtimes if after[k] != mtimes[k]} == {"mtl_fast/seed0", "mtl/seed0"}
    assert "lr: 0.002" in (out / "mtl_fast" / "seed0" / "config.yaml").read_text()
    assert "lr: 0.001" in (out / "mtl_fast" / "seed1" / "config.yaml").read_text()  # seed 1 not asked for
    assert (out / "mtl_fast" / "seed0.replaced-1" / "results.json").is_file()  # the old run is kept, not deleted


def test_run_killed_after_its_last_checkpoint_is_evaluated(bench: tuple[Path, Path]) -> None:
    """Killed between the last checkpoint and results.json: resuming trains nothing; the checkpoint is evaluated."""
    root, out = bench
    suite, path = load_suite(root / "suite.yaml")
    (ref,) = [r for r in plan_suite(suite, path, out=out, seeds=[1]).references if r.name == "stl_depth"]
    before = json.loads((ref.out / "results.json").read_text())
    (ref.out / "results.json").unlink()
    assert run_all([ref], jobs=1, logs=out / "logs") == {"stl_depth (seed 1)": "resume"}
    assert json.loads((ref.out / "results.json").read_text())["depth"] == pytest.approx(before["depth"], rel=1e-4)


def test_method_task_without_reference_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "suite.yaml").write_text(
        "references:\n  semseg: {config: synthetic/stl_semseg_hrnet18s}\n"
        "methods:\n  mtl: {config: synthetic/mtl_hrnet18s}\n"
    )
    assert main(["bench", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "suite.yaml: methods.mtl" in err and "depth" in err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    (tmp_path / "bad.yaml").write_text("references: {}\nmethods:\n  m: {config: x, typo: 1}\n")
    assert main(["bench", str(tmp_path / "bad.yaml")]) == 2
    assert "methods.m.typo: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("name", packaged_suite_names())
def test_packaged_suites_plan(name: str, tmp_path: Path) -> None:
    """Every shipped suite loads and every run's config validates (no training)."""
    suite, path = load_suite(name)
    plan = plan_suite(suite, path, out=tmp_path, seeds=[0])
    assert plan.methods and all(r.tasks for r in plan.references)
    assert {"synthetic-2a", "synthetic-trl", "synthetic-psd", "synthetic-xtam"} <= set(packaged_suite_names())


def test_help_has_example(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "Example" in capsys.readouterr().out


def test_methods_filter_keeps_references(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--methods`` keeps only the named methods, every reference still runs, and a name the suite does not
    have is a named error before anything trains."""
    suite, path = load_suite("synthetic-trl")
    full = plan_suite(suite, path, out=tmp_path, seeds=[0])
    some = plan_suite(suite, path, out=tmp_path, seeds=[0], only_methods=["trl", "notam"])
    assert sorted(r.name for r in some.methods) == ["notam", "trl"]
    assert [r.name for r in some.references] == [r.name for r in full.references]
    assert main(["bench", "synthetic-trl", "--methods", "trl", "typo", "--out", str(tmp_path / "o")]) == 2
    assert "--methods: unknown method(s) ['typo']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_task_sets_filter_drops_unused_references(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--task-sets sd sdn`` expands the methods over those sets only and trains no reference of a task no
    planned run has (the edge reference is only needed by S-D-N-E); an unknown set is a named error."""
    suite, path = load_suite("synthetic-xtam")
    full = plan_suite(suite, path, out=tmp_path, seeds=[0])
    some = plan_suite(suite, path, out=tmp_path, seeds=[0], only_task_sets=["sd", "sdn"])
    assert sorted(r.name for r in full.references) == ["stl_depth", "stl_edge", "stl_normals", "stl_semseg"]
    assert sorted(r.name for r in some.references) == ["stl_depth", "stl_normals", "stl_semseg"]
    assert sorted(r.name for r in some.methods) == sorted(
        f"{m}_{t}" for m in ("mtl", "padnet", "xtam", "padnet_original") for t in ("sd", "sdn")
    )
    assert some.reference_tasks == ["semseg", "depth", "normals"]
    only_sd = plan_suite(suite, path, out=tmp_path, seeds=[0], only_task_sets=["sd"], only_methods=["xtam"])
    assert [r.name for r in only_sd.references] == ["stl_semseg", "stl_depth"]
    assert main(["bench", "synthetic-xtam", "--task-sets", "sd", "sdx", "--out", str(tmp_path / "o")]) == 2
    assert "--task-sets: unknown task set(s) ['sdx']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
