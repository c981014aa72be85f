"""Multiclass classification: one logit per class, cross-entropy; accuracy heads the metrics."""

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
class Multiclass:
    name: ClassVar[str] = "multiclass"
    targets: ClassVar[tuple[str, ...]] = ("label",)
    reads: ClassVar[str] = "classes"
    headline: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    per_example: ClassVar[bool] = True
    classes: tuple[str, ...] = ()

    @property
    def num_outputs(self) -> int:
        return max(2, len(self.classes))

    def target_tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {"label": torch.as_tensor(arrays["label"], dtype=torch.int64)}

    def loss(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(out, targets["label"])

    def patient_losses(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(out, targets["label"], reduction="none")

    def metrics(self, out: torch.Tensor, targets: Mapping[str, np.ndarray]) -> M.Metrics:
        y, proba = targets["label"], torch.softmax(out.double(), dim=-1).numpy()
        return {**M.multiclass_metrics(y, proba), **classification_intervals(y, proba.argmax(axis=1) == y, None)}
