"""``mtdense demo``: the two-command quick start's main job.

Renders the embedded synthetic benchmark (if not on disk), trains one single-task network per main
task and the multi-task model of the packaged config ``demo`` the same way (same backbone, steps, recipe),
evaluates them, and writes ``OUT/results.json`` (the multi-task model's ``{task: {metric: value}}``
plus ``multitask.delta_m`` against the single-task models, MTI-Net eq. 2), ``OUT/results.md`` (a
table of every model) and ``OUT/predictions.png`` (a figure of predictions on validation images).

The demo is seed 0 of the ``mtinet`` row of the ``synthetic-demo`` suite (``mtdense bench synthetic-demo``, three
seeds), trained the same way: with ``jobs`` > 1 (default 2) the runs go to that many parallel processes of one
intra-op thread each (``train.threads=1``), the multi-task run first and the single-task runs beside it, as
``mtdense bench --jobs 2`` runs them, so that it gives the suite's numbers bit for bit (two single-threaded
processes keep both cores busy; whether that is faster than one run after the other with 2 threads has not been
measured in one run, see README). Δm is computed once every run has finished. Sub-runs are reused when finished with
the same config and resumed when interrupted (:func:`mtdense.engine.bench.runner.decide`), so an interrupted demo
continues cheaply; their logs are in ``OUT/logs/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdense.config.derive import single_task_config
from mtdense.config.load import apply_overrides, config_to_dict, read_yaml, resolve_config, validate_config
from mtdense.engine.report import format_results, markdown_table

if TYPE_CHECKING:
    from mtdense.engine.bench.plan import RunSpec

DEFAULT_CONFIG = "demo"
"""The packaged config ``mtdense/configs/demo.yaml`` (found by name, so the demo runs from any folder)."""


def plan_demo(
    *,
    config: str | Path | None = None,
    out: str | Path = "runs/demo",
    overrides: list[str] | None = None,
    jobs: int = 2,
) -> tuple[RunSpec, dict[str, RunSpec]]:
    """``(multi-task run, {task: single-task run})`` of the demo as :class:`~mtdense.engine.bench.plan.RunSpec`,
    their configs resolved: ``config`` with ``overrides`` (and ``train.threads=1`` when ``jobs`` > 1), and the
    single-task networks derived from it by :func:`mtdense.config.derive.single_task_config`."""
    from mtdense.engine.bench.plan import RunSpec
    from mtdense.errors import ConfigError

    if jobs < 1:
        raise ConfigError(f"--jobs: expected at least 1, got {jobs}")
    path = resolve_config(config or DEFAULT_CONFIG)
    threads = ["train.threads=1"] if jobs > 1 else []
    raw = apply_overrides(read_yaml(path), [*(overrides or []), *threads])
    cfg = validate_config(raw, source=str(path))
    out = Path(out)
    mt_run = RunSpec(cfg.model.name, "method", cfg.seed, config_to_dict(cfg), out / cfg.model.name, str(path))
    stl_runs = {
        task: RunSpec(
            f"stl_{task}",
            "reference",
            cfg.seed,
            config_to_dict(single_task_config(cfg, task, source=str(path))),
            out / f"stl_{task}",
            f"{path} (single-task {task})",
        )
        for task in cfg.data.tasks
    }
    return mt_run, stl_runs


def run_demo(
    *,
    config: str | Path | None = None,
    out: str | Path = "runs/demo",
    overrides: list[str] | None = None,
    jobs: int = 2,
) -> dict:
    from mtdense.engine.bench import prepare_data
    from mtdense.engine.bench.runner import run_all
    from mtdense.engine.evaluation import attach_delta

    mt_run, stl_runs = plan_demo(config=config, out=out, overrides=overrides, jobs=jobs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [mt_run, *stl_runs.values()]  # the longest first: the single-task runs fill the other process(es)
    prepare_data([r.config for r in runs])
    print(f"training {', '.join(r.name for r in runs)} in {jobs} process(es) → {out} (logs in {out / 'logs'})")
    run_all(runs, jobs=jobs, logs=out / "logs")

    stl = {task: json.loads((r.out / "results.json").read_text())[task] for task, r in stl_runs.items()}
    (out / "stl_results.json").write_text(json.dumps(stl, indent=2))
    mt = attach_delta(json.loads((mt_run.out / "results.json").read_text()), out / "stl_results.json")
    (out / "results.json").write_text(json.dumps(mt, indent=2))

    from mtdense.tasks import TASKS

    tasks, name = list(stl_runs), mt_run.name
    rows: dict[str, Any] = {f"stl ({task})": {task: stl[task]} for task in tasks}
    rows[name] = mt
    columns = [(t, TASKS[t].primary_metric.name) for t in tasks]
    table = markdown_table(rows, columns)
    (out / "results.md").write_text(table + "\n")
    figure = save_prediction_figure(mt_run.out, out / "predictions.png")
    print(format_results(mt, title=f"{name} on the synthetic benchmark (val)"))
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {figure}")
    return mt


def save_prediction_figure(run_dir: Path, path: Path, *, n: int = 3) -> Path:
    """Rows of validation samples: image, then ground truth and prediction of each main task, with column
    titles, a semseg class legend and a depth colour bar in metres (:mod:`mtdense.engine.figures`)."""
    import torch

    from mtdense.engine import data as D
    from mtdense.engine.figures import FigureRow, draw_prediction_figure
    from mtdense.engine.inference import load_run
    from mtdense.models import upsample_to

    run = load_run(run_dir)
    cfg = run.cfg
    root = D.prepare_dataset_root(cfg, progress=False)
    cfg.data.cache = False
    val = D.Augmented(
        D.build_base_dataset(cfg, cfg.data.val_split, root=root), D.build_eval_transform(cfg), seed=cfg.seed
    )
    rows = []
    for i in range(min(n, len(val))):
        sample = val[i]
        with torch.no_grad():
            outputs = run.model(sample["image"][None])
        image = (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        targets = {name: sample[run.tasks[name].target_key] for name in cfg.data.tasks}
        size = image.shape[:2]
        preds = {n: run.tasks[n].postprocess(upsample_to(outputs[n].float(), size))[0] for n in cfg.data.tasks}
        rows.append(FigureRow(image, preds, targets))
    tasks = {name: run.tasks[name] for name in cfg.data.tasks}
    return draw_prediction_figure(rows, tasks, path, title=f"{cfg.model.name}: validation samples")
