"""Which targets each task reads, as the data layer encodes them.

The data layer knows four kinds of target: a label read as `classes` (binary, multiclass) or as
`numbers` (regression), `survival` (time and event), and `mask` (a segmentation mask file per
image, fedcare.data.masks). A task registered in the learning layer
(fedcare.learning.tasks.register_task) tells this table which kind it reads, so `--task NAME` can
name it and its labels are checked and encoded by the rules of that kind.
"""

from __future__ import annotations

from typing import Literal

from fedcare.core.errors import ConfigError

Reads = Literal["classes", "numbers", "survival", "mask"]
BUILTIN: dict[str, Reads] = {"binary": "classes", "multiclass": "classes", "regression": "numbers",
                             "survival": "survival", "segmentation": "mask"}
_READS: dict[str, Reads] = dict(BUILTIN)


def register_task_targets(task: str, reads: Reads) -> None:
    """Let `--task TASK` choose a task that reads a label (as classes or numbers) or a survival target."""
    if reads not in ("classes", "numbers", "survival", "mask"):
        raise ConfigError(f"task '{task}' must read classes, numbers, survival or mask targets, not {reads!r}")
    if task in BUILTIN and BUILTIN[task] != reads:
        raise ConfigError(f"task '{task}' is built in and reads {BUILTIN[task]}")
    _READS[task] = reads


def check_task(task: str | None) -> None:
    if task is not None and task not in _READS:
        raise ConfigError(f"unknown task '{task}': use binary, multiclass, regression, survival or segmentation"
                          + (f" (or a registered one: {', '.join(t for t in _READS if t not in BUILTIN)})"
                             if len(_READS) > len(BUILTIN) else ""))


def reads(task: str | None) -> Reads | None:
    """What a task reads; None when the task is left to be inferred from the label."""
    check_task(task)
    return None if task is None else _READS[task]


def label_rules(task: str | None) -> str | None:
    """The built-in label task whose rules check and encode this task's label: a registered task
    reading classes follows multiclass, one reading numbers follows regression."""
    kind = reads(task)
    if task is None or task in BUILTIN:
        return task
    return {"classes": "multiclass", "numbers": "regression", "survival": "survival", "mask": "segmentation"}[kind]
