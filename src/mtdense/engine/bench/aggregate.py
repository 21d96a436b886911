"""Aggregating a suite's runs: mean ± std over seeds, Δm, parameters, GFLOPs, train-step time.

Statistics over seeds use the sample standard deviation (``n − 1`` in the denominator, numpy's
``ddof=1``); with a single seed there is no spread to estimate and ``std`` is ``None``.

Δm (MTI-Net Eq. 2, :func:`mtdense.metrics.multitask_delta`) is computed per seed, against the
references trained with the same seed, from the raw metrics of the runs (not read back from a run's
own ``results.json``, which could predate retrained references); its mean and std are over seeds.

Parameters and GFLOPs (:func:`mtdense.engine.complexity.complexity_report`, 1 multiply-add = 2 FLOPs,
per image) are taken at the run's training input size (``data.crop_size``, else ``data.eval_size``,
else the synthetic ``data.synth.size``); both are the same for every seed. The train-step time is
``train.batch_size / images_per_s`` of the last training record of each run's ``metrics.jsonl`` (the
Trainer's average over the steps of its last session, evaluation excluded), averaged over seeds. It
is measured under whatever else ran on the machine at the time (with ``--jobs N`` the N runs share it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtdense.engine.bench.plan import Plan, RunSpec
from mtdense.errors import DataError


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of ``values`` (sample std, ``None`` for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def read_results(run: RunSpec) -> dict[str, dict[str, float]]:
    path = run.out / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{run.label}: cannot read {path}: {e}") from None


def read_curves(run: RunSpec) -> dict[str, list]:
    """``{"train": [(step, loss)], "val": [(step, results)]}`` from the run's ``metrics.jsonl``."""
    return read_run_curves(run.out)


def read_run_curves(folder: Path) -> dict[str, list]:
    """:func:`read_curves` of the run folder ``folder`` (empty lists when it has no ``metrics.jsonl``)."""
    curves: dict[str, list] = {"train": [], "val": []}
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return curves
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("split") == "train" and "loss" in rec:
            curves["train"].append((rec["step"], rec["loss"]))
        elif rec.get("split") == "val" and "results" in rec:
            curves["val"].append((rec["step"], rec["results"]))
    return curves


def train_step_seconds(run: RunSpec) -> float | None:
    path = run.out / "metrics.jsonl"
    last = None
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line) if line.strip() else {}
            if rec.get("split") == "train" and rec.get("images_per_s"):
                last = rec
    return run.config["train"]["batch_size"] / last["images_per_s"] if last else None


def input_size(config: dict[str, Any]) -> tuple[int, int] | None:
    data = config["data"]
    for size in (data.get("crop_size"), data.get("eval_size"), (data.get("synth") or {}).get("size")):
        if size:
            return int(size[0]), int(size[1])
    return None


def complexity_of(run: RunSpec) -> dict[str, Any]:
    """Parameters (M) and GFLOPs of the run's model at :func:`input_size`, cached in the run folder
    (``bench_complexity.json``, recomputed when the run's config changed)."""
    from mtdense.engine.complexity import complexity_report

    size = input_size(run.config)
    if size is None:
        return {"params_m": None, "gflops": None, "size": None}
    cache = run.out / "bench_complexity.json"
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("config") == run.config:
            return saved["complexity"]
    rep = complexity_report(run.out / "config.yaml", size=size, compare_stl=False)
    out = {"params_m": rep["params_m"], "gflops": rep["gflops"], "size": list(size)}
    cache.write_text(json.dumps({"config": run.config, "complexity": out}))
    return out


def _metric_stats(per_seed: list[dict[str, dict[str, float]]], tasks: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        names = [m for m, v in per_seed[0][task].items() if isinstance(v, (int, float))]
        out[task] = {m: mean_std([r[task][m] for r in per_seed]) for m in names}
    return out


def _row(runs: list[RunSpec], kind: str, baselines: dict[int, dict] | None) -> dict[str, Any]:
    from mtdense.metrics import multitask_delta

    runs = sorted(runs, key=lambda r: r.seed)
    tasks = runs[0].tasks
    per_seed = [read_results(r) for r in runs]
    row: dict[str, Any] = {
        "kind": kind,
        "tasks": tasks,
        "seeds": [r.seed for r in runs],
        "runs": {str(r.seed): {"dir": str(r.out), "results": res} for r, res in zip(runs, per_seed, strict=True)},
        "metrics": _metric_stats(per_seed, tasks),
    }
    if baselines is not None:
        deltas = [
            multitask_delta({t: res[t] for t in tasks}, {t: baselines[r.seed][t] for t in tasks})
            for r, res in zip(runs, per_seed, strict=True)
        ]
        row["delta_m"] = {**mean_std(deltas), "per_seed": deltas}
    steps = [s for s in (train_step_seconds(r) for r in runs) if s is not None]
    row["train_step_s"] = mean_std(steps) if steps else None
    row.update(complexity_of(runs[0]))
    return row


def aggregate(plan: Plan) -> dict[str, Any]:
    """``{"references": {name: row}, "methods": {name: row}}`` (see :func:`_row`), from the finished runs and
    the baselines that :func:`write_baselines` wrote."""
    refs: dict[str, list[RunSpec]] = {}
    for r in plan.references:
        refs.setdefault(r.name, []).append(r)
    methods: dict[str, list[RunSpec]] = {}
    for r in plan.methods:
        methods.setdefault(r.name, []).append(r)
    baselines = {s: json.loads(p.read_text(encoding="utf-8")) for s, p in plan.baselines.items()}
    return {
        "references": {n: _row(rs, "reference", None) for n, rs in refs.items()},
        "methods": {n: _row(rs, "method", baselines) for n, rs in methods.items()},
    }


def write_baselines(plan: Plan) -> None:
    """``references/seed<S>.json``: ``{task: metrics}`` of seed S's single-task references."""
    for seed, path in plan.baselines.items():
        merged = {}
        for r in plan.references:
            if r.seed == seed:
                task = r.tasks[0]
                merged[task] = read_results(r)[task]
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(merged, indent=2)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text)
