"""Multi-task performance Delta_m against single-task baselines.

MTI-Net, Eq. (2) (Vandenhende et al., ECCV 2020; DenseMTL uses the same):

    Delta_m = (1 / T) * sum_i (-1)^{l_i} (M_{m,i} - M_{b,i}) / M_{b,i},   in percent,

with ``l_i = 1`` when a lower value of task ``i``'s metric is better, and ``b`` the single-task baseline
with the same backbone. One metric per task: by default the task's ``primary_metric``, and the
direction of any metric from the task's ``metrics`` (both declared by the task classes of
:data:`mtdense.tasks.TASKS`, following MTI-Net's evaluation section: "odsF for edges, mIoU for semantic
segmentation [...], mean error for normals, rmse for depth").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

from mtdense.errors import MtdenseError

__all__ = ["multitask_delta", "partial_deltas"]


def multitask_delta(
    results: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    metrics: Mapping[str, str] | None = None,
    *,
    tasks: Sequence[str] | None = None,
) -> float:
    """Delta_m of ``results`` against the single-task ``baseline``, in percent (MTI-Net Eq. 2).

    Args:
        results: ``{task: {metric: value}}`` of the multi-task model; every task must be in ``TASKS``.
        baseline: the same for the single-task baselines.
        metrics: ``{task: metric}`` to use; default: every task of ``results`` with its ``primary_metric``.
        tasks: average over these tasks only (each with ``metrics[task]`` when given, else its
            ``primary_metric``): the *partial* deltas of DenseMTL (seed 004, Tables 1-2), e.g.
            ``Delta_SD(f_SDN)`` is ``tasks=["semseg", "depth"]`` on the S-D-N model's results.

    Raises:
        MtdenseError: a task or metric missing from either dict, a task not in ``TASKS`` or a metric that
            its task does not report, or a baseline value of 0.
    """
    from mtdense.tasks import TASKS  # tasks import the meters of this package

    if tasks is not None:
        chosen: dict[str, str | None] = {task: (metrics or {}).get(task) for task in tasks}
    else:
        chosen = dict(metrics) if metrics is not None else {task: None for task in results}
    if not chosen:
        raise MtdenseError("multitask_delta: no task to compare")
    total = 0.0
    for task, name in chosen.items():
        if task not in TASKS:
            raise MtdenseError(f"multitask_delta: unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
        metric = TASKS[task].primary_metric if name is None else TASKS[task].metric(name)
        for label, table in (("results", results), ("baseline", baseline)):
            if task not in table:
                raise MtdenseError(f"multitask_delta: task {task!r} missing from {label} (has {sorted(table)})")
            if metric.name not in table[task]:
                raise MtdenseError(
                    f"multitask_delta: metric {metric.name!r} of task {task!r} missing from {label} "
                    f"(has {sorted(table[task])})"
                )
        base = float(baseline[task][metric.name])
        if base == 0.0:
            raise MtdenseError(f"multitask_delta: baseline {task}/{metric.name} is 0; the relative change is undefined")
        sign = -1.0 if metric.lower_is_better else 1.0
        total += sign * (float(results[task][metric.name]) - base) / base
    return 100.0 * total / len(chosen)


ResultsLike = Mapping[str, Mapping[str, float]] | str | PathLike[str]


def _read_results(source: ResultsLike, label: str) -> Mapping[str, Mapping[str, float]]:
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MtdenseError(f"partial_deltas: {label} file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MtdenseError(f"partial_deltas: {label} {path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise MtdenseError(f"partial_deltas: {label} {path}: expected a JSON object {{task: {{metric: value}}}}")
    return data


def partial_deltas(
    results: ResultsLike,
    baseline: ResultsLike,
    task_sets: Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """Delta over each named subset of tasks, e.g. DenseMTL's (seed 004) Tables 1-2 columns.

    ``Delta_T(f) = 1/|T| sum_{i in T} (-1)^{g_i} (m_i - b_i) / b_i`` (Sec. 4.1.2) with ``m`` the results of
    model ``f`` and ``b`` the single-task ones; a subset ``T`` smaller than ``f``'s task set is a partial
    delta: on the S-D-N model, ``{"SD": ["semseg", "depth"], "SDN": ["semseg", "depth", "normals"]}``
    gives ``Delta_SD(f_SDN)`` and ``Delta_SDN(f_SDN)``; on the S-D-N-E model ``{"SDN": [...]}`` gives
    ``Delta_SDN(f_SDNE)``. Each task uses its ``primary_metric``.

    Args:
        results: the model's ``{task: {metric: value}}`` or the path of its results JSON (a run's
            ``results.json`` or ``mtdense eval``'s output; extra entries such as ``"multitask"`` are ignored).
        baseline: the single-task results, dict or JSON path.
        task_sets: ``{name: [task, ...]}``.

    Returns:
        ``{name: delta in percent}`` in ``task_sets`` order.

    Raises:
        MtdenseError: an unreadable file, or what :func:`multitask_delta` raises (naming the task).
    """
    res, base = _read_results(results, "results"), _read_results(baseline, "baseline")
    return {name: multitask_delta(res, base, tasks=list(tasks)) for name, tasks in task_sets.items()}
