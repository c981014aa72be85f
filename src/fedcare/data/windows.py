"""Time windows: which window each row of a time column falls in, for a stream replay.

`--windows K` cuts the rows, in time order, into K windows of about equal rows; rows with the same
time stay in one window, so a window never splits a day (or a year). `--window 90d` (days, weeks or
years) cuts the calendar from the earliest date into windows of that length; empty ones are left out.
Rows whose time cell is empty are counted and left out of every window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.values import parse_numbers

_DAYS = {"d": 1, "w": 7, "y": 365}


@dataclass(frozen=True)
class Windows:
    """Each row's window (-1: no time), and each window's first and last time as text."""

    index: np.ndarray
    bounds: list[tuple[str, str]]

    @property
    def count(self) -> int:
        return len(self.bounds)


def cut_windows(cells: pd.Series, column: str, windows: int | None = None, window: str | None = None) -> Windows:
    """The windows of a time column's cells (text or numbers, or dates with `window`)."""
    if (windows is None) == (window is None):
        raise DataError("give either a number of windows or a window length, not both")
    if window is not None:
        return _by_length(cells, column, window)
    times = parse_numbers(cells)
    present = ~np.isnan(times)
    bad = cells.notna().to_numpy() & ~present
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"the time column '{column}' has '{cells.iloc[row]}' in row {row + 1}, which is not a number; "
                        "give numbers (e.g. a year), or dates with --window 90d")
    return _equal_rows(times, present, windows)  # type: ignore[arg-type]


def _equal_rows(times: np.ndarray, present: np.ndarray, k: int) -> Windows:
    order = np.sort(times[present])
    n = len(order)
    if len(np.unique(order)) < k:
        raise DataError(f"the time column has {len(np.unique(order))} distinct values, too few for {k} windows; "
                        "pass a smaller --windows")
    first = np.searchsorted(order, times[present], side="left")  # a time's first position: ties stay together
    window = np.minimum(first * k // n, k - 1)
    used = np.unique(window)  # a big tie can swallow a window: number the others densely
    window = np.searchsorted(used, window)
    index = np.full(len(times), -1)
    index[present] = window
    bounds = [(_text(times[present][window == w].min()), _text(times[present][window == w].max()))
              for w in range(len(used))]
    return Windows(index, bounds)


def _by_length(cells: pd.Series, column: str, window: str) -> Windows:
    days = int(window[:-1]) * _DAYS[window[-1]]
    given = cells.notna().to_numpy()
    dates = pd.to_datetime(cells, errors="coerce", format="ISO8601")
    bad = given & dates.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"the time column '{column}' has '{cells.iloc[row]}' in row {row + 1}, which is not a date "
                        "(YYYY-MM-DD); fix the cell, or use --windows K for a numeric time")
    present = dates.notna().to_numpy()
    if not present.any():
        raise DataError(f"the time column '{column}' has no dates")
    elapsed = (dates[present] - dates[present].min()).dt.days.to_numpy()
    raw = elapsed // days
    used = np.unique(raw)
    index = np.full(len(cells), -1)
    index[present] = np.searchsorted(used, raw)
    stamps = dates[present].dt.strftime("%Y-%m-%d").to_numpy()
    bounds = [(str(stamps[index[present] == w].min()), str(stamps[index[present] == w].max())) for w in range(len(used))]
    if len(bounds) < 2:
        raise DataError(f"every date of '{column}' falls in one {window} window; pass a shorter --window")
    return Windows(index, bounds)


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
