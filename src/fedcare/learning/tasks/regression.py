"""Regression: one output, squared error; RMSE (lower is better) heads the metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from fedcare.learning import metrics as M


@dataclass(frozen=True)
class Regression:
    name: ClassVar[str] = "regression"
    targets: ClassVar[tuple[str, ...]] = ("label",)
    reads: ClassVar[str] = "numbers"
    headline: ClassVar[str] = "rmse"
    higher_is_better: ClassVar[bool] = False
    per_example: ClassVar[bool] = True
    classes: tuple[str, ...] = ()

    @property
    def num_outputs(self) -> int:
        return 1

    def target_tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {"label": torch.as_tensor(arrays["label"], dtype=torch.float32)}

    def loss(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(out.squeeze(-1), targets["label"])

    def patient_losses(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(out.squeeze(-1), targets["label"], reduction="none")

    def metrics(self, out: torch.Tensor, targets: Mapping[str, np.ndarray]) -> M.Metrics:
        return M.regression_metrics(targets["label"], out.squeeze(-1).double().numpy())
