"""A split's examples: named arrays of one row per patient, read by rows.

Inputs (`tabular`, `omics`, later `image`) and targets (`label`, `time`, `event`) are named arrays of
equal length. `ArrayExamples` holds them in memory; an input kind whose data is large (images) gives
its own `Examples` that reads the rows a batch asks for from disk, so nothing here assumes a site's
data fits in memory. Training and evaluation only ever call `take`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from fedcare.core.errors import DataError


@runtime_checkable
class Examples(Protocol):
    """Named arrays with one row per example."""

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def in_memory(self) -> bool:
        """True when every array is held in memory (then a site may turn them into tensors once)."""
        ...

    def __len__(self) -> int: ...

    def take(self, rows: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """These rows (positions, in this order) of the named arrays (default: all of them)."""
        ...


@dataclass(frozen=True, eq=False)
class ArrayExamples:
    """Examples held in memory as numpy arrays."""

    arrays: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        lengths = {name: len(a) for name, a in self.arrays.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"named arrays of different lengths: {lengths}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.arrays)

    @property
    def in_memory(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def take(self, rows: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return {name: self.arrays[name][rows] for name in (self.names if names is None else names)}


def array(examples: Examples, name: str) -> np.ndarray:
    """One named array whole: a target, or a small input (an image input would be read entirely)."""
    if isinstance(examples, ArrayExamples):
        return examples.arrays[name]
    return examples.take(np.arange(len(examples)), [name])[name]


def with_arrays(examples: Examples, **arrays: np.ndarray) -> Examples:
    """The same examples with some named arrays replaced (e.g. a simulated attacker's flipped labels)."""
    if isinstance(examples, ArrayExamples):
        return ArrayExamples({**examples.arrays, **arrays})
    return _Replaced(examples, arrays)


def concat(parts: Sequence[Examples]) -> Examples:
    """The rows of several splits one after the other (the pooled baseline's one site)."""
    if all(isinstance(p, ArrayExamples) for p in parts):
        names = parts[0].names
        return ArrayExamples({n: np.concatenate([p.arrays[n] for p in parts]) for n in names})  # type: ignore[attr-defined]
    return _Stacked(tuple(parts))


@dataclass(frozen=True, eq=False)
class _Replaced:
    base: Examples
    arrays: Mapping[str, np.ndarray]

    @property
    def names(self) -> tuple[str, ...]:
        return self.base.names

    @property
    def in_memory(self) -> bool:
        return self.base.in_memory

    def __len__(self) -> int:
        return len(self.base)

    def take(self, rows: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        wanted = list(self.names if names is None else names)
        out = self.base.take(rows, [n for n in wanted if n not in self.arrays])
        return {n: self.arrays[n][rows] if n in self.arrays else out[n] for n in wanted}


@dataclass(frozen=True, eq=False)
class _Stacked:
    parts: tuple[Examples, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.parts[0].names

    @property
    def in_memory(self) -> bool:
        return all(p.in_memory for p in self.parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def take(self, rows: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        rows, wanted = np.asarray(rows, dtype=np.int64), list(self.names if names is None else names)
        sizes = np.array([len(p) for p in self.parts])
        starts = np.cumsum(sizes) - sizes
        which = np.searchsorted(np.cumsum(sizes), rows, side="right")
        taken = [(mine, part.take(rows[mine] - starts[i], wanted))
                 for i, part in enumerate(self.parts) if len(mine := np.flatnonzero(which == i))]
        if not taken:
            return self.parts[0].take(rows, wanted)
        out = {}
        for name in wanted:
            first = taken[0][1][name]
            out[name] = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
            for mine, values in taken:
                out[name][mine] = values[name]
        return out
