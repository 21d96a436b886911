"""``mtdense eval``: evaluate a run directory or checkpoint on a split and write its results JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mtdense.engine import data as D
from mtdense.engine.evaluator import evaluate
from mtdense.engine.inference import load_run
from mtdense.engine.trainer import attach_delta


def evaluate_run(
    run: str | Path,
    *,
    split: str = "val",
    baseline: str | Path | None = None,
    data_root: str | Path | None = None,
    out: str | Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """Evaluate ``run`` on ``split``; returns the results and the JSON file written.

    The file is ``RUN/results.json`` for the val split and ``RUN/results_<split>.json`` otherwise;
    for a checkpoint outside a run directory, ``<stem>_results.json`` beside it; or ``out``.
    """
    loaded = load_run(run)
    cfg = loaded.cfg
    if data_root is not None:
        cfg.data.root = str(data_root)
    cfg.data.cache = False
    root = D.prepare_dataset_root(cfg, progress=True)
    dataset = D.Augmented(
        D.build_base_dataset(cfg, split, root=root), D.build_eval_transform(cfg), seed=cfg.seed
    )
    tasks = {t: loaded.tasks[t] for t in cfg.data.tasks}
    results: dict[str, Any] = evaluate(
        loaded.model,
        D.make_eval_loader(cfg, dataset),
        tasks,
        device=torch.device("cpu"),
        bf16=cfg.train.bf16,
        progress=True,
    )
    baseline = baseline or cfg.eval.baseline
    if baseline:
        results = attach_delta(results, baseline)
    name = "results.json" if split == "val" else f"results_{split}.json"
    if out:
        path = Path(out)
    elif Path(run).is_dir():
        path = Path(run) / name
    elif loaded.source.parent.name == "checkpoints":  # RUN/checkpoints/x.pt → RUN/results.json
        path = loaded.source.parent.parent / name
    else:  # a loose checkpoint or exported file: next to it
        path = loaded.source.with_name(f"{loaded.source.stem}_{name}")
    path.write_text(json.dumps(results, indent=2))
    return results, path
