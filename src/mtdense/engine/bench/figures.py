"""Figures of a suite: Δm vs GFLOPs, per-task bars, learning curves (matplotlib, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtdense.engine.bench.aggregate import read_curves
from mtdense.engine.bench.plan import Plan
from mtdense.engine.bench.report import columns_of


def _std(stat: dict[str, Any] | None) -> float:
    return float(stat["std"]) if stat and stat.get("std") is not None else 0.0


def delta_vs_gflops(summary: dict[str, Any], path: Path, *, title: str) -> Path:
    """One point per method at (GFLOPs, mean Δm), vertical error bar ± std of Δm over seeds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for name, row in summary["methods"].items():
        if row.get("gflops") is None:
            continue
        d = row["delta_m"]
        ax.errorbar(row["gflops"], d["mean"], yerr=_std(d), fmt="o", capsize=4, label=name)
        ax.annotate(name, (row["gflops"], d["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("GFLOPs per image (1 multiply-add = 2 FLOPs)")
    ax.set_ylabel("Δm vs single-task (%)  ↑")
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    return path


def per_task_bars(summary: dict[str, Any], path: Path, *, title: str) -> Path:
    """One panel per task: its primary metric for each model that has the task (bars: mean, ± std)."""
    from matplotlib.figure import Figure

    columns = columns_of(summary)
    rows = {**summary["references"], **summary["methods"]}
    fig = Figure(figsize=(max(4.0, 0.5 * len(rows) + 2) * len(columns), 4.2), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, (task, metric) in zip(axes, columns, strict=True):
        names = [n for n, r in rows.items() if task in r["metrics"]]
        stats = [rows[n]["metrics"][task][metric] for n in names]
        x = np.arange(len(names))
        colors = ["0.6" if rows[n]["kind"] == "reference" else "C0" for n in names]
        ax.bar(x, [s["mean"] for s in stats], yerr=[_std(s) for s in stats], color=colors, capsize=3)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{task} {metric}")
    fig.suptitle(f"{title} (grey: single-task reference)")
    fig.savefig(path, dpi=120)
    return path


def learning_curves(plan: Plan, path: Path, *, title: str) -> Path:
    """Top: training loss vs step, one line per run (a colour per model). Below, when the runs were
    evaluated during training (``train.eval_every``): each task's primary metric vs step."""
    from matplotlib.figure import Figure

    from mtdense.tasks import TASKS

    runs = [*plan.references, *plan.methods]
    names = list(dict.fromkeys(r.name for r in runs))
    color = {n: f"C{i % 10}" for i, n in enumerate(names)}
    curves = [(r, read_curves(r)) for r in runs]
    tasks = list(dict.fromkeys(t for r in runs for t in r.tasks))
    with_val = [t for t in tasks if any(len([v for v in c["val"] if t in v[1]]) > 1 for _, c in curves)]
    fig = Figure(figsize=(6.4 * max(1, len(with_val)), 4.0 * (1 + bool(with_val))), layout="constrained")
    grid = fig.subplots(1 + bool(with_val), max(1, len(with_val)), squeeze=False)
    ax = grid[0][0]
    for run, c in curves:
        if c["train"]:
            steps, loss = zip(*c["train"], strict=True)
            label = run.name if run.seed == plan.seeds[0] else None
            ax.plot(steps, loss, color=color[run.name], lw=1, alpha=0.8, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (weighted sum)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    for j in range(1, len(grid[0])):
        grid[0][j].axis("off")
    for ax, task in zip(grid[1] if with_val else [], with_val, strict=False):
        metric = TASKS[task].primary_metric.name
        for run, c in curves:
            pts = [(s, v[task][metric]) for s, v in c["val"] if task in v]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=color[run.name], marker=".", lw=1)
        ax.set_xlabel("step")
        ax.set_title(f"val {task} {metric}")
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return path
