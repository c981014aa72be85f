"""Decide which feature columns are numeric and which categorical, and convert cells accordingly.

A column is numeric when every value parses as a number. When most (but not all) do, the odd
values are typos far more often than real categories, so we stop and point at the first one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.raw import RawSite
from fedcare.data.values import canonical, parse_number, parse_numbers

MAX_CATEGORIES = 50


@dataclass(frozen=True)
class ColumnTypes:
    """Feature columns split by kind; `order` keeps file order for the encoded feature names."""

    order: tuple[str, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]


def _first_bad_value(column: str, sites: Sequence[RawSite]) -> tuple[RawSite, int, str]:
    for site in sites:
        for row, value in site.frame[column].items():
            if value is not None and parse_number(value) is None:
                return site, int(row), value
    raise AssertionError("called only when a bad value exists")


def type_columns(
    features: Sequence[str], sites: Sequence[RawSite], forced_categorical: Sequence[str], several_files: bool
) -> ColumnTypes:
    """Type each feature from all sites' values (the rule must be the same everywhere)."""
    numeric: list[str] = []
    categorical: list[str] = []
    for column in features:
        cells = pd.concat([s.frame[column] for s in sites], ignore_index=True)
        present = cells.notna().to_numpy()
        values = cells[present].tolist()
        if column in forced_categorical:
            kind = "categorical"
        else:
            parsed = int(np.count_nonzero(~np.isnan(parse_numbers(cells)) & present))
            if values and parsed == len(values):
                kind = "numeric"
            elif parsed * 2 > len(values):
                site, row, value = _first_bad_value(column, sites)
                in_file = f" in '{site.source}'" if several_files and site.source else ""
                raise DataError(
                    f"column '{column}'{in_file} is numeric but row {row + 1} holds {value!r}; "
                    f"fix the value or pass --categorical {column}"
                )
            else:
                kind = "categorical"
        if kind == "numeric":
            numeric.append(column)
            continue
        distinct = {canonical(v) for v in values}
        if len(distinct) > MAX_CATEGORIES:
            raise DataError(
                f"column '{column}' has {len(distinct)} distinct values (more than {MAX_CATEGORIES}) "
                f"and cannot be one-hot encoded; if it is an identifier pass --drop {column}"
            )
        categorical.append(column)
    return ColumnTypes(tuple(features), tuple(numeric), tuple(categorical))


def typed_frame(frame: pd.DataFrame, types: ColumnTypes) -> pd.DataFrame:
    """Numeric columns -> float64 with NaN for missing; categorical -> canonical text or None."""
    out: dict[str, object] = {}
    for column in frame.columns:
        if column in types.numeric:
            out[column] = parse_numbers(frame[column])
        elif column in types.categorical:
            out[column] = pd.Series(
                [None if v is None else canonical(v) for v in frame[column].tolist()], dtype=object
            ).to_numpy()
    return pd.DataFrame(out, index=frame.index, columns=list(types.order))
