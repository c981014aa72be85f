"""Survival targets: a time column and an event column, checked and encoded the same way at every site.

The targets are `time` (> 0) and `event` (1 = observed, 0 = censored), float32. The
event column may hold 0/1, True/False or any two values; the second in sorted order is the event,
as for binary labels. Like the label encoding, it is fitted on the distinct values of all sites:
over the network each site checks its own times (`check_times`) and sends its distinct event values
(`event_summary`); the coordinator calls `survival_from_summaries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.sitetable import SiteTable
from fedcare.data.values import canonical, parse_numbers, sort_values

_TRUE, _FALSE = "true", "false"
_POSITIVE_ALONE = frozenset({"1", _TRUE})  # a single event value that still means "event observed"
MAX_EVENT_VALUES = 50


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

    def targets(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The named targets of a site's rows: `time` and `event` (1 = observed), float32."""
        return {"time": parse_numbers(frame[self.time]).astype(np.float32),
                "event": self.events(frame).astype(np.float32)}

    def to_dict(self) -> dict[str, object]:
        """JSON-able description for the run folder."""
        return {"task": self.task, "time": self.time, "event": self.event,
                "event_values": list(self.event_values), "event_observed": self.positive}

    def to_json(self) -> dict[str, object]:
        """Everything a site needs to encode its targets."""
        return {"kind": "survival", "time": self.time, "event": self.event,
                "event_values": list(self.event_values), "positive": self.positive}

    @classmethod
    def from_json(cls, data: dict) -> SurvivalEncoding:
        encoding = cls(str(data["time"]), str(data["event"]), tuple(str(v) for v in data["event_values"]),
                       str(data["positive"]))
        if encoding.positive not in encoding.event_values:
            raise ValueError("the event value meaning 'observed' is not one of the event values")
        return encoding


def _where(source: str | None, row: object) -> str:
    return f"row {int(row) + 1}" + (f" of '{source}'" if source else "")  # type: ignore[call-overload]


def check_times(column: str, source: str | None, frame: pd.DataFrame | SiteTable) -> None:
    """Site side: every time of the site's rows must be a number >= 0; else name the first bad row."""
    cells = np.asarray(frame[column])
    times = parse_numbers(cells)
    bad = np.flatnonzero(np.isnan(times))
    if len(bad):
        row = frame.index[bad[0]]
        raise DataError(f"time column '{column}' must be numeric but {_where(source, row)} holds "
                        f"{cells[bad[0]]!r}; fix the value or drop the row")
    bad = np.flatnonzero(times < 0)  # 0 is an event or censoring on the first day: the Cox loss ranks it first
    if len(bad):
        row = frame.index[bad[0]]
        raise DataError(f"time column '{column}' must be zero or more (time from the start of follow-up to the "
                        f"event or censoring) but {_where(source, row)} holds {cells[bad[0]]!r}")


def event_summary(frame: pd.DataFrame, event: str) -> dict[str, object]:
    """Site side: the site's distinct event values (codes such as 0/1), or only their number past MAX_EVENT_VALUES."""
    distinct = sort_values({_event_value(v) for v in set(frame[event].tolist())})
    return {"distinct": len(distinct), "values": distinct if len(distinct) <= MAX_EVENT_VALUES else None}


def survival_from_summaries(time: str, event: str, summaries: Sequence[dict], task: str | None = None
                            ) -> SurvivalEncoding:
    """Coordinator side: fix the event coding from all sites' event summaries; `task` names a
    registered task that reads survival targets (default: survival)."""
    name = task or "survival"
    distinct = sort_values({str(v) for s in summaries for v in (s["values"] or [])})
    count = max([len(distinct), *(int(s["distinct"]) for s in summaries)])
    if count > 2:
        shown = ", ".join(repr(v) for v in distinct[:5]) + (", ..." if count > 5 else "")
        exact = "" if count == len(distinct) else "at least "
        raise DataError(f"event column '{event}' must hold two values (1 = event, 0 = censored) but has "
                        f"{exact}{count}: {shown}")
    if not distinct:
        raise DataError(f"event column '{event}' has no values: no rows with both a time and an event")
    if len(distinct) == 1:
        if distinct[0] not in _POSITIVE_ALONE:
            raise DataError(f"event column '{event}' only holds {distinct[0]!r} across all sites: no event was "
                            "observed, so there is nothing to learn (use 1 = event, 0 = censored)")
        return SurvivalEncoding(time, event, tuple(distinct), distinct[0], name)
    return SurvivalEncoding(time, event, tuple(distinct), distinct[1], name)


def check_columns(time: str, event: str) -> None:
    """Coordinator side, before asking anything: two distinct columns."""
    if time == event:
        raise DataError(f"--time and --event name the same column '{time}'; they must be two columns")


def infer_survival_encoding(time: str, event: str, frames: Sequence[tuple[str | None, pd.DataFrame]]
                            ) -> SurvivalEncoding:
    """Check all sites' rows (time and event both present) and fix the event coding.

    `frames` = (source name for messages, rows) per file or site.
    """
    check_columns(time, event)
    for source, frame in frames:
        check_times(time, source, frame)
    return survival_from_summaries(time, event, [event_summary(frame, event) for _, frame in frames])
