"""Tasks: the loss and the metrics for a kind of data (binary, multiclass, regression, survival)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedcare.core.scoring import HEADLINE
from fedcare.learning import metrics as M
from fedcare.learning.survival import cox_loss


@dataclass(frozen=True)
class Task:
    kind: str  # "binary" | "multiclass" | "regression" | "survival"
    num_classes: int = 2

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.kind == "multiclass" else 1

    @property
    def headline(self) -> str:
        return HEADLINE[self.kind]

    def target_tensor(self, y: np.ndarray) -> torch.Tensor:
        """Targets as the loss wants them; survival: float32 (n, 2) = [time, event]."""
        if self.kind == "multiclass":
            return torch.as_tensor(y, dtype=torch.int64)
        return torch.as_tensor(y, dtype=torch.float32)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch: BCE with logits, cross-entropy, squared error, or the Cox loss.

        The Cox loss compares patients within the batch and is 0 for a batch without an event.
        """
        if self.kind == "binary":
            return F.binary_cross_entropy_with_logits(out.squeeze(-1), y)
        if self.kind == "multiclass":
            return F.cross_entropy(out, y)
        if self.kind == "survival":
            return cox_loss(out.squeeze(-1), y[:, 0], y[:, 1])
        return F.mse_loss(out.squeeze(-1), y)

    def metrics(self, out: torch.Tensor, y: np.ndarray) -> M.Metrics:
        """Metrics from raw model outputs on a whole split."""
        if self.kind == "binary":
            return M.binary_metrics(y, torch.sigmoid(out.squeeze(-1)).double().numpy())
        if self.kind == "multiclass":
            return M.multiclass_metrics(y, torch.softmax(out.double(), dim=-1).numpy())
        if self.kind == "survival":
            return M.survival_metrics(y, out.squeeze(-1).double().numpy())
        return M.regression_metrics(y, out.squeeze(-1).double().numpy())
