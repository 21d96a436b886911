"""Multi-task performance Delta_m and the direction (lower / higher is better) of every metric.

MTI-Net, Eq. (2) (Vandenhende et al., ECCV 2020; DenseMTL uses the same):

    Delta_m = (1 / T) * sum_i (-1)^{l_i} (M_{m,i} - M_{b,i}) / M_{b,i},   in percent,

with ``l_i = 1`` when a lower value of task ``i``'s metric is better, and ``b`` the single-task baseline
with the same backbone. One metric per task; the defaults follow MTI-Net's evaluation section
("odsF for edges, mIoU for semantic segmentation, saliency and human parts, mean error for normals,
rmse for depth"). Saliency: MTI-Net's Delta_m uses its mIoU; when a result has no ``mIoU`` but has
``maxF`` (the ATRC / InvPT convention), ``maxF`` is used -- for both model and baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mtdense.errors import MtdenseError

__all__ = ["DELTA_METRICS", "LOWER_IS_BETTER", "lower_is_better", "multitask_delta"]

#: Direction of every metric the meters report: True = an error (lower is better).
LOWER_IS_BETTER: Mapping[str, bool] = MappingProxyType(
    {
        # errors: depth (rmse, rmse_log, rel, sq_rel, log10), normals (mean, median, rmse)
        "rmse": True,
        "rmse_log": True,
        "rel": True,
        "sq_rel": True,
        "log10": True,
        "mean": True,
        "median": True,
        # scores
        "mIoU": False,
        "mAcc": False,
        "pixAcc": False,
        "d1": False,
        "d2": False,
        "d3": False,
        "a11": False,
        "a22": False,
        "a30": False,
        "odsF": False,
        "oisF": False,
        "ap": False,
        "maxF": False,
    }
)

#: Default metric(s) per task for Delta_m, in order of preference (first one present is used).
DELTA_METRICS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "semseg": ("mIoU",),
        "depth": ("rmse",),
        "normals": ("mean",),
        "edge": ("odsF",),
        "parts": ("mIoU",),
        "saliency": ("mIoU", "maxF"),
    }
)


def lower_is_better(metric_name: str) -> bool:
    """True when a lower value of ``metric_name`` is better (an error), False for scores."""
    try:
        return LOWER_IS_BETTER[metric_name]
    except KeyError:
        raise MtdenseError(
            f"unknown metric {metric_name!r}: its direction is not known; "
            f"known metrics: {sorted(LOWER_IS_BETTER)}"
        ) from None


def multitask_delta(
    results: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    metrics: Mapping[str, str] | None = None,
) -> float:
    """Delta_m of ``results`` against the single-task ``baseline``, in percent (MTI-Net Eq. 2).

    Args:
        results: ``{task: {metric: value}}`` of the multi-task model.
        baseline: the same for the single-task baselines.
        metrics: ``{task: metric}`` to use; default: every task of ``results`` with :data:`DELTA_METRICS`.

    Raises:
        MtdenseError: a task or metric missing from either dict, an unknown task or metric direction,
            or a baseline value of 0.
    """
    if metrics is None:
        chosen = {}
        for task in results:
            if task not in DELTA_METRICS:
                raise MtdenseError(
                    f"multitask_delta: no default metric for task {task!r} (known: {sorted(DELTA_METRICS)}); "
                    "pass metrics={task: metric_name}"
                )
            options = DELTA_METRICS[task]
            chosen[task] = next(
                (m for m in options if m in results[task] and m in baseline.get(task, {})), options[0]
            )
    else:
        chosen = dict(metrics)
    if not chosen:
        raise MtdenseError("multitask_delta: no task to compare")
    total = 0.0
    for task, metric in chosen.items():
        for name, table in (("results", results), ("baseline", baseline)):
            if task not in table:
                raise MtdenseError(
                    f"multitask_delta: task {task!r} missing from {name} (has {sorted(table)})"
                )
            if metric not in table[task]:
                raise MtdenseError(
                    f"multitask_delta: metric {metric!r} of task {task!r} missing from {name} "
                    f"(has {sorted(table[task])})"
                )
        base = float(baseline[task][metric])
        if base == 0.0:
            raise MtdenseError(
                f"multitask_delta: baseline {task}/{metric} is 0; the relative change is undefined"
            )
        sign = -1.0 if lower_is_better(metric) else 1.0
        total += sign * (float(results[task][metric]) - base) / base
    return 100.0 * total / len(chosen)
