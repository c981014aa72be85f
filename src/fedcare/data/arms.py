"""The treatment target: which arm each patient had, encoded identically at every site.

A site sends the rows it holds per arm (the arm names and their counts: the same kind of fact as a
label's class names); the coordinator takes the sorted union of the names, the control arm
(`--control`, or the first name in sorted order) and sends the encoding back, so every site numbers
the arms alike. The encoded target `treatment` is the arm's index (int64), control first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.values import canonical, parse_number

MAX_ARMS = 20


def arm_counts(cells: Sequence[str]) -> dict[str, int]:
    """A site's answer: rows per arm (cells are present: rows without an arm were dropped)."""
    counts: dict[str, int] = {}
    for cell in cells:
        name = canonical(str(cell))
        counts[name] = counts.get(name, 0) + 1
    if len(counts) > MAX_ARMS:
        raise DataError(f"the treatment column has {len(counts)} distinct values at one site, more than "
                        f"{MAX_ARMS} arms; name the arm column with --treatment")
    return dict(sorted(counts.items()))


def _sorted(names: set[str]) -> list[str]:
    """Arms in sorted order: numerically when every name is a number, else as text."""
    numbers = {n: parse_number(n) for n in names}
    if all(v is not None for v in numbers.values()):
        return sorted(names, key=lambda n: (numbers[n], n))
    return sorted(names)


@dataclass(frozen=True)
class ArmEncoding:
    """The arm column, the arms (control first) and the rows per arm at each site."""

    column: str
    arms: tuple[str, ...]
    control_from: str  # "--control" or "first in sorted order"
    site_counts: Mapping[str, Mapping[str, int]]

    @property
    def control(self) -> str:
        return self.arms[0]

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        index = {arm: i for i, arm in enumerate(self.arms)}
        cells = [canonical(str(c)) for c in frame[self.column].tolist()]
        unknown = [c for c in cells if c not in index]
        if unknown:
            raise DataError(f"arm '{unknown[0]}' in column '{self.column}' is not one the sites reported")
        return np.array([index[c] for c in cells], dtype=np.int64)

    def missing(self) -> dict[str, list[str]]:
        """Per site, the arms it has no patient in (the summary says so)."""
        return {site: [a for a in self.arms if not counts.get(a)] for site, counts in self.site_counts.items()
                if any(not counts.get(a) for a in self.arms)}

    def to_json(self, counts: bool = True) -> dict[str, Any]:
        """The encoding; with `counts` the rows per arm at each site (for the summary, never for the
        sites: a site does not learn another's counts)."""
        out: dict[str, Any] = {"column": self.column, "arms": list(self.arms), "control": self.control,
                               "control_from": self.control_from}
        if counts:
            out["site_counts"] = {s: dict(c) for s, c in self.site_counts.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArmEncoding:
        arms = tuple(str(a) for a in data["arms"])
        if len(arms) < 2 or len(set(arms)) != len(arms):
            raise ValueError("an arm encoding needs two or more distinct arms")
        counts = {str(s): {str(a): int(n) for a, n in c.items()} for s, c in data.get("site_counts", {}).items()}
        return cls(str(data["column"]), arms, str(data["control_from"]), counts)


def arms_from_counts(column: str, counts: Mapping[str, Mapping[str, int]], control: str | None) -> ArmEncoding:
    """The coordinator's encoding from every site's counts: control first, then the others in order."""
    names = _sorted({a for c in counts.values() for a in c})
    if len(names) < 2:
        raise DataError(f"the treatment column '{column}' has one arm ({', '.join(names) or 'none'}) over all "
                        "sites; effects need a control and at least one other arm")
    if control is not None:
        control = canonical(control)
        if control not in names:
            raise ConfigError(f"--control '{control}' is not an arm of '{column}'; its arms are: {', '.join(names)}")
    first = control if control is not None else names[0]
    arms = (first, *[n for n in names if n != first])
    return ArmEncoding(column, arms, "--control" if control is not None else "first in sorted order",
                       {s: dict(c) for s, c in counts.items()})
