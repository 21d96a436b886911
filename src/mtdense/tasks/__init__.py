"""Tasks as first-class objects: ``semseg``, ``depth``, ``normals``, ``edge``.

``TASKS`` maps a task name to its class; :func:`build_task` builds one with a helpful error for an
unknown name.
"""

from __future__ import annotations

from typing import Any

from mtdense.errors import ConfigError
from mtdense.tasks.base import Task
from mtdense.tasks.depth import DepthTask
from mtdense.tasks.edge import EdgeTask
from mtdense.tasks.normals import NormalsTask
from mtdense.tasks.semseg import SemsegTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (SemsegTask, DepthTask, NormalsTask, EdgeTask)}


def build_task(name: str, **kwargs: Any) -> Task:
    """Build the task ``name`` (one of ``TASKS``) with its keyword arguments."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)


__all__ = ["TASKS", "Task", "SemsegTask", "DepthTask", "NormalsTask", "EdgeTask", "build_task"]
