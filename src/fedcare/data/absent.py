"""An input some patients lack: its array for every row, zeros where the patient has none.

The contract with the learning layer (docs/multimodal.md): every input of the data's shape is in
every site's examples, zeros where a patient lacks it, and an input a patient may lack has a
companion `"<input>.present"` (float32, 1.0 where the patient has it). A site encodes only the rows
that have the input; `with_absent` puts them back among the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedcare.data.lazy import Column, FileColumn
from fedcare.data.splitting import SplitIndices


def present_name(name: str) -> str:
    """The companion array of input `name`: 1.0 where the patient has it."""
    return f"{name}.present"


def sub_split(split: SplitIndices, present: np.ndarray) -> SplitIndices:
    """The split of the rows that have the input, as positions among those rows (order kept)."""
    position = np.cumsum(present) - 1
    return SplitIndices(*(position[part[present[part]]].astype(np.int64)
                          for part in (split.train, split.val, split.test)))


@dataclass(frozen=True, eq=False)
class WithAbsent:
    """A file column (images) of the rows that have the input, read as zeros for the rows that do not."""

    inner: FileColumn | None  # the present rows, in row order (None: no row has the input)
    present: np.ndarray  # bool, one per row
    shape: tuple[int, ...]  # one patient's array

    def __len__(self) -> int:
        return len(self.present)

    def _inner_rows(self, rows: np.ndarray) -> np.ndarray:
        return (np.cumsum(self.present) - 1)[rows]

    def __getitem__(self, rows: np.ndarray) -> WithAbsent:
        rows = np.asarray(rows, dtype=np.int64)
        present = self.present[rows]
        inner = self.inner[self._inner_rows(rows[present])] if self.inner is not None and present.any() else None
        return WithAbsent(inner, present, self.shape)

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), *self.shape), dtype=np.float32)
        present = self.present[rows]
        if present.any():
            out[present] = self.inner.read(self._inner_rows(rows[present]))  # type: ignore[union-attr]
        return out


def with_absent(inner: Column | None, present: np.ndarray, shape: Sequence[int], in_memory: bool) -> Column:
    """Every row's array: `inner` (the present rows') where the row has the input, zeros elsewhere.
    Arrays in memory stay in memory; a file column (or, with no inner, a kind read from files)
    stays lazy, so a site without images holds no image-sized zeros."""
    shape = tuple(int(n) for n in shape)
    if isinstance(inner, np.ndarray) or (inner is None and in_memory):
        out = np.zeros((len(present), *shape), dtype=np.float32 if inner is None else inner.dtype)
        if inner is not None:
            out[present] = inner
        return out
    return WithAbsent(inner, present, shape)  # type: ignore[arg-type]
