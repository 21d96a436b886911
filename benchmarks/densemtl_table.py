"""DenseMTL (Lopes et al., WACV 2023) Table 1's form from a ``mtdense bench`` results file.

Reads the ``results.json`` of a run of the ``synthetic-xtam`` suite (or any suite whose methods are expanded over
task sets named ``sd``, ``sdn``, ``sdne``) and prints, per task set, each method's main metrics and the partial
multi-task deltas of Sec. 4.1.2 computed per seed against that seed's single-task references with
:func:`mtdense.metrics.partial_deltas` (Δ_SD on every set, Δ_SDN on S-D-N and S-D-N-E), as mean ± sample std over
the seeds, then each method's paired difference from ``mtl`` of the same task set (same seed). Nothing is
retrained: the table is regenerated from the JSON alone.

For a suite without task sets (``synthetic-uda``: Table 6's rows) every method is one group, paired with ``--base``.

Usage::

    python benchmarks/densemtl_table.py docs/results/synthetic-xtam.json
    python benchmarks/densemtl_table.py docs/results/synthetic-uda.json --base source
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from mtdense.metrics import partial_deltas
from mtdense.tasks import TASKS

SUBSETS = {
    "SD": ["semseg", "depth"],
    "SDN": ["semseg", "depth", "normals"],
    "SDNE": ["semseg", "depth", "normals", "edge"],
}
SETS = {"sd": ["SD"], "sdn": ["SD", "SDN"], "sdne": ["SD", "SDN", "SDNE"]}


def _fmt(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _signed(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{mean:+.{digits}f}{spread}"


def _group(
    lines: list[str], label: str, rows: dict, subsets: list[str], base: str | None, baseline: dict, seeds: list[str]
) -> None:
    """Append the table of one group of rows (one task set) and its paired differences from ``base``."""
    tasks = SUBSETS[subsets[-1]]
    primary = {t: TASKS[t].primary_metric for t in tasks}
    metric = {t: primary[t].name for t in tasks}
    head = [f"{t} {metric[t]} {'↓' if primary[t].lower_is_better else '↑'}" for t in tasks]
    lines += [f"**{label}**", "", "| model | " + " | ".join(head + [f"Δ_{n} %" for n in subsets]) + " |"]
    lines.append("|---" * (1 + len(head) + len(subsets)) + "|")
    for t in tasks:  # the single-task references
        cells = ["–"] * len(tasks)
        cells[tasks.index(t)] = _fmt([baseline[s][t][metric[t]] for s in seeds], 3 if t == "depth" else 2)
        lines.append(f"| stl_{t} | " + " | ".join(cells + ["–"] * len(subsets)) + " |")
    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    for name, m in rows.items():
        runs = {s: m["runs"][s]["results"] for s in seeds if s in m["runs"]}
        per_seed[name] = {s: partial_deltas(r, baseline[s], {n: SUBSETS[n] for n in subsets}) for s, r in runs.items()}
        cells = [_fmt([runs[s][t][metric[t]] for s in runs], 3 if t == "depth" else 2) for t in tasks]
        cells += [_signed([per_seed[name][s][n] for s in runs], 1) for n in subsets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if base in rows:
        lines += ["", f"Paired differences from `{base}` (same seed):", ""]
        lines.append(
            "| model | " + " | ".join([f"{t} {metric[t]}" for t in tasks] + [f"Δ_{n} (points)" for n in subsets]) + " |"
        )
        lines.append("|---" * (1 + len(tasks) + len(subsets)) + "|")
        for name, m in rows.items():
            if name == base:
                continue
            common = [s for s in seeds if s in m["runs"] and s in rows[base]["runs"]]
            cells = [
                _signed(
                    [
                        m["runs"][s]["results"][t][metric[t]] - rows[base]["runs"][s]["results"][t][metric[t]]
                        for s in common
                    ],
                    3 if t == "depth" else 2,
                )
                for t in tasks
            ]
            cells += [_signed([per_seed[name][s][n] - per_seed[base][s][n] for s in common], 1) for n in subsets]
            lines.append(f"| {name} − {base} | " + " | ".join(cells) + " |")
    lines.append("")


def tables(results: dict, *, base: str | None = None) -> str:
    """Markdown tables of a bench ``results.json``: one per task set (methods named ``<method>_<set>``, paired with
    ``mtl_<set>``), or, for a suite without task sets, one of every method paired with ``base``."""
    refs = results["references"]
    seeds = [str(s) for s in results["seeds"]]
    baseline = {
        s: {r["tasks"][0]: r["runs"][s]["results"][r["tasks"][0]] for r in refs.values() if s in r["runs"]}
        for s in seeds
    }
    lines = [f"Seeds {', '.join(seeds)}; mean ± sample std over seeds. Source: `{results['command']}`.", ""]
    grouped = False
    for tset, subsets in SETS.items():
        rows = {name: m for name, m in results["methods"].items() if name.endswith(f"_{tset}")}
        if rows:
            grouped = True
            _group(lines, tset.upper(), rows, subsets, base or f"mtl_{tset}", baseline, seeds)
    if not grouped:
        rows = results["methods"]
        tasks = next(iter(rows.values()))["tasks"]
        key = next(k for k, v in SUBSETS.items() if v == tasks)
        _group(lines, key, rows, SETS[key.lower()], base, baseline, seeds)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="results.json of a mtdense bench run")
    p.add_argument("--base", help="the row paired differences are taken from (default: mtl_<task set>)")
    args = p.parse_args(argv)
    print(tables(json.loads(args.results.read_text()), base=args.base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
