"""What a task is: the targets it reads, its loss, its metrics, its headline metric and whether
higher is better. The round engine, the transports and the summary know a task only through this."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol

import numpy as np
import torch

from fedcare.learning.metrics import Metrics


class Task(Protocol):
    name: ClassVar[str]                # what --task and summary.json call it
    targets: ClassVar[tuple[str, ...]]  # the named targets of a batch it reads
    reads: ClassVar[str]               # how the data layer encodes them: classes, numbers or survival
    headline: ClassVar[str]            # the metric that picks the best round and the worst site
    higher_is_better: ClassVar[bool]   # of the headline metric
    per_example: ClassVar[bool]        # whether the loss is a mean over patients (DP-SGD needs it)

    @property
    def num_outputs(self) -> int:
        """Outputs of the model's head."""
        ...

    def target_tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The targets as the loss wants them."""
        ...

    def loss(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The mean loss of a batch, from the model's raw outputs."""
        ...

    # Optional, for a task whose loss is a mean over patients: `patient_losses(out, targets)`, each
    # patient's loss (the batched trainer takes the sites' means of it outside vmap, learning/batched.py).

    def metrics(self, out: torch.Tensor, targets: Mapping[str, np.ndarray]) -> Metrics:
        """Every metric of a whole split, from the model's raw outputs; an undefined one is None."""
        ...
