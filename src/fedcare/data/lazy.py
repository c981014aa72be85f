"""Named arrays that stay in their files until a batch asks for rows (images and their masks).

A `FileColumn` is one named array of a split kept on disk: it knows its rows' files and how to turn
them into arrays; indexing it with row positions gives the column of those rows, still unread.
`examples_of` puts such columns beside ordinary numpy arrays as one split's `Examples`: in memory
when every array is, else read a batch at a time, so a site needs memory for a batch, not its set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from fedcare.core.errors import DataError
from fedcare.data.examples import ArrayExamples, Examples


@runtime_checkable
class FileColumn(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, rows: np.ndarray) -> FileColumn:
        """The same column for these rows (positions), still unread."""
        ...

    def read(self, rows: np.ndarray) -> np.ndarray:
        """These rows' arrays, read from their files now."""
        ...


Column = np.ndarray | FileColumn


@dataclass(frozen=True, eq=False)
class ColumnExamples:
    """Examples whose named arrays may be file columns (read on `take`) beside numpy arrays."""

    columns: Mapping[str, Column]

    def __post_init__(self) -> None:
        lengths = {name: len(c) for name, c in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"named arrays of different lengths: {lengths}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    @property
    def in_memory(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def take(self, rows: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        out = {}
        for name in self.names if names is None else names:
            column = self.columns[name]
            out[name] = column[rows] if isinstance(column, np.ndarray) else column.read(rows)
        return out


def examples_of(columns: Mapping[str, Column]) -> Examples:
    """One split's examples: ArrayExamples when every array is in memory, else ColumnExamples."""
    if all(isinstance(c, np.ndarray) for c in columns.values()):
        return ArrayExamples(dict(columns))  # type: ignore[arg-type]
    return ColumnExamples(dict(columns))
