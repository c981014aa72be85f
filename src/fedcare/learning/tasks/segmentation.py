"""Segmentation: a class per voxel (binary or multi-class masks). The loss is MONAI's Dice loss plus
cross-entropy (DiceCELoss: Dice alone trains slowly from a random start); the metrics are Dice and
IoU per foreground class, pooled over the split's voxels, and their means over the foreground
classes; `dice` heads them. The loss is a mean over images, so it is per patient."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from fedcare.core.errors import ConfigError
from fedcare.learning import metrics as M


@dataclass(frozen=True)
class Segmentation:
    name: ClassVar[str] = "segmentation"
    targets: ClassVar[tuple[str, ...]] = ("mask",)
    reads: ClassVar[str] = "mask"
    headline: ClassVar[str] = "dice"
    higher_is_better: ClassVar[bool] = True
    per_example: ClassVar[bool] = True
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if 0 < len(self.classes) < 2:
            raise ConfigError("segmentation needs masks with a foreground: every mask of every site is background")

    @property
    def num_outputs(self) -> int:
        return max(2, len(self.classes))

    def target_tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {"mask": torch.as_tensor(np.asarray(arrays["mask"]), dtype=torch.int64)}

    def loss(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        from monai.losses import DiceCELoss

        return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(out, targets["mask"].unsqueeze(1))

    def metrics(self, out: torch.Tensor, targets: Mapping[str, np.ndarray]) -> M.Metrics:
        return M.segmentation_metrics(np.asarray(targets["mask"]), out.argmax(dim=1).numpy(), self.num_outputs)
