"""The data layer's public types: what a run asks for (DataSpec) and what every site holds (SiteData).

Kept free of loading logic so that the learning and federation layers can import the types cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedcare.core.config.data import DataSpec
from fedcare.core.errors import DataError

TaskKind = Literal["binary", "multiclass", "regression", "survival"]


@dataclass(frozen=True, eq=False)
class SiteData:
    """One hospital's already-encoded arrays; they stay at that site during a real run.

    x_* are float32 (n, d). y_* are float32 0/1 (binary), int64 class index (multiclass),
    float32 (regression) or float32 (n, 2) = [time > 0, event 1/0] (survival). The validation
    split may have 0 rows.
    """

    site_id: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """All sites of one dataset, encoded with one shared, federatedly fitted transform."""

    name: str
    task: TaskKind
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]
    sites: tuple[SiteData, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def site(self, site_id: str) -> SiteData:
        """Look a site up by id, naming the known ids when it is absent."""
        for s in self.sites:
            if s.site_id == site_id:
                return s
        known = ", ".join(s.site_id for s in self.sites)
        raise DataError(f"unknown site '{site_id}' in dataset '{self.name}'; sites are: {known}")


def load_dataset(spec: DataSpec) -> FederatedDataset:
    """Load a built-in dataset or the user's files (see fedcare.data.loader)."""
    from fedcare.data.loader import load_dataset as _load

    return _load(spec)
