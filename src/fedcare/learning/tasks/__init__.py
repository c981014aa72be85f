"""Tasks: binary, multiclass, regression and survival, four instances of one protocol (base.Task).

A new task is one module with a class like these, registered with `register_task`: the round engine,
the transports and the summary need no change, and `--task NAME` (or `task: NAME`) chooses it. The
data layer learns from it which targets to encode (its `reads`).
"""

from __future__ import annotations

from fedcare.core.errors import ConfigError
from fedcare.data.dataset import DataShape
from fedcare.data.targets import register_task_targets
from fedcare.learning.tasks.base import Task
from fedcare.learning.tasks.binary import Binary
from fedcare.learning.tasks.multiclass import Multiclass
from fedcare.learning.tasks.regression import Regression
from fedcare.learning.tasks.survival import Survival

__all__ = ["Binary", "Multiclass", "Regression", "Survival", "Task", "make_task", "register_task", "task_type"]

_TASKS: dict[str, type] = {}


def register_task(task: type) -> type:
    """Make a task class available by its `name`; it is built with the data's class names
    (`task(classes=...)`). Usable as a class decorator."""
    register_task_targets(task.name, task.reads)  # type: ignore[attr-defined]
    _TASKS[task.name] = task  # type: ignore[attr-defined]
    return task


for _builtin in (Binary, Multiclass, Regression, Survival):
    register_task(_builtin)


def task_type(name: str) -> type:
    if name not in _TASKS:
        raise ConfigError(f"unknown task '{name}'; the tasks are: {', '.join(_TASKS)}")
    return _TASKS[name]


def make_task(shape: DataShape | str, classes: tuple[str, ...] = ()) -> Task:
    """The task a dataset's shape names (or a task by name, with its class names)."""
    if isinstance(shape, DataShape):
        shape, classes = shape.task, shape.classes
    return task_type(shape)(classes=tuple(classes))
