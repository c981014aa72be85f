"""The data layer's public types: what every site holds (SiteData), what the model and the task need
to know of the data without seeing it (DataShape), and a whole federated dataset.

Kept free of loading logic so that the learning and federation layers can import the types cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedcare.core.config.data import DataSpec
from fedcare.core.errors import DataError
from fedcare.data.examples import Examples

__all__ = ["DataShape", "DataSpec", "FederatedDataset", "InputShape", "SiteData"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class InputShape:
    """One input as the model sees it: its kind (tabular, omics, ...), the shape of one patient's
    array, and for a vector input the names of its encoded columns."""

    kind: str
    shape: tuple[int, ...]
    features: tuple[str, ...] = ()

    def to_json(self, features: bool = False) -> dict[str, Any]:
        """What a site needs to build the model; the feature names only when asked (the run's summary
        has them)."""
        return {"kind": self.kind, "shape": list(self.shape), **({"features": list(self.features)} if features else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputShape:
        shape = tuple(int(n) for n in data["shape"])
        if not shape or any(n < 1 for n in shape):
            raise ValueError(f"an input shape must be positive sizes, got {data['shape']!r}")
        return cls(str(data["kind"]), shape, tuple(str(f) for f in data.get("features", ())))


@dataclass(frozen=True)
class DataShape:
    """What the plan needs of the data: the task, the class names, and each named input's shape, in
    the order the model takes them. Learned by preparing the data; no rows."""

    task: str
    classes: tuple[str, ...]
    inputs: Mapping[str, InputShape]

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The encoded columns of every vector input, in model order."""
        return tuple(f for shape in self.inputs.values() for f in shape.features)

    def to_json(self, features: bool = False) -> dict[str, Any]:
        return {"task": self.task, "classes": list(self.classes),
                "inputs": {name: shape.to_json(features) for name, shape in self.inputs.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataShape:
        return cls(str(data["task"]), tuple(str(c) for c in data["classes"]),
                   {str(name): InputShape.from_json(s) for name, s in data["inputs"].items()})


@dataclass(frozen=True, eq=False)
class SiteData:
    """One hospital's examples per split (train, val, test); they stay at that site during a real run.

    Each split holds the site's named inputs (float32 arrays, one row per patient, or read lazily by
    their input kind) and its targets: `label` (float32 0/1 for binary, int64 class index for
    multiclass, float32 for regression) or `time` and `event` (float32, survival). The validation
    split may have 0 rows.
    """

    site_id: str
    splits: Mapping[str, Examples]

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise DataError(f"site '{self.site_id}' lacks its '{missing[0]}' split")

    def sizes(self) -> dict[str, int]:
        """Rows per split."""
        return {split: len(self.splits[split]) for split in SPLITS}


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """All sites of one dataset, prepared with one shared, federatedly fitted transform per input."""

    name: str
    shape: DataShape
    sites: tuple[SiteData, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.shape.task

    @property
    def classes(self) -> tuple[str, ...]:
        return self.shape.classes

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.shape.feature_names

    def site(self, site_id: str) -> SiteData:
        """Look a site up by id, naming the known ids when it is absent."""
        for s in self.sites:
            if s.site_id == site_id:
                return s
        known = ", ".join(s.site_id for s in self.sites)
        raise DataError(f"unknown site '{site_id}' in dataset '{self.name}'; sites are: {known}")
