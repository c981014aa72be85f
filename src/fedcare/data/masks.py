"""The `mask` target: a segmentation mask per image, a file named in the label column (one value
per voxel: 0 = background, other integers = classes). Read at the site a batch at a time, resampled
(nearest) to the images' common size, its values mapped to class indices 0..K-1 shared by every site.

What a site sends (the 'schema' answer): the sorted distinct values of its masks (at most
MAX_MASK_CLASSES) and their spatial axes. An all-background mask is a valid mask (no lesion);
a file that cannot be read, or whose size differs from its image's, is a bad file
(fedcare.data.manifest names it, or skips it with --skip-bad-images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.answers import check_count
from fedcare.data.imagefiles import read_image, resample
from fedcare.data.inputs.image import default_size

MAX_MASK_CLASSES = 20


def mask_values(values: np.ndarray, path: str) -> np.ndarray:
    """A mask's voxels as integers (they must be whole numbers)."""
    rounded = np.rint(values)
    if not np.array_equal(rounded, values):
        raise DataError(f"mask '{path}' holds values that are not whole numbers; a mask gives each voxel a class")
    return rounded.astype(np.int64)


def mask_summary(paths: Sequence[str]) -> dict[str, Any]:
    """A site's masks: their distinct values (sorted) and spatial axes. Every mask is read once."""
    found: set[int] = set()
    dims = 0
    for path in paths:
        values = read_image(path)
        if values.shape[0] != 1:
            raise DataError(f"mask '{path}' has {values.shape[0]} channels; a mask has one")
        found |= set(np.unique(mask_values(values, path)).tolist())
        dims = values.ndim - 1
        if len(found) > MAX_MASK_CLASSES:
            raise DataError(f"the masks hold more than {MAX_MASK_CLASSES} distinct values (e.g. '{path}'); "
                            "a mask gives each voxel a class index")
    return {"values": sorted(found), "dims": dims}


@dataclass(frozen=True, eq=False)
class MaskColumn:
    """A split's masks, unread: read, resampled (nearest) and mapped to class indices on `read`."""

    paths: tuple[str, ...]
    size: tuple[int, ...]
    values: tuple[int, ...]  # the mask value of each class index

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: np.ndarray) -> MaskColumn:
        return MaskColumn(tuple(self.paths[i] for i in np.asarray(rows, dtype=np.int64)), self.size, self.values)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 class indices, (rows, *size)."""
        known = np.asarray(self.values)
        out = np.empty((len(rows), *self.size), dtype=np.uint8)
        for k, row in enumerate(np.asarray(rows, dtype=np.int64)):
            path = self.paths[row]
            values = mask_values(resample(read_image(path), self.size, mask=True)[0], path)
            index = np.searchsorted(known, values)
            if (index >= len(known)).any() or (known[np.minimum(index, len(known) - 1)] != values).any():
                raise DataError(f"mask '{path}' holds a value the masks of the federation do not; {known.tolist()}")
            out[k] = index
        return out


@dataclass(frozen=True)
class MaskEncoding:
    """The mask column, the common size, and the mask value of each class (background first)."""

    column: str
    task: str
    size: tuple[int, ...]
    values: tuple[int, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple("background" if v == 0 else f"class {v}" for v in self.values)

    @property
    def columns(self) -> tuple[str]:
        return (self.column,)

    def strata(self, frame: pd.DataFrame) -> None:
        return None  # a split is not stratified by the masks (reading them all for it is not worth it)

    def targets(self, frame: pd.DataFrame) -> dict[str, MaskColumn]:
        return {"mask": MaskColumn(tuple(str(p) for p in frame[self.column].tolist()), self.size, self.values)}

    def to_dict(self) -> dict[str, object]:
        return {"column": self.column, "task": self.task, "classes": list(self.classes),
                "mask_values": list(self.values), "size": list(self.size)}

    def to_json(self) -> dict[str, object]:
        return {"kind": "mask", **self.to_dict()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MaskEncoding:
        return cls(str(data["column"]), str(data["task"]), tuple(check_count(n) for n in data["size"]),
                   tuple(int(v) for v in data["mask_values"]))


def mask_from_summaries(column: str, task: str, summaries: Sequence[tuple[str, Mapping[str, Any]]],
                        size: Sequence[int] | None) -> MaskEncoding:
    """One encoding from every site's summary: the union of their values, the common size."""
    values: set[int] = set()
    dims = {site: check_count(s["dims"]) for site, s in summaries}
    for site, summary in summaries:
        found = summary["values"]
        if not isinstance(found, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in found):
            raise ValueError(f"site '{site}' sent mask values that are not integers")
        values |= set(found)
    if len(set(dims.values())) > 1:
        raise DataError(f"the sites' masks differ in axes: {dims}; every site needs masks of one kind")
    if len(values) > MAX_MASK_CLASSES:
        raise DataError(f"the masks hold {len(values)} distinct values, more than {MAX_MASK_CLASSES}")
    if 0 not in values:
        values.add(0)
    return MaskEncoding(column, task, default_size(next(iter(dims.values())), size), tuple(sorted(values)))
