"""Decide which feature columns are numeric and which categorical, and convert cells accordingly.

A column is numeric when every value parses as a number. When most (but not all) do, the odd
values are typos far more often than real categories, so we stop and point at the first one.
The decision needs only counts from each site (`column_counts`), and for categorical columns their
distinct values (`distinct_summary`); the site holding an odd value names its row itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.sitetable import SiteTable
from fedcare.data.values import (
    canonical,
    parse_number,
    parse_numbers,
    sort_values,
)

MAX_CATEGORIES = 50
MIN_CATEGORY_COUNT = 5  # a site names a category only when this many of its rows hold it
OTHER = "(other)"  # what a site's rarer values become, at that site, before anything is sent


@dataclass(frozen=True)
class ColumnTypes:
    """Feature columns split by kind; `order` keeps file order for the encoded feature names."""

    order: tuple[str, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        return {"order": list(self.order), "numeric": list(self.numeric), "categorical": list(self.categorical)}

    @classmethod
    def from_json(cls, data: dict) -> ColumnTypes:
        """Read (and check) the types a coordinator sent."""
        parts = [data[key] for key in ("order", "numeric", "categorical")]
        if not all(isinstance(p, list) and all(isinstance(c, str) for c in p) for p in parts):
            raise ValueError("column types should be lists of column names")
        types = cls(*(tuple(p) for p in parts))
        if sorted(types.order) != sorted(types.numeric + types.categorical):
            raise ValueError("the column types do not cover the column order")
        return types


# ----- site side -------------------------------------------------------------------------------


COUNT_KEYS = ("present", "numbers", "integers", "distinct_numbers", "dates")
MIN_IDENTIFIER_ROWS = 20  # fewer rows all distinct whole numbers prove nothing


def column_counts(rows: SiteTable, features: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per feature: how many of the site's cells are present, how many of those are numbers, whole
    numbers and YYYYMMDD dates, and how many distinct numbers there are (what tells an identifier or a
    date from a measurement, as counts). All features at once, as one 2-D block."""
    present = rows.present(features)
    values = rows.parsed(features)  # every feature in one pass
    numbers = ~np.isnan(values) & present
    whole = numbers & (values == np.round(values))
    dates = np.zeros_like(whole)
    dates[whole] = _yyyymmdd(values[whole])  # only whole numbers can be dates (and few cells are)
    n = numbers.sum(axis=0)
    ordered = np.sort(np.where(numbers, values, np.nan), axis=0)  # each column's numbers first, NaN last
    inside = np.arange(len(ordered) - 1)[:, None] < (n - 1)[None, :]  # neighbours both numbers
    distinct = (n > 0) + ((ordered[1:] != ordered[:-1]) & inside).sum(axis=0)
    return {column: {"present": int(present[:, i].sum()), "numbers": int(n[i]), "integers": int(whole[:, i].sum()),
                     "distinct_numbers": int(distinct[i]), "dates": int(dates[:, i].sum())}
            for i, column in enumerate(features)}


def _yyyymmdd(whole: np.ndarray) -> np.ndarray:
    """Which whole numbers read as a date 1900-01-01 .. 2099-12-31 written YYYYMMDD."""
    year, month, day = whole // 10000, whole // 100 % 100, whole % 100
    return (year >= 1900) & (year <= 2099) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)


def distinct_summary(frame: pd.DataFrame | SiteTable, columns: Sequence[str], min_count: int
                     ) -> dict[str, dict[str, object]]:
    """Per categorical column: the site's distinct values, sorted, or only their number past
    MAX_CATEGORIES; a value the site holds fewer than `min_count` times is not named: it is OTHER
    (see `suppress_rare`), so a unique string (a diagnosis with a name in it) never leaves the site."""
    out: dict[str, dict[str, object]] = {}
    for column in columns:
        raw = {canonical(v) for v in frame[column].tolist() if v is not None}  # counted, so identifiers are refused
        named = sort_values({v for v in suppress_rare(frame[column], min_count).tolist() if v is not None})
        out[column] = {"distinct": len(raw), "values": named if len(raw) <= MAX_CATEGORIES else None,
                       "withheld": len(raw) - len([v for v in named if v != OTHER])}
    return out


def suppress_rare(cells: pd.Series | np.ndarray, min_count: int) -> np.ndarray:
    """Canonical text, None for missing, and OTHER for every value that fewer than `min_count` of the
    site's rows hold (small-cell suppression: what the site sends and encodes is the same)."""
    text = pd.Series([None if v is None else canonical(v) for v in cells.tolist()], dtype=object)
    counts = text.value_counts()
    rare = set(counts.index[counts < min_count])
    return (text.map(lambda v: OTHER if v in rare else v) if rare else text).to_numpy(dtype=object)


def check_numbers(frame: pd.DataFrame | SiteTable, column: str, source: str | None) -> None:
    """Raise, naming the row, if a cell of a column typed numeric is not a number (usually a typo)."""
    for row, value in zip(frame.index, frame[column]):
        if value is not None and parse_number(value) is None:
            in_file = f" in '{source}'" if source else ""
            raise DataError(
                f"column '{column}'{in_file} is numeric but row {int(row) + 1} holds {value!r}; "
                f"fix the value or pass --categorical {column}"
            )


# ----- coordinator side ------------------------------------------------------------------------


def decide_types(
    features: Sequence[str], counts: Sequence[dict[str, dict[str, int]]], forced_categorical: Sequence[str]
) -> tuple[ColumnTypes, list[str]]:
    """Type each feature from all sites' counts (the rule must be the same everywhere).

    Returns the types and, in feature order, the columns whose values are mostly but not all
    numbers: those are refused (`check_numbers` at the site that holds the odd value says where).
    """
    numeric: list[str] = []
    categorical: list[str] = []
    typos: list[str] = []
    for column in features:
        present = sum(c[column]["present"] for c in counts)
        numbers = sum(c[column]["numbers"] for c in counts)
        if column in forced_categorical:
            categorical.append(column)
        elif present and numbers == present:
            numeric.append(column)
        elif numbers * 2 > present:
            typos.append(column)
        else:
            categorical.append(column)
    return ColumnTypes(tuple(features), tuple(numeric), tuple(categorical)), typos


def check_dates(column: str, counts: Sequence[dict[str, int]]) -> None:
    """Refuse a numeric column whose every value is a YYYYMMDD date: 20200131 and 20200201 are 70
    apart as numbers and 1 day apart as dates, so as a number it means nothing."""
    if sum(c["present"] for c in counts) and all(c["dates"] == c["present"] for c in counts):
        raise DataError(f"column '{column}' holds dates written YYYYMMDD, which are not measurements as numbers; "
                        f"pass --drop {column}, or replace it with a duration (e.g. days since diagnosis)")


def identifier_warning(column: str, counts: Sequence[dict[str, int]]) -> str | None:
    """A warning for a numeric column with a different whole number in every row at every site: it is
    usually an identifier (the model would learn the order patients were registered in), but a count
    or a measurement in whole units can look the same in a small cohort, so it is used, not refused."""
    present = sum(c["present"] for c in counts)
    if present >= MIN_IDENTIFIER_ROWS and all(c["integers"] == c["distinct_numbers"] == c["present"] for c in counts):
        return (f"column '{column}' holds a different whole number in every row, like an identifier, and is used "
                f"as a number; if it is one, pass --drop {column}")
    return None


def check_categories(column: str, summaries: Sequence[dict[str, object]]) -> None:
    """A categorical column may hold at most MAX_CATEGORIES values across all sites. Where no site
    names any value (an identifier is all rare values), the values every site withheld count too, as
    if no two sites shared one; where some site names values, that bound is not used: summed over many
    small sites, each withholding a few levels of a short code list, it would refuse the list."""
    known = {str(v) for s in summaries for v in (s["values"] or []) if v != OTHER}  # type: ignore[attr-defined]
    unnamed = all(int(s["withheld"]) == int(s["distinct"]) for s in summaries)  # type: ignore[call-overload]
    most = len(known) + sum(int(s["withheld"]) for s in summaries) if unnamed else len(known)
    count = max([len(known), most, *(int(s["distinct"]) for s in summaries)])  # type: ignore[call-overload]
    if count > MAX_CATEGORIES:
        exact = "" if count == len(known) else "up to " if count == most else "at least "
        raise DataError(
            f"column '{column}' has {exact}{count} distinct values (more than {MAX_CATEGORIES}) "
            f"and cannot be one-hot encoded; if it is an identifier pass --drop {column}"
        )


def typed_frame(frame: pd.DataFrame, types: ColumnTypes, min_count: int) -> pd.DataFrame:
    """Numeric columns -> float64 with NaN for missing; categorical -> canonical text, OTHER for the
    site's rare values (`suppress_rare`), or None."""
    if not types.categorical and list(frame.columns) == list(types.order):  # numbers only: one block
        return pd.DataFrame(parse_numbers(frame), index=frame.index, columns=list(types.order))
    numeric = [c for c in frame.columns if c in types.numeric]
    out: dict[str, object] = dict(zip(numeric, parse_numbers(frame[numeric]).T))  # the numbers in one pass
    for column in frame.columns:
        if column in types.categorical:
            out[column] = suppress_rare(frame[column], min_count)
    return pd.DataFrame(out, index=frame.index, columns=list(types.order))


@dataclass(frozen=True, eq=False)
class TypedRows:
    """A site's typed columns as blocks (what `typed_frame` gives, without a DataFrame): the numeric
    columns as one float64 block (NaN for missing), in `numeric` order, and each categorical column's
    cells (canonical text, OTHER or None)."""

    numeric: tuple[str, ...]
    numbers: np.ndarray  # (rows, numeric columns), whatever the number of columns
    categories: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def columns(self) -> set[str]:
        return {*self.numeric, *self.categories}

    @classmethod
    def of(cls, frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> TypedRows:
        """A typed frame's columns (`typed_frame`)."""
        return cls(tuple(numeric), frame[list(numeric)].to_numpy(dtype=np.float64),
                   {c: frame[c].to_numpy(dtype=object) for c in categorical})

    def floats(self, columns: Sequence[str]) -> np.ndarray:
        """These numeric columns as one block (the block itself when they are all, in order)."""
        if tuple(columns) == self.numeric:
            return self.numbers
        position = {c: i for i, c in enumerate(self.numeric)}
        return self.numbers[:, [position[c] for c in columns]]

    def take(self, rows: np.ndarray) -> TypedRows:
        return TypedRows(self.numeric, self.numbers[rows], {c: v[rows] for c, v in self.categories.items()})


def typed_rows(rows: SiteTable, types: ColumnTypes, min_count: int) -> TypedRows:
    """`typed_frame` of a site's rows, as blocks: the same cells, without pandas' cost per site."""
    return TypedRows(types.numeric, rows.parsed(types.numeric),
                     {c: suppress_rare(rows[c], min_count) for c in types.categorical})
