"""``mtdense bench SUITE``: train and evaluate a suite of methods over seeds, and report mean ± std.

A suite (:mod:`.suite`, one YAML file; the packaged ones live in ``mtdense/suites/``) lists methods,
optionally task sets, the single-task references of the Δm baseline (MTI-Net Eq. 2) and default seeds.
``run_bench`` trains the references first (every method's Δm needs them), writes each seed's baseline
JSON, then trains the methods with ``eval.baseline`` pointing at it; finished runs whose resolved config
equals the one asked for are reused and unfinished ones resumed (:mod:`.runner`). It writes:

* ``OUT/results.json``: the command that reproduces it, the suite, seeds, command-line overrides and, per
  reference and method, every seed's results and run folder, ``mean``/``std`` of every metric, Δm (mean,
  std, per seed), parameters, GFLOPs and train-step time (:mod:`.aggregate`);
* ``OUT/results.md``: the markdown table (:mod:`.report`);
* ``OUT/figures/delta_m_vs_gflops.png``, ``per_task.png``, ``learning_curves.png`` (:mod:`.figures`).

One module per job: :mod:`.suite` (format, loading), :mod:`.plan` (runs and their configs),
:mod:`.runner` (reuse/resume/train, parallel jobs), :mod:`.aggregate`, :mod:`.report`, :mod:`.figures`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mtdense.config.schema import DomainData
from mtdense.engine.bench.aggregate import aggregate, write_baselines
from mtdense.engine.bench.figures import delta_vs_gflops, learning_curves, per_task_bars
from mtdense.engine.bench.plan import plan_suite
from mtdense.engine.bench.report import markdown_table
from mtdense.engine.bench.runner import run_all
from mtdense.engine.bench.suite import load_suite, packaged_suite_names

__all__ = ["load_suite", "packaged_suite_names", "plan_suite", "prepare_data", "run_bench"]


def _domains(section: Any) -> Iterator[DomainData]:
    """Every :class:`~mtdense.config.schema.DomainData` in a validated config section, at any depth
    (``data.val_data``, ``uda.target``, ...): the other datasets a run opens besides ``data``."""
    if isinstance(section, DomainData):
        yield section
    if isinstance(section, BaseModel):
        for name in type(section).model_fields:
            yield from _domains(getattr(section, name))
    elif isinstance(section, (list, tuple)):
        for item in section:
            yield from _domains(item)


def prepare_data(configs: list[dict[str, Any]]) -> None:
    """Render every synthetic dataset the runs need once, here, before parallel runs could race on it: each
    run's ``data`` and every other domain it opens (its evaluation domain ``data.val_data``, a UDA target)."""
    from mtdense.config.load import validate_config
    from mtdense.engine.data import prepare_dataset_root
    from mtdense.engine.setup import domain_config

    seen: set[str] = set()
    for raw in configs:
        cfg = validate_config(raw)
        for one in [cfg, *(domain_config(cfg, d) for d in _domains(cfg))]:
            if one.data.root not in seen:
                seen.add(one.data.root)
                prepare_dataset_root(one, progress=False)


def run_bench(
    suite: str | Path,
    *,
    out: str | Path | None = None,
    seeds: list[int] | None = None,
    jobs: int = 1,
    overrides: list[str] | None = None,
    methods: list[str] | None = None,
    task_sets: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``suite`` (a packaged name or a YAML file) into ``out`` (default ``runs/bench/<suite>``) and
    return the content of ``OUT/results.json``. ``methods`` restricts the suite to those methods and
    ``task_sets`` to those task sets (the single-task references of every task a planned method trains run).
    Config errors are raised before anything trains."""
    spec, path = load_suite(suite)
    out = Path(out) if out is not None else Path("runs") / "bench" / path.stem
    plan = plan_suite(
        spec, path, out=out, seeds=seeds, overrides=overrides, jobs=jobs, only_methods=methods, only_task_sets=task_sets
    )
    out.mkdir(parents=True, exist_ok=True)
    prepare_data([r.config for r in (*plan.references, *plan.methods)])

    actions = run_all(plan.references, jobs=jobs, logs=out / "logs")
    write_baselines(plan)
    actions |= run_all(plan.methods, jobs=jobs, logs=out / "logs")

    summary = aggregate(plan)
    results = {
        "command": shlex.join(
            ["mtdense", "bench", str(suite), "--seeds", *map(str, plan.seeds), "--jobs", str(jobs), "--out", str(out)]
            + (["--methods", *methods] if methods is not None else [])
            + (["--task-sets", *task_sets] if task_sets is not None else [])
            + list(overrides or [])
        ),
        "suite": path.stem,
        "suite_file": str(path),
        "description": spec.description,
        "seeds": plan.seeds,
        "overrides": [*spec.overrides, *(overrides or [])],
        "jobs": jobs,
        "actions": actions,
        **summary,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    title = f"suite {path.stem}, seeds {', '.join(map(str, plan.seeds))}"
    table = markdown_table(summary)
    (out / "results.md").write_text(f"# {title}\n\n{spec.description}\n\n{table}\n")
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    delta_vs_gflops(summary, figures / "delta_m_vs_gflops.png", title=title)
    per_task_bars(summary, figures / "per_task.png", title=title)
    learning_curves(plan, figures / "learning_curves.png", title=title)
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {figures}/")
    return results
