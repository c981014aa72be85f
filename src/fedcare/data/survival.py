"""Survival targets: a time column and an event column, checked and encoded the same way at every site.

y is float32 (n, 2): column 0 = time (> 0), column 1 = event (1 = observed, 0 = censored). The
event column may hold 0/1, True/False or any two values; the second in sorted order is the event,
as for binary labels. Like the label encoding, it is fitted on the distinct values of all sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.values import canonical, parse_numbers, sort_values

_TRUE, _FALSE = "true", "false"
_POSITIVE_ALONE = frozenset({"1", _TRUE})  # a single event value that still means "event observed"


def _event_value(text: str) -> str:
    """Canonical spelling: '1.0' -> '1', 'TRUE'/'True' -> 'true'."""
    value = canonical(text)
    return value.casefold() if value.casefold() in (_TRUE, _FALSE) else value


@dataclass(frozen=True)
class SurvivalEncoding:
    """The two target columns and which event value means 'event observed'."""

    time: str
    event: str
    event_values: tuple[str, ...]  # distinct canonical event values, sorted; the last one = event
    positive: str
    task: str = "survival"
    classes: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, str]:
        return (self.time, self.event)

    def events(self, frame: pd.DataFrame) -> np.ndarray:
        """0/1 int64 event codes of a frame's rows (all non-missing); also the split strata."""
        return np.array([_event_value(v) == self.positive for v in frame[self.event].tolist()], dtype=np.int64)

    def strata(self, frame: pd.DataFrame) -> np.ndarray:
        return self.events(frame)

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        """float32 (n, 2): [time, event]."""
        time = parse_numbers(frame[self.time])
        return np.stack([time, self.events(frame).astype(np.float64)], axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        """JSON-able description for the run folder."""
        return {"task": "survival", "time": self.time, "event": self.event,
                "event_values": list(self.event_values), "event_observed": self.positive}


def _where(source: str | None, row: object) -> str:
    return f"row {int(row) + 1}" + (f" of '{source}'" if source else "")  # type: ignore[call-overload]


def _check_times(column: str, frames: Sequence[tuple[str | None, pd.DataFrame]]) -> None:
    for source, frame in frames:
        cells = frame[column]
        times = parse_numbers(cells)
        bad = np.flatnonzero(np.isnan(times))
        if len(bad):
            row = frame.index[bad[0]]
            raise DataError(f"time column '{column}' must be numeric but {_where(source, row)} holds "
                            f"{cells.iloc[bad[0]]!r}; fix the value or drop the row")
        bad = np.flatnonzero(times <= 0)
        if len(bad):
            row = frame.index[bad[0]]
            raise DataError(f"time column '{column}' must be positive (time from the start of follow-up to the "
                            f"event or censoring) but {_where(source, row)} holds {cells.iloc[bad[0]]!r}")


def infer_survival_encoding(time: str, event: str, frames: Sequence[tuple[str | None, pd.DataFrame]]
                            ) -> SurvivalEncoding:
    """Check all sites' rows (time and event both present) and fix the event coding.

    `frames` = (source name for messages, rows) per file or site.
    """
    if time == event:
        raise DataError(f"--time and --event name the same column '{time}'; they must be two columns")
    _check_times(time, frames)
    distinct = sort_values({_event_value(v) for _, f in frames for v in set(f[event].tolist())})
    if len(distinct) > 2:
        shown = ", ".join(repr(v) for v in distinct[:5]) + (", ..." if len(distinct) > 5 else "")
        raise DataError(f"event column '{event}' must hold two values (1 = event, 0 = censored) but has "
                        f"{len(distinct)}: {shown}")
    if not distinct:
        raise DataError(f"event column '{event}' has no values: no rows with both a time and an event")
    if len(distinct) == 1:
        if distinct[0] not in _POSITIVE_ALONE:
            raise DataError(f"event column '{event}' only holds {distinct[0]!r} across all sites: no event was "
                            "observed, so there is nothing to learn (use 1 = event, 0 = censored)")
        return SurvivalEncoding(time, event, tuple(distinct), distinct[0])
    return SurvivalEncoding(time, event, tuple(distinct), distinct[1])
