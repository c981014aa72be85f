"""The constant predictor: what a model that ignores every input scores (the majority class, the
mean outcome, one risk for every patient). A trained model worse than it has learned nothing
useful, whatever its number looks like, so the summary compares the final model with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fedcare.learning.metrics import Metrics
from fedcare.learning.tasks import Task


def constant_output(task: Task, train: Sequence[Mapping[str, np.ndarray]]) -> torch.Tensor | None:
    """One row of raw model output that predicts, from every site's training targets, the pooled class
    shares (binary, multiclass), the pooled mean (regression) or one risk (survival); None for a task
    whose outputs this does not know (a registered one)."""
    if task.name == "survival":
        return torch.zeros(1, 1, dtype=torch.float64)
    if task.name not in ("regression", "binary", "multiclass"):
        return None  # segmentation, a registered task: no constant output known here
    values = np.concatenate([np.asarray(t["label"], np.float64) for t in train]) if train else np.zeros(0)
    if values.size == 0:
        return None
    if task.name == "regression":
        return torch.tensor([[values.mean()]], dtype=torch.float64)
    if task.name == "binary":
        p = float(np.clip(values.mean(), 1e-6, 1 - 1e-6))
        return torch.tensor([[np.log(p / (1 - p))]], dtype=torch.float64)
    if task.name == "multiclass":
        shares = np.bincount(values.astype(np.int64), minlength=task.num_outputs) / values.size
        return torch.tensor(np.log(np.clip(shares, 1e-6, None))[None, :], dtype=torch.float64)
    return None


def constant_metrics(task: Task, output: torch.Tensor, targets: Mapping[str, np.ndarray]) -> Metrics:
    """The task's metrics of that constant output on one split's targets."""
    rows = len(next(iter(targets.values())))
    return task.metrics(output.expand(rows, -1), targets)
