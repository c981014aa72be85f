"""A split's examples as torch batches: the named inputs (what the model takes) and the task's
targets (what the loss takes).

Examples held in memory become tensors once, so a round costs only arithmetic; examples an input
kind reads lazily (images on disk) are read a batch at a time, and evaluated in chunks, so a site
needs memory for a batch, not for its data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from fedcare.data.examples import Examples, array
from fedcare.learning.tasks import Task

Tensors = dict[str, torch.Tensor]
EVAL_CHUNK = 256  # rows evaluated at once when examples are read lazily


class Batches:
    def __init__(self, examples: Examples, task: Task, inputs: Sequence[str]) -> None:
        self.examples, self.task, self.inputs = examples, task, tuple(inputs)
        self.n = len(examples)
        self.targets = {name: array(examples, name) for name in task.targets}  # numpy, for the metrics
        self._tensors: tuple[Tensors, Tensors] | None = None
        if examples.in_memory:
            inputs = {name: torch.as_tensor(array(examples, name), dtype=torch.float32) for name in self.inputs}
            self._tensors = (inputs, task.target_tensors(self.targets))

    def __len__(self) -> int:
        return self.n

    @property
    def tensors(self) -> tuple[Tensors, Tensors] | None:
        """The whole split's inputs and targets as tensors when its examples are in memory, else None."""
        return self._tensors

    def take(self, rows: torch.Tensor) -> tuple[Tensors, Tensors]:
        """The inputs and targets of these rows (positions, or a boolean mask over the split)."""
        if self._tensors is not None:
            inputs, targets = self._tensors
            return {k: v[rows] for k, v in inputs.items()}, {k: v[rows] for k, v in targets.items()}
        index = rows.numpy()
        index = np.flatnonzero(index) if index.dtype == np.bool_ else index
        arrays = self.examples.take(index, self.inputs)  # the targets are already here
        return ({name: torch.as_tensor(arrays[name], dtype=torch.float32) for name in self.inputs},
                self.task.target_tensors({name: values[index] for name, values in self.targets.items()}))

    def epoch(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[Tensors, Tensors, int]]:
        """Minibatches in `order`; in memory, one gather per epoch and then cheap views."""
        if self._tensors is not None:
            inputs, targets = self.take(order)
            for start in range(0, self.n, batch_size):
                stop = min(start + batch_size, self.n)
                yield ({k: v[start:stop] for k, v in inputs.items()}, {k: v[start:stop] for k, v in targets.items()},
                       stop - start)
            return
        for start in range(0, self.n, batch_size):
            rows = order[start:start + batch_size]
            yield *self.take(rows), len(rows)

    def chunks(self) -> Iterator[tuple[Tensors, Tensors, int]]:
        """The whole split: at once in memory, else EVAL_CHUNK rows at a time."""
        if self._tensors is not None:
            yield *self._tensors, self.n
            return
        for start in range(0, self.n, EVAL_CHUNK):
            rows = torch.arange(start, min(start + EVAL_CHUNK, self.n))
            yield *self.take(rows), len(rows)
