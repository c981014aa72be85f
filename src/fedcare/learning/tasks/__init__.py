"""Tasks: binary, multiclass, regression, survival and segmentation, instances of one protocol (base.Task).

A new task is one module with a class like these, registered with `register_task`: the round engine,
the transports and the summary need no change, and `task: NAME` chooses it. The data layer learns
from it which targets to encode (its `reads`). For `fedcare` commands and site agents, a package
declares its tasks as entry points in the group `fedcare.tasks` (`poisson = my_package:Poisson`):
installed code, trusted like fedcare itself; the coordinator sends a task's name, never its code.
"""

from __future__ import annotations

import importlib.metadata

from fedcare.core.errors import ConfigError
from fedcare.data.dataset import DataShape
from fedcare.data.targets import register_task_targets
from fedcare.learning.tasks.base import Task
from fedcare.learning.tasks.binary import Binary
from fedcare.learning.tasks.multiclass import Multiclass
from fedcare.learning.tasks.regression import Regression
from fedcare.learning.tasks.segmentation import Segmentation
from fedcare.learning.tasks.survival import Survival

__all__ = ["Binary", "Multiclass", "Regression", "Segmentation", "Survival", "Task", "load_plugins", "make_task", "register_task",
           "task_type"]

ENTRY_POINTS = "fedcare.tasks"
_TASKS: dict[str, type] = {}
_plugins_loaded = False


def register_task(task: type) -> type:
    """Make a task class available by its `name`; it is built with the data's class names
    (`task(classes=...)`). Usable as a class decorator."""
    register_task_targets(task.name, task.reads)  # type: ignore[attr-defined]
    _TASKS[task.name] = task  # type: ignore[attr-defined]
    return task


for _builtin in (Binary, Multiclass, Regression, Survival, Segmentation):
    register_task(_builtin)


def load_plugins() -> None:
    """Register the tasks installed packages declare under the `fedcare.tasks` entry points (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        if entry.name in _TASKS:
            continue
        task = entry.load()
        if getattr(task, "name", None) != entry.name:
            raise ConfigError(f"entry point '{entry.name}' ({entry.value}) is a task named "
                              f"'{getattr(task, 'name', None)}'; the two names must agree")
        register_task(task)


def task_type(name: str) -> type:
    if name not in _TASKS:
        load_plugins()
    if name not in _TASKS:
        raise ConfigError(f"unknown task '{name}'; the tasks are: {', '.join(_TASKS)}")
    return _TASKS[name]


def make_task(shape: DataShape | str, classes: tuple[str, ...] = ()) -> Task:
    """The task a dataset's shape names (or a task by name, with its class names)."""
    if isinstance(shape, DataShape):
        shape, classes = shape.task, shape.classes
    return task_type(shape)(classes=tuple(classes))
