"""Which training protocol ranks the methods of a suite: Δm and its seed-to-seed spread over training (issue 11 item 2).

Each *arm* is one ``mtdense bench`` run of a suite under one protocol (image size, data size, schedule), trained
with ``train.eval_every`` > 0 so that every run's ``metrics.jsonl`` holds validation results along training. For
every arm, method, evaluated step and seed, Δm (MTI-Net eq. 2, :func:`mtdense.metrics.multitask_delta`) is
computed against the single-task references of the same seed *at the same step*; then, per step, its mean and
standard deviation over seeds (n − 1), the ranking of the methods by mean Δm, and Kendall's τ between that ranking
and the one at the arm's last step. Δm against the seed-averaged references (one single-task number per task, as a
paper reports it) is given beside it: it removes the references' own seed noise from the spread.

A learning curve of one long run is not a run of the shorter schedule (the poly learning-rate decay has not
reached zero at an intermediate step); the arms with the short schedule itself are the check of that.

Printed (and, with ``--markdown FILE``, written): a summary table (one row per arm: steps, images, size, the
number of methods with a std of Δm below 1 point, the largest and the mean std at the last step, τ of the half-way
ranking with the final one, the step from which the ranking is the final one, the final ranking, the CPU minutes of
the arm), per arm the methods each method beats in every seed, and one table per arm (Δm mean ± std per method at
every evaluated step). ``--save FILE`` keeps the per-step primary metrics of every run in a JSON, and
``--curves FILE`` reads them back instead of the run folders (the study's curves are kept in ``docs/results/``),
so the tables and the figure can be regenerated without the runs; ``--curves`` together with new arms adds them
to the saved ones, so a study whose arms were run on different days (run folders do not outlive a machine) is
reported and saved as one.

Usage::

    python benchmarks/protocol_study.py "72x96, 1200 steps=runs/bench/2a-study-72x96-1200/results.json" \
        --save docs/results/protocol-study.json --figure docs/figures/protocol_study.png
    python benchmarks/protocol_study.py --curves docs/results/protocol-study.json
    python benchmarks/protocol_study.py --curves docs/results/protocol-study.json \
        "48x64, 700 steps=runs/bench/2a-study-48x64-700/results.json" --save docs/results/protocol-study.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml


def _primary(task: str) -> str:
    from mtdense.tasks import TASKS

    return TASKS[task].primary_metric.name


def collect(label: str, results_json: Path, *, evaluation: str | None = None) -> dict[str, Any]:
    """One arm: ``{"label", "command", "config", "rows": {name: {"kind", "tasks", "seeds": {seed: {step: {task:
    value}}}}}}`` with the primary metric of every task each run evaluated, at every validation step; with
    ``evaluation``, only the final weights' results in ``RUN/eval/<evaluation>.json`` (what ``mtdense eval RUN
    --data-root OTHER --out RUN/eval/<evaluation>.json`` wrote: the same runs scored on another validation set)."""
    from mtdense.engine.bench.aggregate import read_run_curves

    results = json.loads(results_json.read_text())
    arm: dict[str, Any] = {"label": label, "command": results.get("command"), "rows": {}}
    for group in ("references", "methods"):
        for name, entry in results.get(group, {}).items():
            seeds: dict[str, Any] = {}
            for seed, run in entry["runs"].items():
                path = Path(run["dir"]) / "metrics.jsonl"
                if not path.is_file():
                    raise SystemExit(f"error: {path}: no metrics.jsonl (the run folder moved or was removed)")
                curve: dict[str, dict[str, float]] = {}
                if evaluation:
                    res = json.loads((Path(run["dir"]) / "eval" / f"{evaluation}.json").read_text())
                    step = yaml.safe_load((Path(run["dir"]) / "config.yaml").read_text())["train"]["max_steps"]
                    seeds[seed] = {str(step): {t: res[t][_primary(t)] for t in entry["tasks"]}}
                    continue
                for step, res in read_run_curves(Path(run["dir"]))["val"]:
                    curve[str(step)] = {t: res[t][_primary(t)] for t in entry["tasks"] if t in res}
                seeds[seed] = curve
            arm["rows"][name] = {
                "kind": entry.get("kind"),
                "tasks": entry["tasks"],
                "seeds": seeds,
                "train_step_s": (entry.get("train_step_s") or {}).get("mean"),
            }
        if group == "references":
            from mtdense.engine.bench.aggregate import input_size

            config = yaml.safe_load((Path(next(iter(entry["runs"].values()))["dir"]) / "config.yaml").read_text())
            arm["config"] = {
                "size": list(input_size(config) or (0, 0)),
                "train_images": (config["data"].get("synth") or {}).get("train"),
                "max_steps": config["train"]["max_steps"],
                "batch_size": config["train"]["batch_size"],
            }
    return arm


def _kendall(a: list[str], b: list[str]) -> float:
    """Kendall's τ between two orderings of the same items."""
    pos_a, pos_b = {x: i for i, x in enumerate(a)}, {x: i for i, x in enumerate(b)}
    pairs = list(itertools.combinations(a, 2))
    if not pairs:
        return 1.0
    agree = sum(1 if (pos_a[x] - pos_a[y]) * (pos_b[x] - pos_b[y]) > 0 else -1 for x, y in pairs)
    return agree / len(pairs)


def _stats(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def analyse(arm: dict[str, Any]) -> dict[str, Any]:
    """Per method and evaluated step: Δm per seed (same-seed references) and against the seed-mean references."""
    from mtdense.metrics import multitask_delta

    refs = {r["tasks"][0]: r for r in arm["rows"].values() if r["kind"] == "reference"}
    methods = {n: r for n, r in arm["rows"].items() if r["kind"] != "reference"}
    seeds = sorted({s for r in arm["rows"].values() for s in r["seeds"]}, key=int)
    steps = sorted(
        set.intersection(*(set(c) for r in arm["rows"].values() for c in r["seeds"].values())),
        key=int,
    )
    out: dict[str, Any] = {"steps": [int(s) for s in steps], "seeds": [int(s) for s in seeds], "methods": {}}
    for name, row in methods.items():
        per_step = []
        for step in steps:
            per_seed, pooled = [], []
            mean_ref = {t: {_primary(t): statistics.fmean(refs[t]["seeds"][s][step][t] for s in seeds)} for t in refs}
            for s in seeds:
                res = {t: {_primary(t): row["seeds"][s][step][t]} for t in row["tasks"]}
                base = {t: {_primary(t): refs[t]["seeds"][s][step][t]} for t in row["tasks"]}
                per_seed.append(multitask_delta(res, base))
                pooled.append(multitask_delta(res, {t: mean_ref[t] for t in row["tasks"]}))
            per_step.append({"per_seed": per_seed, "stat": _stats(per_seed), "pooled": _stats(pooled)})
        out["methods"][name] = per_step
    order_at = [sorted(methods, key=lambda n, i=i: -out["methods"][n][i]["stat"][0]) for i in range(len(steps))]
    out["ranking"] = order_at
    out["tau_to_final"] = [_kendall(o, order_at[-1]) for o in order_at]
    stable = len(steps) - 1  # the first evaluated step from which the ranking is the final one at every evaluation
    while stable > 0 and order_at[stable - 1] == order_at[-1]:
        stable -= 1
    out["ranking_final_from"] = int(steps[stable])
    cost = 0.0
    for row in arm["rows"].values():
        if row.get("train_step_s"):
            cost += row["train_step_s"] * arm["config"]["max_steps"] * len(row["seeds"]) / 60
    out["cpu_minutes"] = cost
    return out


def beaten_in_every_seed(an: dict[str, Any]) -> dict[str, list[str]]:
    """At the last evaluated step: for each method (best mean Δm first), the methods whose Δm it exceeds in every
    seed. Adjacent means within the seeds' spread may swap with another draw of seeds; a pair ordered the same way in
    every seed is what the seeds resolve."""
    last = {n: v[-1]["per_seed"] for n, v in an["methods"].items()}
    order = an["ranking"][-1]
    return {
        a: [b for b in order if b != a and all(x > y for x, y in zip(last[a], last[b], strict=True))] for a in order
    }


def _fmt(stat: tuple[float, float | None]) -> str:
    m, s = stat
    return f"{m:+.2f}" + (f" ± {s:.2f}" if s is not None else "")


def report(arms: list[dict[str, Any]]) -> str:
    lines = [
        "| protocol | size | train images | steps | seeds | rows with std Δm < 1 | max std Δm (same-seed refs) | "
        "mean std Δm | max std Δm (seed-mean refs) | τ(half, final) | ranking final from step | "
        "ranking at the last step (best first) | CPU min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    analyses = [analyse(a) for a in arms]
    for arm, an in zip(arms, analyses, strict=True):
        last = {n: v[-1] for n, v in an["methods"].items()}
        stds = [v["stat"][1] for v in last.values() if v["stat"][1] is not None]
        pooled = [v["pooled"][1] for v in last.values() if v["pooled"][1] is not None]
        half = min(range(len(an["steps"])), key=lambda i: abs(an["steps"][i] - an["steps"][-1] / 2))
        c = arm["config"]
        lines.append(
            f"| {arm['label']} | {c['size'][0]}×{c['size'][1]} | {c['train_images']} | {an['steps'][-1]} | "
            f"{len(an['seeds'])} | {sum(v < 1.0 for v in stds)}/{len(stds)} | {max(stds):.2f} | "
            f"{statistics.fmean(stds):.2f} | {max(pooled):.2f} | {an['tau_to_final'][half]:+.2f} "
            f"(step {an['steps'][half]}) | {an['ranking_final_from']} | {' > '.join(an['ranking'][-1])} | "
            f"{an['cpu_minutes']:.0f} |"
        )
    for arm, an in zip(arms, analyses, strict=True):
        names = list(an["methods"])
        if len(an["seeds"]) > 1:
            lines += [
                "",
                f"**{arm['label']}**: at the last step, each method (best mean Δm first) and the ones it beats "
                "in every seed (same-seed references): an order the seeds agree on, unlike adjacent means.",
                "",
            ]
            lines += [
                f"- {n} ({an['methods'][n][-1]['stat'][0]:+.2f}): " + (", ".join(b) if b else "–")
                for n, b in beaten_in_every_seed(an).items()
            ]
        lines += [
            "",
            f"**{arm['label']}**: Δm % (mean ± std over seeds {an['seeds']}, same-seed references) at each "
            "evaluated step, and Kendall's τ of that step's ranking with the last step's.",
            "",
            "| step | " + " | ".join(names) + " | τ to final |",
            "|---:|" + "---:|" * (len(names) + 1),
        ]
        for i, step in enumerate(an["steps"]):
            cells = [_fmt(an["methods"][n][i]["stat"]) for n in names]
            lines.append(f"| {step} | " + " | ".join(cells) + f" | {an['tau_to_final'][i]:+.2f} |")
    return "\n".join(lines)


def figure(arms: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(5 * len(arms), 4), layout="constrained")
    axes = fig.subplots(1, len(arms), squeeze=False, sharey=True)
    analyses = [analyse(arm) for arm in arms]
    names = list(dict.fromkeys(n for an in analyses for n in an["methods"]))  # one colour per method in every panel
    palette = matplotlib.colormaps["tab20"].colors  # more rows than the default cycle's 10 colours
    colour = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    for ax, arm, an in zip(axes[0], arms, analyses, strict=True):
        for name, per_step in an["methods"].items():
            mean = [v["stat"][0] for v in per_step]
            std = [v["stat"][1] or 0.0 for v in per_step]
            ax.errorbar(
                an["steps"], mean, yerr=std, label=name, capsize=2, marker="o", ms=3, color=colour[name]
            )
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(arm["label"], fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("Δm % (mean ± std over seeds)")
    handles = [Line2D([], [], color=colour[n], marker="o", ms=3) for n in names]  # every arm's methods, not the last's
    fig.legend(handles, names, loc="outside right upper", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "arms",
        nargs="*",
        metavar="LABEL=RESULTS_JSON[#EVALUATION]",
        help="one bench results.json per protocol; #EVALUATION: its runs' RUN/eval/EVALUATION.json instead",
    )
    p.add_argument(
        "--curves",
        type=Path,
        action="append",
        default=[],
        help="read arms from a JSON written by --save (repeatable; with LABEL=RESULTS_JSON arms: all, these first)",
    )
    p.add_argument("--save", type=Path, help="keep the arms' per-step metrics in this JSON")
    p.add_argument("--figure", type=Path, help="Δm over training, one panel per arm")
    p.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = p.parse_args(argv)
    if not args.arms and not args.curves:
        p.error("give LABEL=RESULTS_JSON arms, --curves FILE, or both")
    arms = []
    for curves in args.curves:
        if not curves.is_file():
            p.error(f"--curves {curves}: no such file")
        arms.extend(json.loads(curves.read_text())["arms"])
    for item in args.arms:
        label, sep, spec = item.rpartition("=")
        if not sep or not label:
            p.error(f"expected LABEL=RESULTS_JSON[#EVALUATION], got {item!r}")
        path, _, evaluation = spec.partition("#")
        arms.append(collect(label, Path(path), evaluation=evaluation or None))
    labels = [arm["label"] for arm in arms]
    if len(set(labels)) != len(labels):
        p.error(f"two arms share a label: {sorted({x for x in labels if labels.count(x) > 1})}")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "arms": arms}, indent=1))
    text = report(arms)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.figure:
        figure(arms, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
