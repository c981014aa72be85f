"""Federated preprocessing: fit one imputation/scaling/encoding transform without pooling rows.

For a privacy officer -- what leaves a site, and only from its TRAINING rows:
  * per numeric column: the number of non-missing values, their mean, the sum of their squared
    deviations from that mean (M2) and the number of missing values;
  * per categorical column: the number of rows in each category and the number of missing values;
  * while the median of a column with missing values is searched: for each threshold t the
    coordinator proposes, the number of the site's values <= t (about 10 such counts per column,
    20 when the pooled count is even: the search stops at 1/128 of a standard deviation, before it
    could converge onto one patient's value). Columns without missing values need no median.
No patient row and no individual value leaves a site. The coordinator merges these aggregates into a
`Transform` (means, standard deviations, medians, category lists, modes, which columns get a missing
indicator) and sends the same Transform to every site, which applies it locally to train/val/test.
Caveat: counts of a site's '(other)' category, and threshold counts, can describe very small groups
(docs/data.md: what the coordinator can learn).

Functions are grouped by who runs them: site side (`site_stats`, `count_at_most`, `apply_transform`)
and coordinator side (`merge_stats`, `fit_medians`, `build_transform`). `fit_transform` wires the two
together in one process; fedcare.data.prepare runs the same functions on each side of a question and
answer exchange, carrying the aggregates and the Transform as JSON (`stats_to_json`,
`transform_to_json`). The median search of every column advances in the same round trip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.answers import check_count, check_number
from fedcare.data.columns import ColumnTypes, TypedRows
from fedcare.data.values import sort_values

MEDIAN_ITERATIONS = 8  # the median to 1/128 of a standard deviation: enough to impute, too coarse to pin a value
INDICATOR_SUFFIX = "__missing"


# ----- aggregates exchanged -------------------------------------------------------------------


@dataclass(frozen=True)
class NumericStats:
    """Sufficient statistics for mean and variance, plus how many values are missing: the count, the
    mean and M2 = Σ(x − mean)², merged with Chan et al.'s parallel update. Sums of squares would
    cancel catastrophically on a near-constant column with a large offset (a date, a lab code)."""

    count: int
    mean: float
    m2: float
    missing: int


@dataclass(frozen=True)
class CategoricalStats:
    """Category -> row count, plus how many values are missing."""

    counts: dict[str, int]
    missing: int


@dataclass(frozen=True)
class SiteStats:
    """Everything a site sends for fitting (also used for the coordinator's merged totals)."""

    rows: int
    numeric: dict[str, NumericStats]
    categorical: dict[str, CategoricalStats]


# ----- the fitted transform -------------------------------------------------------------------


@dataclass(frozen=True)
class NumericRule:
    """Impute with `median`, then scale to (x - mean) / std."""

    mean: float
    std: float
    median: float


@dataclass(frozen=True)
class CategoricalRule:
    """Impute with `mode`, then one-hot over `categories` (unseen value -> all zeros)."""

    categories: tuple[str, ...]
    mode: str


@dataclass(frozen=True)
class Transform:
    """The shared transform every site applies; `feature_names` gives the encoded columns."""

    order: tuple[str, ...]
    numeric: dict[str, NumericRule]
    categorical: dict[str, CategoricalRule]
    indicators: tuple[str, ...]  # source columns that get a COL__missing 0/1 column
    train_missing: dict[str, int]

    @property
    def feature_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for column in self.order:
            if column in self.numeric:
                names.append(column)
            else:
                names.extend(f"{column}={c}" for c in self.categorical[column].categories)
        names.extend(f"{column}{INDICATOR_SUFFIX}" for column in self.indicators)
        return tuple(names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description, written to the run folder."""
        return {
            "feature_names": list(self.feature_names),
            "numeric": {c: {"mean": r.mean, "std": r.std, "median": r.median} for c, r in self.numeric.items()},
            "categorical": {c: {"categories": list(r.categories), "mode": r.mode}
                            for c, r in self.categorical.items()},
            "missing_indicators": [f"{c}{INDICATOR_SUFFIX}" for c in self.indicators],
            "train_missing_counts": dict(self.train_missing),
            "method": "fitted on training rows only from per-site aggregates; numeric: impute federated "
                      "median, standardize with federated mean and population std (std 0 -> 1); "
                      "categorical: impute federated mode, one-hot in sorted category order",
        }


# ----- site side ------------------------------------------------------------------------------


def site_stats(train: pd.DataFrame | TypedRows, types: ColumnTypes) -> SiteStats:
    """Aggregates of one site's training rows (typed: numeric float/NaN, categorical str/None)."""
    rows = train if isinstance(train, TypedRows) else TypedRows.of(train, types.numeric, types.categorical)
    numeric: dict[str, NumericStats] = {}
    block = rows.floats(types.numeric)  # one block, not one conversion per column
    if len(block) and not np.isnan(block).any():  # nothing missing: every column at once
        columns = np.ascontiguousarray(block.T)  # each column contiguous: the same pairwise sums as one at a time
        means = columns.mean(axis=1)
        m2s = np.square(columns - means[:, None]).sum(axis=1)
        numeric = {c: NumericStats(count=len(block), mean=float(mean), m2=float(m2), missing=0)
                   for c, mean, m2 in zip(types.numeric, means, m2s)}
    else:
        for column, values in zip(types.numeric, block.T):
            present = values[~np.isnan(values)]
            mean = float(present.mean()) if present.size else 0.0
            numeric[column] = NumericStats(
                count=int(present.size),
                mean=mean,
                m2=float(np.square(present - mean).sum()),
                missing=int(values.size - present.size),
            )
    categorical: dict[str, CategoricalStats] = {}
    for column in types.categorical:
        cells = [v for v in rows.categories[column].tolist() if not pd.isna(v)]
        counts: dict[str, int] = {}
        for value in cells:
            counts[value] = counts.get(value, 0) + 1
        categorical[column] = CategoricalStats(counts=counts, missing=len(rows) - len(cells))
    return SiteStats(rows=len(rows), numeric=numeric, categorical=categorical)


def count_at_most(values: np.ndarray, threshold: float) -> int:
    """Answer one median-search query: how many of this site's training values (one column, as
    float64 with NaN for missing) are <= threshold."""
    return int(np.count_nonzero(values <= threshold))  # NaN compares False, so missing is not counted


def apply_transform(frame: pd.DataFrame | TypedRows, transform: Transform) -> np.ndarray:
    """Encode typed rows (any split) into float32 features, in transform.feature_names order."""
    numeric = [c for c in transform.order if c in transform.numeric]
    rows = frame if isinstance(frame, TypedRows) else TypedRows.of(
        frame, numeric, [c for c in transform.order if c not in transform.numeric])
    blocks: list[np.ndarray] = []
    if numeric:  # every numeric column at once, element by element as one column at a time would
        rules = [transform.numeric[c] for c in numeric]
        values = rows.floats(numeric)
        values = np.where(np.isnan(values), np.array([r.median for r in rules]), values)
        block = (values - np.array([r.mean for r in rules])) / np.array([r.std for r in rules])
        scaled = dict(zip(numeric, block.T))
    if not transform.categorical and numeric:  # numbers only: the block is the columns in order
        blocks.append(block)
    for column in transform.order if transform.categorical else ():
        if column in transform.numeric:
            blocks.append(scaled[column][:, None])
        else:
            crule = transform.categorical[column]
            cells = [crule.mode if pd.isna(v) else v for v in rows.categories[column].tolist()]
            position = {c: i for i, c in enumerate(crule.categories)}
            onehot = np.zeros((len(cells), len(crule.categories)))
            for row, value in enumerate(cells):
                if value in position:  # an unseen category stays all zeros
                    onehot[row, position[value]] = 1.0
            blocks.append(onehot)
    for column in transform.indicators:
        cells = rows.floats([column])[:, 0] if column in transform.numeric else rows.categories[column]
        blocks.append(pd.isna(cells).astype(np.float64)[:, None])
    if not blocks:
        return np.zeros((len(rows), 0), dtype=np.float32)
    return np.hstack(blocks).astype(np.float32)


# ----- coordinator side -----------------------------------------------------------------------


def merge_stats(stats: Sequence[SiteStats]) -> SiteStats:
    """Add up the sites' aggregates column by column."""
    first = stats[0]
    numeric = {column: reduce(_chan, (s.numeric[column] for s in stats)) for column in first.numeric}
    categorical: dict[str, CategoricalStats] = {}
    for column in first.categorical:
        counts: dict[str, int] = {}
        for s in stats:
            for value, n in s.categorical[column].counts.items():
                counts[value] = counts.get(value, 0) + n
        categorical[column] = CategoricalStats(counts, sum(s.categorical[column].missing for s in stats))
    return SiteStats(rows=sum(s.rows for s in stats), numeric=numeric, categorical=categorical)


def _chan(a: NumericStats, b: NumericStats) -> NumericStats:
    """Two sites' (count, mean, M2) as one (Chan, Golub & LeVeque 1979): exact up to rounding, with
    no difference of large sums."""
    n = a.count + b.count
    if n == 0:
        return NumericStats(0, 0.0, 0.0, a.missing + b.missing)
    delta = b.mean - a.mean
    mean = a.mean + delta * b.count / n
    m2 = a.m2 + b.m2 + delta * delta * a.count * b.count / n
    return NumericStats(n, mean, m2, a.missing + b.missing)


def mean_std(stats: NumericStats) -> tuple[float, float]:
    """Federated mean and population standard deviation from the merged count, mean and M2."""
    return stats.mean, math.sqrt(max(stats.m2, 0.0) / stats.count)


def _order_statistic(k: int, lo: float, hi: float) -> Generator[tuple[float, ...], tuple[int, ...], float]:
    """The smallest value v with count(v) >= k, to within the bracket's width / 2^MEDIAN_ITERATIONS,
    by bisection on pooled counts (no values are sent).

    A generator, so that many searches can share one round trip: it yields the thresholds it needs
    counted and is sent their pooled counts, in the same order.
    """
    width = hi - lo
    for _ in range(60):  # widen the bracket if rounding put the answer just outside it
        below_lo, below_hi = yield (lo, hi)
        if below_lo < k <= below_hi:
            break
        lo, hi, width = lo - width, hi + width, width * 2
    for _ in range(MEDIAN_ITERATIONS):
        mid = (lo + hi) / 2
        (below,) = yield (mid,)
        if below >= k:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2  # the bracket's middle, not its end: the end converges onto one patient's value


class MedianSearch:
    """The pooled median of one column as a resumable search: ask `thresholds`, `feed` their counts.

    Since |median - mean| <= std, the search starts in [mean - std, mean + std]. An even pooled count
    runs two order-statistic searches side by side and averages them.
    """

    def __init__(self, stats: NumericStats) -> None:
        mean, std = mean_std(stats)
        margin = 1e-9 * (1.0 + abs(mean) + std)
        lo, hi = mean - std - margin, mean + std + margin
        n = stats.count
        ranks = [(n + 1) // 2] if n % 2 == 1 else [n // 2, n // 2 + 1]
        self._searches = [_order_statistic(k, lo, hi) for k in ranks]
        self._asked: list[tuple[float, ...] | None] = [next(s) for s in self._searches]
        self._found: list[float] = [0.0] * len(ranks)

    @property
    def done(self) -> bool:
        return all(asked is None for asked in self._asked)

    @property
    def thresholds(self) -> list[float]:
        """The thresholds to count next (empty when done)."""
        return [t for asked in self._asked if asked is not None for t in asked]

    def feed(self, counts: Sequence[int]) -> None:
        """Pooled count of values <= each threshold of `thresholds`, in its order."""
        if len(counts) != len(self.thresholds):
            raise ValueError(f"expected {len(self.thresholds)} counts, got {len(counts)}")
        start = 0
        for i, asked in enumerate(self._asked):
            if asked is None:
                continue
            part = tuple(counts[start:start + len(asked)])
            start += len(asked)
            try:
                self._asked[i] = self._searches[i].send(part)
            except StopIteration as stop:
                self._asked[i], self._found[i] = None, stop.value

    @property
    def median(self) -> float:
        if not self.done:
            raise RuntimeError("the median search has not finished")
        return self._found[0] if len(self._found) == 1 else (self._found[0] + self._found[1]) / 2


def federated_median(stats: NumericStats, count: Callable[[float], int]) -> float:
    """Median of the pooled values; `count(t)` asks every site for count(x <= t) and adds the answers."""
    search = MedianSearch(stats)
    while not search.done:
        search.feed([count(t) for t in search.thresholds])
    return search.median


def fit_medians(types: ColumnTypes, merged: SiteStats,
                count_many: Callable[[dict[str, list[float]]], Mapping[str, Sequence[int]]]) -> dict[str, float]:
    """Medians of every numeric column, all columns' searches advancing together.

    `count_many({column: thresholds})` returns the pooled counts per column: one round trip per
    step for all columns (about 10 in all), not one per column and step. The median is searched
    only for columns with missing training values: elsewhere nothing needs imputing, so no
    threshold counts are asked for (a later row lacking the value gets the mean).
    """
    medians: dict[str, float] = {}
    searches: dict[str, MedianSearch] = {}
    for column in types.numeric:
        stats = merged.numeric[column]
        if stats.count == 0:
            continue  # build_transform reports it
        if stats.missing == 0:
            medians[column] = mean_std(stats)[0]
        else:
            searches[column] = MedianSearch(stats)
    while asked := {c: s.thresholds for c, s in searches.items() if not s.done}:
        counts = count_many(asked)
        for column in asked:
            searches[column].feed(counts[column])
    medians.update({c: s.median for c, s in searches.items()})
    return medians


def _mode(counts: dict[str, int]) -> str:
    """Most frequent category; ties go to the first in sorted order, so every run agrees."""
    ordered = sort_values(set(counts))
    return max(ordered, key=lambda c: (counts[c], -ordered.index(c)))


def build_transform(types: ColumnTypes, merged: SiteStats, medians: dict[str, float],
                    indicators: bool = True) -> Transform:
    """Turn merged aggregates (and the searched medians) into the shared Transform; with
    `indicators`, a column with missing training values also gets a COL__missing 0/1 column."""
    numeric: dict[str, NumericRule] = {}
    for column in types.numeric:
        stats = merged.numeric[column]
        if stats.count == 0:
            raise DataError(f"column '{column}' has no values in any site's training rows; pass --drop {column}")
        mean, std = mean_std(stats)
        if std <= 1e-12 * max(1.0, abs(mean)):
            std = 1.0
        numeric[column] = NumericRule(mean=mean, std=std, median=medians[column])
    categorical: dict[str, CategoricalRule] = {}
    for column in types.categorical:
        counts = merged.categorical[column].counts
        if not counts:
            raise DataError(f"column '{column}' has no values in any site's training rows; pass --drop {column}")
        categorical[column] = CategoricalRule(categories=tuple(sort_values(set(counts))), mode=_mode(counts))
    missing = {c: merged.numeric[c].missing for c in types.numeric}
    missing.update({c: merged.categorical[c].missing for c in types.categorical})
    flagged = tuple(c for c in types.order if indicators and missing.get(c, 0) > 0)
    return Transform(types.order, numeric, categorical, flagged, missing)



# ----- simulation: both sides in one process --------------------------------------------------


def fit_transform(train_frames: Sequence[pd.DataFrame], types: ColumnTypes) -> Transform:
    """Run the protocol over in-memory sites: stats -> merge -> median search -> Transform."""
    merged = merge_stats([site_stats(frame, types) for frame in train_frames])

    values = {c: [f[c].to_numpy(dtype=np.float64) for f in train_frames] for c in types.numeric}

    def count_many(asked: dict[str, list[float]]) -> dict[str, list[int]]:
        return {c: [sum(count_at_most(v, t) for v in values[c]) for t in ts] for c, ts in asked.items()}

    return build_transform(types, merged, fit_medians(types, merged, count_many))


# ----- the wire: aggregates and the transform as JSON-able dicts ------------------------------


def stats_to_json(stats: SiteStats) -> dict[str, Any]:
    """A site's aggregates as plain ints, floats and strings (Python floats survive JSON exactly)."""
    return {
        "rows": stats.rows,
        "numeric": {c: {"count": s.count, "mean": s.mean, "m2": s.m2, "missing": s.missing}
                    for c, s in stats.numeric.items()},
        "categorical": {c: {"counts": dict(s.counts), "missing": s.missing} for c, s in stats.categorical.items()},
    }


def stats_from_json(data: Mapping[str, Any], types: ColumnTypes) -> SiteStats:
    """Read (and check) one site's aggregates for exactly the columns of `types`."""
    numeric = {c: NumericStats(check_count(data["numeric"][c]["count"]), check_number(data["numeric"][c]["mean"]),
                               check_number(data["numeric"][c]["m2"]), check_count(data["numeric"][c]["missing"]))
               for c in types.numeric}
    categorical = {c: CategoricalStats({str(k): check_count(v) for k, v in data["categorical"][c]["counts"].items()},
                                       check_count(data["categorical"][c]["missing"]))
                   for c in types.categorical}
    return SiteStats(check_count(data["rows"]), numeric, categorical)


def transform_to_json(transform: Transform) -> dict[str, Any]:
    """Everything a site needs to apply the transform (unlike to_dict, which describes it)."""
    return {
        "order": list(transform.order),
        "numeric": {c: {"mean": r.mean, "std": r.std, "median": r.median} for c, r in transform.numeric.items()},
        "categorical": {c: {"categories": list(r.categories), "mode": r.mode}
                        for c, r in transform.categorical.items()},
        "indicators": list(transform.indicators),
        "train_missing": dict(transform.train_missing),
    }


def transform_from_json(data: Mapping[str, Any]) -> Transform:
    """The inverse of transform_to_json. Also takes summary.json's `preprocessing` block, which holds
    each input's transform under `encoding`, when it has exactly one table input."""
    if "order" not in data and isinstance(data.get("encoding"), Mapping):
        inputs = dict(data["encoding"])
        if len(inputs) != 1:
            raise ValueError(f"the preprocessing holds {len(inputs)} inputs ({', '.join(inputs)}); pass "
                             "its ['encoding'][NAME] for one of them")
        data = next(iter(inputs.values()))
    numeric = {str(c): NumericRule(check_number(r["mean"]), check_number(r["std"]), check_number(r["median"]))
               for c, r in data["numeric"].items()}
    categorical = {str(c): CategoricalRule(tuple(str(v) for v in r["categories"]), str(r["mode"]))
                   for c, r in data["categorical"].items()}
    order = tuple(str(c) for c in data["order"])
    if set(order) != set(numeric) | set(categorical):
        raise ValueError("the transform's column order does not match its rules")
    return Transform(order, numeric, categorical, tuple(str(c) for c in data["indicators"]),
                     {str(c): check_count(n) for c, n in data["train_missing"].items()})
