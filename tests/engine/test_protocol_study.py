"""benchmarks/protocol_study.py: Δm along training, its spread over seeds and ranking stability, on hand-made runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("protocol_study", ROOT / "benchmarks" / "protocol_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, curve: dict[int, dict], *, steps: int = 200) -> dict:
    """A run folder as the trainer leaves it: metrics.jsonl with validation records, config.yaml."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"step": 1, "split": "train", "loss": 1.0})]
    lines += [json.dumps({"step": s, "split": "val", "results": r}) for s, r in curve.items()]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    config = {"data": {"crop_size": [48, 64], "synth": {"train": 480}}, "train": {"max_steps": steps, "batch_size": 8}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return {"dir": str(folder)}


def _bench(tmp_path: Path) -> Path:
    """Two seeds; references and two methods evaluated at steps 100 and 200 (numbers chosen for hand-derived Δm)."""
    seg = lambda v: {"semseg": {"mIoU": v, "pixAcc": 0.0}}  # noqa: E731
    dep = lambda v: {"depth": {"rmse": v, "rel": 0.0}}  # noqa: E731
    refs = {
        "stl_semseg": ("semseg", {0: {100: seg(40.0), 200: seg(50.0)}, 1: {100: seg(40.0), 200: seg(40.0)}}),
        "stl_depth": ("depth", {0: {100: dep(1.0), 200: dep(1.0)}, 1: {100: dep(1.0), 200: dep(0.5)}}),
    }
    methods = {
        # step 100: a = +5 on both seeds, b = -5 on both; step 200: a = -10 / -10, b = +10 / +20
        "a": {0: {100: (44.0, 1.0), 200: (40.0, 1.0)}, 1: {100: (44.0, 1.0), 200: (32.0, 0.5)}},
        "b": {0: {100: (36.0, 1.0), 200: (60.0, 1.0)}, 1: {100: (36.0, 1.0), 200: (48.0, 0.4)}},
    }
    results: dict = {"command": "mtdense bench x", "references": {}, "methods": {}}
    for name, (task, seeds) in refs.items():
        runs = {str(s): _run(tmp_path / name / f"seed{s}", c) for s, c in seeds.items()}
        results["references"][name] = {
            "kind": "reference",
            "tasks": [task],
            "runs": runs,
            "train_step_s": {"mean": 0.5},
        }
    for name, seeds in methods.items():
        runs = {
            str(s): _run(tmp_path / name / f"seed{s}", {st: {**seg(m), **dep(d)} for st, (m, d) in c.items()})
            for s, c in seeds.items()
        }
        results["methods"][name] = {"kind": "method", "tasks": ["semseg", "depth"], "runs": runs, "train_step_s": None}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_delta_m_per_step_spread_and_ranking_from_run_folders(study, tmp_path):
    arm = study.collect("48x64", _bench(tmp_path))
    an = study.analyse(arm)
    assert an["steps"] == [100, 200] and an["seeds"] == [0, 1]
    a, b = an["methods"]["a"], an["methods"]["b"]
    assert a[0]["per_seed"] == pytest.approx([5.0, 5.0]) and b[0]["per_seed"] == pytest.approx([-5.0, -5.0])
    # step 200, seed 1: semseg 32 vs 40 (-20 %), depth 0.5 vs 0.5 (0) → -10; b: 48 vs 40 (+20 %), 0.4 vs 0.5 (+20 %)
    assert a[1]["per_seed"] == pytest.approx([-10.0, -10.0]) and b[1]["per_seed"] == pytest.approx([10.0, 20.0])
    assert b[1]["stat"][0] == pytest.approx(15.0) and b[1]["stat"][1] == pytest.approx(2**0.5 * 5.0)
    # against the seed-mean references (semseg 45, depth 0.75 at step 200): seed 0 of a: (40/45 - 1, -(1/0.75 - 1))
    pooled_a0 = 100 * ((40 / 45 - 1) - (1 / 0.75 - 1)) / 2
    pooled_a1 = 100 * ((32 / 45 - 1) - (0.5 / 0.75 - 1)) / 2
    assert a[1]["pooled"][0] == pytest.approx((pooled_a0 + pooled_a1) / 2)
    assert an["ranking"] == [["a", "b"], ["b", "a"]]
    assert an["tau_to_final"] == pytest.approx([-1.0, 1.0])
    assert an["ranking_final_from"] == 200  # the ranking of step 100 is not the final one
    assert study.beaten_in_every_seed(an) == {"b": ["a"], "a": []}  # step 200: b 10 and 20, a -10 and -10
    an["methods"]["a"][1]["per_seed"] = [-10.0, 25.0]  # seed 1 now has a above b: no longer resolved
    assert study.beaten_in_every_seed(an) == {"b": [], "a": []}
    # CPU minutes: the references' 0.5 s/step x 200 steps x 2 seeds each; the methods logged no step time
    assert an["cpu_minutes"] == pytest.approx(2 * 0.5 * 200 * 2 / 60)


def test_saved_curves_give_the_same_tables_without_the_runs(study, tmp_path):
    results = _bench(tmp_path / "runs")
    saved = tmp_path / "study.json"
    study.main([f"48x64={results}", "--save", str(saved)])
    first = study.report(json.loads(saved.read_text())["arms"])
    for folder in (tmp_path / "runs").iterdir():
        if folder.is_dir():
            for f in folder.rglob("metrics.jsonl"):
                f.unlink()
    out = tmp_path / "tables.md"
    assert study.main(["--curves", str(saved), "--markdown", str(out)]) == 0
    assert out.read_text().strip() == first.strip()
    assert "| 48x64 | 48×64 | 480 | 200 | 2 | 1/2 | 7.07 |" in first  # b: 10 and 20 at step 200; a: no spread
    assert "| -1.00 (step 100) | 200 | b > a |" in first  # step 100 ranks a > b


def test_saved_arms_and_new_arms_are_reported_and_saved_together(study, tmp_path, capsys):
    """An arm run on another day (its run folders gone) joins a new one through ``--curves``; a label used twice
    is refused before anything is written."""
    saved = tmp_path / "old.json"
    study.main([f"day 1={_bench(tmp_path / 'day1')}", "--save", str(saved)])
    both = tmp_path / "both.json"
    assert study.main(["--curves", str(saved), f"day 2={_bench(tmp_path / 'day2')}", "--save", str(both)]) == 0
    arms = json.loads(both.read_text())["arms"]
    assert [arm["label"] for arm in arms] == ["day 1", "day 2"]
    assert arms[0] == json.loads(saved.read_text())["arms"][0]
    assert study.analyse(arms[1])["methods"]["b"][1]["per_seed"] == pytest.approx([10.0, 20.0])
    again = tmp_path / "again.json"
    with pytest.raises(SystemExit):
        study.main(["--curves", str(saved), f"day 1={_bench(tmp_path / 'day3')}", "--save", str(again)])
    assert "two arms share a label: ['day 1']" in capsys.readouterr().err and not again.exists()


def test_kendall_tau(study):
    assert study._kendall(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert study._kendall(["a", "b", "c"], ["c", "b", "a"]) == -1.0
    assert study._kendall(["a", "b", "c"], ["b", "a", "c"]) == pytest.approx(1 / 3)


def test_an_arm_from_a_re_evaluation_on_another_validation_set(study, tmp_path):
    """``LABEL=RESULTS_JSON#NAME``: the runs' ``eval/NAME.json`` (``mtdense eval --out``) instead of their curves."""
    results = _bench(tmp_path)
    scores = {"stl_semseg": {"semseg": {"mIoU": 50.0}}, "stl_depth": {"depth": {"rmse": 2.0}}}
    scores |= {
        "a": {"semseg": {"mIoU": 55.0}, "depth": {"rmse": 2.0}},
        "b": {"semseg": {"mIoU": 50.0}, "depth": {"rmse": 1.0}},
    }
    for name, res in scores.items():
        for seed in (0, 1):
            (tmp_path / name / f"seed{seed}" / "eval").mkdir()
            (tmp_path / name / f"seed{seed}" / "eval" / "big.json").write_text(json.dumps(res))
    arm = study.collect("big val", results, evaluation="big")
    an = study.analyse(arm)
    assert an["steps"] == [200]
    assert an["methods"]["a"][0]["per_seed"] == pytest.approx([5.0, 5.0])
    assert an["methods"]["b"][0]["per_seed"] == pytest.approx([25.0, 25.0])
    assert an["ranking"] == [["b", "a"]]
    out = tmp_path / "t.md"
    assert study.main([f"big val={results}#big", "--markdown", str(out)]) == 0
    assert "| big val | 48×64 | 480 | 200 | 2 |" in out.read_text()


def test_figure_of_two_arms_is_written(study, tmp_path):
    """--figure draws one panel per arm (one colour per method across panels) and writes a PNG."""
    results = _bench(tmp_path / "runs")
    png = tmp_path / "fig" / "study.png"
    assert study.main([f"day 1={results}", f"day 2={results}", "--figure", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
