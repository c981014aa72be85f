"""A site's rows as NumPy blocks: what a site's preparation reads, without pandas' fixed cost per call.

Preparing the thousand sites of one file spent most of its time in pandas' cost per call (about 1 ms
per column selection, a dozen selections per site and phase), not in arithmetic. A `SiteTable` holds
the columns typed as numbers at reading as one float64 block (NaN = missing) and every other column
as an array of its cells (str/None); the sites cut from one file are views of the file's blocks, its
rows grouped by site (`grouped`), so nothing is copied per site. The cells are those a DataFrame
gives, so every answer is the same, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from fedcare.data.values import parse_numbers

Rows = np.ndarray | slice  # a boolean mask, positions, or a slice (a view)


@dataclass(frozen=True, eq=False)
class SiteTable:
    """Columns in file order; `numbers` holds the float64 ones (`numeric`: column -> its position in
    `numbers`), `text` the others; `index` is each row's 0-based data row in its file."""

    columns: tuple[str, ...]
    numbers: np.ndarray
    numeric: Mapping[str, int]
    text: Mapping[str, np.ndarray]
    index: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, order: np.ndarray | None = None, share: bool = False) -> SiteTable:
        """A frame's cells (its float64 columns as the block), rows in `order` if given (positions);
        one column at a time, so a big file is held about once more, not per site. `share`: when the
        float64 columns are, in order, the columns of one C-order array (`read_table_typed`'s) and
        no `order` is given, that array is the block, not copied (the caller's own frame only)."""
        columns = tuple(str(c) for c in frame.columns)
        floats = [c for c, dtype in zip(columns, frame.dtypes) if dtype == np.float64]
        rows = len(frame) if order is None else len(order)
        labels = dict(zip(columns, frame.columns))
        block = _one_block([frame[labels[c]].to_numpy() for c in floats]) if share and order is None else None
        numbers = np.empty((rows, len(floats))) if block is None else block
        text: dict[str, np.ndarray] = {}
        for label, name in zip(frame.columns, columns):
            if name in floats and block is not None:
                continue
            cells = frame[label].to_numpy(dtype=np.float64 if name in floats else object)
            cells = cells if order is None else cells[order]
            if name in floats:
                numbers[:, floats.index(name)] = cells
            else:
                text[name] = cells
        index = np.asarray(frame.index)
        return cls(columns, numbers, {c: i for i, c in enumerate(floats)}, text,
                   index if order is None else index[order])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, column: str) -> np.ndarray:
        """One column's cells (a float64 column, or str/None)."""
        if column in self.numeric:
            return self.numbers[:, self.numeric[column]]
        return self.text[column]

    def take(self, rows: Rows) -> SiteTable:
        """These rows (a slice keeps views of the blocks)."""
        return SiteTable(self.columns, self.numbers[rows], self.numeric,
                         {c: v[rows] for c, v in self.text.items()}, self.index[rows])

    def grouped(self, bounds: np.ndarray) -> list[SiteTable]:
        """The tables of consecutive rows bounds[i]:bounds[i + 1]: views, for rows already grouped."""
        return [self.take(slice(int(a), int(b))) for a, b in pairwise(bounds)]

    def parsed(self, columns: Sequence[str]) -> np.ndarray:
        """`parse_numbers` of these columns as one (rows, columns) float64 block: a float column as it
        is (a value that is not finite: NaN), a text column parsed cell by cell where Arrow cannot.
        When they are the block's columns, in order, and none is infinite: a read-only view of the
        block (a site's typed numbers are not a second copy of the file's)."""
        if [self.numeric.get(c) for c in columns] == list(range(self.numbers.shape[1])) and not np.isinf(
                self.numbers).any():
            view = self.numbers.view()
            view.flags.writeable = False
            return view
        out = np.empty((len(self), len(columns)))
        floats = [i for i, c in enumerate(columns) if c in self.numeric]
        if floats:
            out[:, floats] = self.numbers[:, [self.numeric[columns[i]] for i in floats]]
            part = out[:, floats]
            if not np.isfinite(part).all():
                part[~np.isfinite(part)] = np.nan
                out[:, floats] = part
        for i, column in enumerate(columns):
            if column not in self.numeric:
                out[:, i] = parse_numbers(self.text[column])
        return out

    def present(self, columns: Sequence[str]) -> np.ndarray:
        """Which cells hold a value (fedcare.data.values.present_cells): a number is not NaN, a text
        cell is not None."""
        out = np.empty((len(self), len(columns)), dtype=bool)
        for i, column in enumerate(columns):
            cells = self[column]
            out[:, i] = ~np.isnan(cells) if column in self.numeric else ~np.equal(cells, None)
        return out

    def complete(self, columns: Sequence[str]) -> np.ndarray:
        """The rows where every one of these columns holds a value (pandas' notna: None and NaN are
        missing)."""
        out = np.ones(len(self), dtype=bool)
        for column in columns:
            out &= pd.notna(self[column])
        return out


def _one_block(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """The C-order (rows, len(arrays)) float64 array whose columns are `arrays`, in order, when they
    are exactly its columns (views); else None."""
    if not arrays:
        return None
    root = arrays[0]
    while isinstance(root.base, np.ndarray):
        root = root.base
    if (root.dtype != np.float64 or root.ndim != 2 or not root.flags.c_contiguous
            or root.shape != (len(arrays[0]), len(arrays))):
        return None
    start, step = root.__array_interface__["data"][0], root.strides[0]
    for k, array in enumerate(arrays):
        if (array.dtype != np.float64 or array.shape != (len(root),) or array.strides != (step,)
                or array.__array_interface__["data"][0] != start + 8 * k):
            return None
    return root
