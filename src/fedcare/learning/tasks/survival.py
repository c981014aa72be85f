"""Survival: a Cox proportional-hazards risk score (one output), the negative partial log-likelihood
with Breslow ties as the loss; Harrell's C-index heads the metrics. The loss compares patients within
a batch, so it is not a mean over patients: record-level DP-SGD, which needs one, refuses it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from fedcare.learning import metrics as M
from fedcare.learning.intervals import survival_intervals
from fedcare.learning.tasks.cox import cox_loss


@dataclass(frozen=True)
class Survival:
    name: ClassVar[str] = "survival"
    targets: ClassVar[tuple[str, ...]] = ("time", "event")
    reads: ClassVar[str] = "survival"
    headline: ClassVar[str] = "c_index"
    higher_is_better: ClassVar[bool] = True
    per_example: ClassVar[bool] = False
    classes: tuple[str, ...] = ()

    @property
    def num_outputs(self) -> int:
        return 1

    def target_tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {name: torch.as_tensor(arrays[name], dtype=torch.float32) for name in self.targets}

    def loss(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """0 for a batch without an event."""
        return cox_loss(out.squeeze(-1), targets["time"], targets["event"])

    def metrics(self, out: torch.Tensor, targets: Mapping[str, np.ndarray]) -> M.Metrics:
        risk = out.squeeze(-1).double().numpy()
        return {**M.survival_metrics(targets["time"], targets["event"], risk),
                **survival_intervals(targets["time"], targets["event"], risk)}
