"""``mtdense demo``: the two-command quick start's main job.

Renders the embedded synthetic benchmark (if not on disk), trains one single-task network per main
task and the multi-task model of the packaged config ``demo`` the same way (same backbone, steps, recipe),
evaluates them, and writes ``OUT/results.json`` (the multi-task model's ``{task: {metric: value}}``
plus ``multitask.delta_m`` against the single-task models, MTI-Net eq. 2), ``OUT/results.md`` (a
table of every model) and ``OUT/predictions.png`` (a figure of predictions on validation images).
Finished sub-runs (a folder with ``results.json``) are reused, so an interrupted demo resumes cheaply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mtdense.config.derive import single_task_config
from mtdense.config.load import apply_overrides, config_to_dict, read_yaml, resolve_config, validate_config
from mtdense.engine.report import format_results, markdown_table

DEFAULT_CONFIG = "demo"
"""The packaged config ``mtdense/configs/demo.yaml`` (found by name, so the demo runs from any folder)."""


def _train(raw: dict[str, Any], out: Path, *, source: str) -> dict[str, Any]:
    from mtdense.engine.trainer import Trainer

    if (out / "results.json").is_file():
        print(f"reusing finished run {out}")
        return json.loads((out / "results.json").read_text())
    if out.exists():
        import shutil

        shutil.rmtree(out)  # an unfinished demo sub-run (the demo owns these folders)
    cfg = validate_config(raw, source=source)
    print(f"training {cfg.model.name} on {', '.join(cfg.data.tasks)} → {out}")
    result = Trainer(cfg, out).train()
    return result.results or {}


def run_demo(
    *, config: str | Path | None = None, out: str | Path = "runs/demo", overrides: list[str] | None = None
) -> dict:
    path = resolve_config(config or DEFAULT_CONFIG)
    raw = apply_overrides(read_yaml(path), overrides or [])
    cfg = validate_config(raw, source=str(path))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    stl: dict[str, Any] = {}
    rows: dict[str, Any] = {}
    for task in cfg.data.tasks:
        stl_raw = config_to_dict(single_task_config(cfg, task, source=str(path)))
        res = _train(stl_raw, out / f"stl_{task}", source=f"{path} (single-task {task})")
        stl[task] = res[task]
        rows[f"stl ({task})"] = {task: res[task]}
    (out / "stl_results.json").write_text(json.dumps(stl, indent=2))

    mt_raw = apply_overrides(raw, [f"eval.baseline={out / 'stl_results.json'}"])
    mt = _train(mt_raw, out / cfg.model.name, source=str(path))
    rows[cfg.model.name] = mt
    (out / "results.json").write_text(json.dumps(mt, indent=2))

    from mtdense.tasks import TASKS

    columns = [(t, TASKS[t].primary_metric.name) for t in cfg.data.tasks]
    table = markdown_table(rows, columns)
    (out / "results.md").write_text(table + "\n")
    figure = save_prediction_figure(out / cfg.model.name, out / "predictions.png")
    print(format_results(mt, title=f"{cfg.model.name} on the synthetic benchmark (val)"))
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
