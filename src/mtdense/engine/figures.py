"""Figures a person reads: rows of samples, a titled column per task (ground truth and/or prediction).

Used by ``mtdense predict`` (``<stem>_all.png``: image, then the prediction of each task) and by
``mtdense demo`` (``predictions.png``: image, then ground truth and prediction of each task). Each
column has a title; semantic segmentation gets a legend of the classes that appear in the figure
(palette colour and class name from the dataset meta); depth is drawn on one colour scale in metres
shared by every depth panel of the figure — ground truth and prediction alike, so their colours can be
compared — with a colour bar. The scale's top is the 99th percentile of the valid depths shown, so a
few far pixels do not wash out the rest; invalid depth (0) is black.

Panels come from each task's ``visualize``; what a task adds around its panels (legend, colour bar)
is looked up by task class in :data:`DECORATIONS`, so a new task needs no change here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from mtdense.tasks import DepthTask, SemsegTask, Task
from mtdense.tasks.base import as_numpy, single_channel

PANEL_INCHES = 2.2
"""Width of one panel; the figure is ``columns × PANEL_INCHES`` wide."""
DPI = 150
LEGEND_MAX_CLASSES = 40


@dataclass
class FigureRow:
    """One sample: ``image`` uint8 ``(H, W, 3)``; per task a target and/or a post-processed prediction ``(C, H, W)``."""

    image: np.ndarray
    preds: Mapping[str, Tensor | np.ndarray]
    targets: Mapping[str, Tensor | np.ndarray] = field(default_factory=dict)


@dataclass
class _Column:
    task: str
    kind: str  # "ground truth" or "prediction"
    axes: list[Any] = field(default_factory=list)


def _depth_decoration(task: DepthTask, maps: list[np.ndarray]) -> tuple[Task, Callable]:
    """One scale for every depth panel (99th percentile of the valid metres shown) and a colour bar."""
    values = np.concatenate([single_channel(m).ravel() for m in maps]) if maps else np.zeros(0, np.float32)
    valid = values[np.isfinite(values) & (values > 0)]
    top = float(np.percentile(valid, 99)) if valid.size else 1.0
    shared = copy.copy(task)
    shared.vis_max_depth = max(top, 1e-3)

    def annotate(fig: Any, axes: list[Any]) -> None:
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        mappable = ScalarMappable(norm=Normalize(0.0, shared.vis_max_depth), cmap=colormaps["turbo"])
        bar = fig.colorbar(mappable, ax=axes, orientation="horizontal", fraction=0.04, pad=0.02, aspect=30)
        bar.set_label("depth (m); black = invalid")

    return shared, annotate


def _semseg_decoration(task: SemsegTask, maps: list[np.ndarray]) -> tuple[Task, Callable]:
    """A legend of the classes present in the figure's label maps (targets and argmax of predictions)."""
    present: set[int] = set()
    for m in maps:
        a = as_numpy(m)
        labels = a.argmax(0) if a.ndim == 3 else a.astype(np.int64)
        present |= {int(v) for v in np.unique(labels) if 0 <= v < task.num_classes}
    classes = sorted(present)[:LEGEND_MAX_CLASSES]

    def annotate(fig: Any, axes: list[Any]) -> None:
        from matplotlib.patches import Patch

        handles = [
            Patch(facecolor=task.palette[k] / 255.0, edgecolor="0.3", label=task.class_names[k]) for k in classes
        ]
        if handles:
            fig.legend(
                handles=handles,
                loc="outside lower center",
                ncols=min(len(handles), 6),
                fontsize="small",
                title="semseg classes (black = ignore)",
                title_fontsize="small",
                frameon=False,
            )

    return task, annotate


DECORATIONS: dict[type[Task], Callable[[Any, list[np.ndarray]], tuple[Task, Callable]]] = {
    DepthTask: _depth_decoration,
    SemsegTask: _semseg_decoration,
}
"""Task class → ``(task, maps) -> (task to draw with, annotate(fig, axes))``; other tasks draw as they are."""


def draw_prediction_figure(
    rows: Sequence[FigureRow], tasks: Mapping[str, Task], path: str | Path, *, title: str | None = None
) -> Path:
    """Write :func:`prediction_figure` of ``rows`` to ``path`` (PNG) and return the path."""
    path = Path(path)
    prediction_figure(rows, tasks, title=title).savefig(path)
    return path


def prediction_figure(rows: Sequence[FigureRow], tasks: Mapping[str, Task], *, title: str | None = None) -> Any:
    """A matplotlib ``Figure`` (no pyplot state) of ``rows``.

    Columns: ``image``, then for each task in ``tasks`` its ground truth (when any row has a target for
    it) and its prediction, each titled. Semseg adds a class legend, depth a colour bar in metres on a
    scale shared by all its panels (module docstring).
    """
    from matplotlib.figure import Figure

    columns: list[_Column] = []
    draw_with: dict[str, Task] = {}
    annotations: dict[str, Callable] = {}
    for name, task in tasks.items():
        has_gt = any(name in r.targets for r in rows)
        columns += [_Column(name, "ground truth")] if has_gt else []
        columns.append(_Column(name, "prediction"))
        maps = [r.targets[name] for r in rows if name in r.targets] + [r.preds[name] for r in rows]
        decorate = DECORATIONS.get(type(task))
        draw_with[name], annotations[name] = decorate(task, maps) if decorate else (task, None)

    h, w = rows[0].image.shape[:2]
    ncols = 1 + len(columns)
    fig = Figure(figsize=(ncols * PANEL_INCHES, len(rows) * PANEL_INCHES * h / w + 1.4), dpi=DPI, layout="constrained")
    grid = fig.subplots(len(rows), ncols, squeeze=False)
    for i, row in enumerate(rows):
        grid[i][0].imshow(row.image)
        for j, col in enumerate(columns, start=1):
            source = row.targets if col.kind == "ground truth" else row.preds
            ax = grid[i][j]
            if col.task in source:
                ax.imshow(draw_with[col.task].visualize(source[col.task]), interpolation="nearest")
            col.axes.append(ax)
    for j, label in enumerate(["image"] + [f"{c.task}\n{c.kind}" for c in columns]):
        grid[0][j].set_title(label, fontsize="medium")
    for ax in grid.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for name, annotate in annotations.items():
        if annotate is not None:
            annotate(fig, [ax for c in columns if c.task == name for ax in c.axes])
    if title:
        fig.suptitle(title)
    return fig
