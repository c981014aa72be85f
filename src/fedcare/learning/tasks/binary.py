"""Binary classification: one logit, binary cross-entropy; accuracy heads the metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from fedcare.learning import metrics as M
from fedcare.learning.intervals import classification_intervals


@dataclass(frozen=True)
class Binary:
    name: ClassVar[str] = "binary"
    targets: ClassVar[tuple[str, ...]] = ("label",)
    reads: ClassVar[str] = "classes"
    headline: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    per_example: ClassVar[bool] = True
    classes: tuple[str, ...] = ()
    threshold: float = 0.5  # where sensitivity and specificity call a patient positive (--threshold)

    @property
    def num_outputs(self) -> int:
        return 1

    def target_tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {"label": torch.as_tensor(arrays["label"], dtype=torch.float32)}

    def loss(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out.squeeze(-1), targets["label"])

    def patient_losses(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out.squeeze(-1), targets["label"], reduction="none")

    def metrics(self, out: torch.Tensor, targets: Mapping[str, np.ndarray]) -> M.Metrics:
        y, p = targets["label"], torch.sigmoid(out.squeeze(-1)).double().numpy()
        return {**M.binary_metrics(y, p, self.threshold), **classification_intervals(y, (p >= 0.5) == (y == 1), p)}
