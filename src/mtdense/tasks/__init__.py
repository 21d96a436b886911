"""Tasks as first-class objects: ``semseg``, ``depth``, ``normals``, ``edge``, ``parts``, ``saliency``.

``TASKS`` maps a task name to its class, the one table of tasks: the engine builds every task with
``TASKS[name].from_config(cfg, meta)``, Δm and report tables take each task's ``primary_metric`` and
metric directions from it, and the complexity report its random targets. Adding a task is one file
with a :class:`Task` subclass and one entry here.
"""

from __future__ import annotations

from mtdense.tasks.base import Metric, Task
from mtdense.tasks.depth import DepthTask
from mtdense.tasks.edge import EdgeTask
from mtdense.tasks.normals import NormalsTask
from mtdense.tasks.parts import PartsTask
from mtdense.tasks.saliency import SaliencyTask
from mtdense.tasks.semseg import SemsegTask

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (SemsegTask, DepthTask, NormalsTask, EdgeTask, PartsTask, SaliencyTask)
}


def task_class(name: str) -> type[Task]:
    """``TASKS[name]``, or :class:`~mtdense.errors.ConfigError` listing the valid task names."""
    from mtdense.errors import ConfigError

    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}") from None


__all__ = [
    "TASKS",
    "DepthTask",
    "EdgeTask",
    "Metric",
    "NormalsTask",
    "PartsTask",
    "SaliencyTask",
    "SemsegTask",
    "Task",
    "task_class",
]
