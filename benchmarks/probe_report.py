"""Tables and a figure of the gradient probe (``probe:``, :mod:`mtdense.engine.probe`) across a bench suite's runs.

Reads the ``results.json`` that ``mtdense bench`` wrote, opens every run's ``metrics.jsonl`` and collects the
probe's records (per-task gradient norms on the shared encoder, the balancer's weights, pairwise cosines) per
method and seed. ``--save FILE`` keeps exactly those curves in a JSON, and ``--curves FILE`` reads them back instead
of the run folders, so that the tables and the figure can be regenerated without the runs (the curves of the
``synthetic-demo`` suite are kept in ``docs/results/``).

Printed, per method (mean ± std over seeds of per-seed averages over the probed steps of the first and of the
second half of training):

* ``share of ‖g‖``: each task's ``‖g_t‖ / Σ_u ‖g_u‖``, how much of the summed gradient magnitude on the shared
  encoder each task contributes;
* ``‖g_t‖``: the weighted gradient norms themselves, and each task's balancer weight where it changes;
* ``cos``: the cosine of every pair of tasks' gradients (negative = conflicting).

Usage::

    python benchmarks/probe_report.py runs/bench/synthetic-demo/results.json \
        --save docs/results/synthetic-demo-probe.json --figure docs/figures/demo_probe.png
    python benchmarks/probe_report.py --curves docs/results/synthetic-demo-probe.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def collect(results: dict[str, Any]) -> dict[str, Any]:
    """``{"suite", "methods": {method: {"tasks", "seeds": {seed: {"steps": [...], key: [...]}}}}}`` of probe entries."""
    out: dict[str, Any] = {"suite": results.get("suite"), "command": results.get("command"), "methods": {}}
    for group in ("methods", "references"):
        for name, entry in results.get(group, {}).items():
            seeds: dict[str, Any] = {}
            for seed, run in entry["runs"].items():
                path = Path(run["dir"]) / "metrics.jsonl"
                if not path.is_file():
                    raise SystemExit(f"error: {path}: no metrics.jsonl (the run folder moved or was removed)")
                records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                probed = [r for r in records if r.get("split") == "train" and any(k.startswith("probe/") for k in r)]
                if not probed:
                    continue
                keys = sorted({k for r in probed for k in r if k.startswith("probe/") or k.startswith("loss/")})
                curve = {"steps": [r["step"] for r in probed]}
                curve.update({k: [r.get(k) for r in probed] for k in keys})
                seeds[seed] = curve
            if seeds:
                out["methods"][name] = {"kind": entry.get("kind"), "tasks": entry["tasks"], "seeds": seeds}
    return out


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f}"


def _halves(curve: dict[str, list], key: str) -> tuple[float | None, float | None]:
    vals = [v for v in curve.get(key, []) if v is not None]
    if not vals:
        return None, None
    half = max(len(vals) // 2, 1)
    first, second = vals[:half], vals[half:] or vals[:half]
    return statistics.fmean(first), statistics.fmean(second)


def _share(curve: dict[str, list], tasks: list[str], task: str) -> list[float]:
    norms = [curve.get(f"probe/grad/{t}") for t in tasks]
    shares = []
    for i in range(len(curve["steps"])):
        row = [n[i] for n in norms if n is not None and n[i] is not None]
        mine = curve.get(f"probe/grad/{task}")
        if mine is None or mine[i] is None or not row or sum(row) == 0:
            continue
        shares.append(mine[i] / sum(row))
    return shares


def table(curves: dict[str, Any]) -> str:
    lines = []
    for name, entry in curves["methods"].items():
        tasks = entry["tasks"]
        if len(tasks) < 2:
            continue
        seeds = entry["seeds"]
        lines.append(
            f"**{name}** (seeds {', '.join(sorted(seeds))}; early = first half of the probed steps, late = second half)"
        )
        lines.append("")
        lines.append("| task | share of Σ‖g‖ early | late | ‖g_t‖ early | late | weight early | late |")
        lines.append("|---|---|---|---|---|---|---|")
        for t in tasks:
            sh = [_halves({"steps": c["steps"], "s": _share(c, tasks, t)}, "s") for c in seeds.values()]
            g = [_halves(c, f"probe/grad/{t}") for c in seeds.values()]
            w = [_halves(c, f"probe/weight/{t}") for c in seeds.values()]
            cells = []
            for pairs in (sh, g, w):
                for i in (0, 1):
                    cells.append(_mean_std([p[i] for p in pairs if p[i] is not None]))
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("| pair | cos early | cos late |")
        lines.append("|---|---|---|")
        for i, a in enumerate(tasks):
            for b in tasks[i + 1 :]:
                c = [_halves(cv, f"probe/cos/{a}|{b}") for cv in seeds.values()]
                lines.append(
                    f"| {a}–{b} | {_mean_std([x[0] for x in c if x[0] is not None])} | "
                    f"{_mean_std([x[1] for x in c if x[1] is not None])} |"
                )
        lines.append("")
    return "\n".join(lines)


def figure(curves: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [(n, e) for n, e in curves["methods"].items() if len(e["tasks"]) > 1]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.0), sharey=True, squeeze=False)
    for ax, (name, entry) in zip(axes[0], methods, strict=True):
        for t in entry["tasks"]:
            series = [c for c in entry["seeds"].values() if f"probe/grad/{t}" in c]
            if not series:
                continue
            steps = series[0]["steps"]
            vals = [[s[f"probe/grad/{t}"][i] for s in series] for i in range(len(steps))]
            mean = [statistics.fmean(v) for v in vals]
            ax.plot(steps, mean, label=t)
        ax.set_title(f"{name} (mean over seeds)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("‖g_t‖, shared encoder")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="?", type=Path, help="results.json of `mtdense bench`")
    p.add_argument("--curves", type=Path, help="read the curves saved by --save instead of the run folders")
    p.add_argument("--save", type=Path, help="write the collected probe curves to this JSON")
    p.add_argument("--figure", type=Path, help="write the per-task gradient-norm curves to this image")
    args = p.parse_args(argv)
    if (args.results is None) == (args.curves is None):
        p.error("give exactly one of RESULTS and --curves")
    if args.curves is not None:
        curves = json.loads(args.curves.read_text())
    else:
        curves = collect(json.loads(args.results.read_text()))
    if not curves["methods"]:
        print("error: no run of this suite logged the probe (set probe.every)", file=sys.stderr)
        return 2
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(curves))
    if args.figure:
        figure(curves, args.figure)
    print(table(curves))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
