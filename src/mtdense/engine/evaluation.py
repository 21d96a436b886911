"""``mtdense eval``: evaluate a run directory or checkpoint on a split and write its results JSON; Δm.

Where the results go. A run never overwrites an earlier run, and an evaluation is no exception: the
training's own ``RUN/results.json`` is left alone, and ``mtdense eval RUN --split S`` writes
``RUN/eval/S.json``, or ``S_2.json``, ``S_3.json``, ... when that exists (for a checkpoint outside a
run directory, ``<stem>_eval_S.json`` beside it, numbered the same way). ``--out FILE`` writes FILE,
creating its folder; an existing FILE or a folder of that name is refused.

Which data. The evaluation reads what the training evaluated on: a run whose config has ``data.val_data``
(a model trained on a source domain, scored on a target domain: DenseMTL's Table 6) is evaluated on that
dataset and root (:func:`mtdense.engine.setup.eval_config`), every other run on ``data.dataset``;
``--data-root`` replaces the folder of whichever is read.

Which BatchNorm statistics. By default those stored with the weights (for a run trained with
``eval.precise_bn``, the ones its last evaluation re-estimated). ``precise_bn=N`` (``--precise-bn N``)
re-estimates them first over the run's first N training batches, exactly as the trainer's ``eval.precise_bn: N``
does (:mod:`mtdense.engine.precise_bn`; same batches, same forward), so a run trained without it is scored as if it
had been, without retraining (precise BN does not change the training). The checkpoint is not modified.

Δm (MTI-Net Eq. 2, :func:`mtdense.metrics.multitask_delta`) is attached by :func:`attach_delta` against
a single-task results JSON ``{task: {metric: value}}``; the baseline must hold every task of the model
(Δm over fewer tasks than the model has would be a different number under the same name).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from mtdense.errors import ConfigError, DataError, MtdenseError


def load_baseline(path: str | Path, tasks: list[str] | tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Read a single-task baseline JSON and check it has an entry for every task in ``tasks``.

    Raises :class:`ConfigError` naming the file for a missing file, invalid JSON, a value that is not a
    ``{task: {metric: number}}`` mapping, or a task of ``tasks`` that the baseline lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"eval.baseline: single-task results file not found: {path}")
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"eval.baseline {path}: not valid JSON ({e})") from None
    if not isinstance(baseline, dict) or not all(isinstance(v, dict) for v in baseline.values()):
        raise ConfigError(
            f"eval.baseline {path}: expected a JSON object {{task: {{metric: value}}}}, got {json.dumps(baseline)[:80]}"
        )
    missing = [t for t in tasks if t not in baseline]
    if missing:
        raise ConfigError(
            f"eval.baseline {path}: no single-task result for task(s) {', '.join(missing)} of the model "
            f"(it has {', '.join(sorted(baseline)) or 'none'}); Δm needs a baseline for every task"
        )
    return baseline


def attach_delta(results: dict[str, dict[str, float]], baseline_path: str | Path) -> dict[str, Any]:
    """Add ``{"multitask": {"delta_m": Δm}}`` (MTI-Net Eq. 2) against a single-task results JSON.

    Every task of ``results`` must be in the baseline (:func:`load_baseline`); errors name the file.
    """
    from mtdense.metrics import multitask_delta

    tasks = [t for t in results if t != "multitask"]
    baseline = load_baseline(baseline_path, tasks)
    try:
        delta = multitask_delta({t: results[t] for t in tasks}, {t: baseline[t] for t in tasks})
    except MtdenseError as e:
        raise ConfigError(f"eval.baseline {baseline_path}: {e}") from None
    return {**results, "multitask": {"delta_m": float(delta) if math.isfinite(delta) else delta}}


def _numbered(path: Path) -> Path:
    """``path``, or ``<stem>_2<suffix>``, ``_3``, ... : the first that does not exist."""
    candidate, k = path, 2
    while candidate.exists():
        candidate, k = path.with_name(f"{path.stem}_{k}{path.suffix}"), k + 1
    return candidate


def results_path(run: str | Path, source: Path, split: str, out: str | Path | None) -> Path:
    """Where ``mtdense eval`` writes (module docstring); never an existing file."""
    if out is not None:
        path = Path(out)
        if path.is_dir():
            raise DataError(f"--out {path}: is a folder; expected the path of a new .json file")
        if path.exists():
            raise DataError(f"--out {path}: exists; an evaluation never overwrites a file (choose another --out)")
        for parent in path.parents:
            if parent.exists() and not parent.is_dir():
                raise DataError(f"--out {path}: {parent} is a file, not a folder")
        return path
    if Path(run).is_dir():
        folder = Path(run) / "eval"
    elif source.parent.name == "checkpoints":  # RUN/checkpoints/x.pt → RUN/eval/
        folder = source.parent.parent / "eval"
    else:  # a loose checkpoint or exported file: next to it
        return _numbered(source.with_name(f"{source.stem}_eval_{split}.json"))
    return _numbered(folder / f"{split}.json")


def evaluate_run(
    run: str | Path,
    *,
    split: str = "val",
    baseline: str | Path | None = None,
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    device: str | torch.device | None = None,
    precise_bn: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """Evaluate ``run`` on ``split`` on ``device`` (default: CUDA when available); returns the results and
    the JSON file written (module docstring). Bad paths and baselines fail before the evaluation runs.

    The data are those the trainer evaluated on: the run's ``data.val_data`` when it has one (a source-only or
    UDA run is scored on its target domain; its classes must be the training set's, as the trainer checks),
    else ``data.dataset``; ``data_root`` replaces that dataset's folder."""
    from mtdense.engine import data as D
    from mtdense.engine.evaluator import evaluate
    from mtdense.engine.inference import load_run, pick_device
    from mtdense.engine.setup import check_label_space, eval_config

    if precise_bn is not None and precise_bn < 1:
        raise ConfigError(f"--precise-bn: expected a number of batches >= 1, got {precise_bn}")
    dev = pick_device(device)
    loaded = load_run(run, device=dev)
    train_cfg = loaded.cfg.model_copy(deep=True)  # the training data, before data_root changes the evaluated one
    cfg = eval_config(loaded.cfg)  # data.val_data (a target domain) when the run has one, as the trainer
    path = results_path(run, loaded.source, split, out)
    baseline = baseline or cfg.eval.baseline
    if baseline:
        load_baseline(baseline, list(cfg.data.tasks))
    if data_root is not None:
        cfg.data.root = str(data_root)
    cfg.data.cache = False
    root = D.prepare_dataset_root(cfg, progress=True, split_sizes=data_root is None)
    base = D.build_base_dataset(cfg, split, root=root)
    if cfg is not loaded.cfg and loaded.meta.get("num_classes") is not None:
        check_label_space(loaded.meta, D.dataset_meta(base), what=f"data.val_data ({cfg.data.root})")
    dataset = D.Augmented(base, D.build_eval_transform(cfg), seed=cfg.seed)
    if precise_bn:
        _re_estimate_bn(loaded.model, train_cfg, precise_bn, device=dev)
    tasks = {t: loaded.tasks[t] for t in cfg.data.tasks}
    results: dict[str, Any] = evaluate(
        loaded.model,
        D.make_eval_loader(cfg, dataset),
        tasks,
        device=dev,
        bf16=cfg.train.bf16,
        progress=True,
    )
    if baseline:
        results = attach_delta(results, baseline)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    return results, path


def _re_estimate_bn(model: torch.nn.Module, cfg: Any, num_batches: int, *, device: torch.device) -> None:
    """The trainer's ``eval.precise_bn: num_batches`` on a loaded run (its training split, augmentation, order)."""
    from mtdense.engine import data as D
    from mtdense.engine.precise_bn import re_estimate_for_run

    cfg.data.cache = False
    cfg.eval.precise_bn = num_batches
    root = D.prepare_dataset_root(cfg, progress=True)
    base = D.build_base_dataset(cfg, cfg.data.train_split, root=root, mix=True)
    re_estimate_for_run(model, cfg, D.Augmented(base, D.build_train_transform(cfg), seed=cfg.seed), device=device)
