"""`--metric`: a task with another of its metrics at its head. The headline picks the best round,
stops early and names the worst site, so it must be a metric the task reports and its direction
must be right; anything else is refused in one line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fedcare.core.config.evaluation import EvaluationSettings
from fedcare.core.errors import ConfigError
from fedcare.learning.metrics import LOWER_IS_BETTER, TASK_METRICS
from fedcare.learning.tasks import Task


@dataclass(frozen=True)
class Headlined:
    """The task, with `headline` and `higher_is_better` of the chosen metric; everything else is the
    task's own (delegation, so any task, a plugin's too, can be headlined)."""

    task: Task
    headline: str
    higher_is_better: bool

    def __getattr__(self, name: str) -> Any:
        if name == "task":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.task, name)


def choose_metric(task: Task, settings: EvaluationSettings) -> Task:
    """The task the run evaluates with: its threshold and headline as the evaluation section says."""
    if settings.threshold != 0.5:
        if not (dataclasses.is_dataclass(task) and hasattr(task, "threshold")):
            raise ConfigError(f"threshold sets where sensitivity and specificity call a patient positive: a binary "
                              f"task's setting, and this run's task is {task.name}")
        task = dataclasses.replace(task, threshold=settings.threshold)
    metric = settings.metric
    if metric is None or metric == task.headline:
        return task
    return Headlined(task, metric, metric_direction(task, metric))


def metric_direction(task: Task, metric: str, what: str = "metric") -> bool:
    """Whether `metric`, one the task reports, is better higher; anything else is refused in one line
    (`what` names the setting that asked for it)."""
    allowed = TASK_METRICS.get(task.name, (task.headline,))
    if metric not in allowed:
        raise ConfigError(f"{what} '{metric}' does not fit the {task.name} task; choose one of {', '.join(allowed)}")
    return metric not in LOWER_IS_BETTER
