"""What the table-based inputs (tabular, omics) share: a site's half, which types, counts and encodes
its own columns, and the coordinator's fit of one Transform from the sites' aggregates.

What leaves a site, from its TRAINING rows only (see fedcare.data.preprocessing): per numeric column
its count, mean, M2 and missing count; per categorical column its rows per category and missing
count; during a median search, counts of values below thresholds (at most THRESHOLD_BUDGET per column
and run). Before the split, for the columns the coordinator asks about: the sorted distinct values
of a categorical column (at most 50, else only their number), and nothing but an error naming the
row for a number column holding text. Values fewer than `min_count` of the site's rows hold are
"(other)" in every answer and in the encoding (fedcare.data.columns.suppress_rare).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.core.errors import DataError
from fedcare.data.answers import AGAIN, check_count, check_number, reading
from fedcare.data.columns import MIN_CATEGORY_COUNT, ColumnTypes, TypedRows, check_numbers, distinct_summary, typed_rows
from fedcare.data.dataset import SPLITS, InputShape
from fedcare.data.inputs.base import InputJob
from fedcare.data.sitetable import SiteTable
from fedcare.data.preprocessing import (MEDIAN_ITERATIONS, Transform, apply_transform, build_transform, count_at_most, fit_medians,
                                        merge_stats, site_stats, stats_from_json, stats_to_json, transform_from_json,
                                        transform_to_json)
from fedcare.data.splitting import SplitIndices

THRESHOLD_BUDGET = 4 * (MEDIAN_ITERATIONS + 2)  # an honest search asks 10 (20 for an even count), rarely more


@dataclass(frozen=True)
class TableFit:
    """A table input's fitted Transform."""

    kind: str
    transform: Transform
    warnings: tuple[str, ...] = ()  # what the user should see about these columns (summary.json's warnings)

    @property
    def shape(self) -> InputShape:
        features = self.transform.feature_names
        return InputShape(self.kind, (len(features),), features)

    def to_json(self) -> dict[str, Any]:
        return transform_to_json(self.transform)

    def describe(self) -> dict[str, Any]:
        return {**self.transform.to_dict(), **({"warnings": list(self.warnings)} if self.warnings else {})}


class TableSite:
    """A table input at one site: its columns of the site's rows, typed, summarised and encoded there.
    With `categories` False (omics) the site never sends a column's values or counts per value: it
    refuses the 'categories' question and any column typed categorical."""

    def __init__(self, name: str, columns: Sequence[str], source: str | None, site_id: str,
                 categories: bool = True, min_count: int = MIN_CATEGORY_COUNT,
                 threshold_budget: int = THRESHOLD_BUDGET) -> None:
        self.name, self.columns, self.source, self.site_id = name, tuple(columns), source, site_id
        self.categories = categories
        self.min_count = min_count  # the site's own small-cell limit: no question lowers it
        self.threshold_budget = threshold_budget  # threshold counts it answers per column and run
        self._asked: dict[str, int] = {}
        self._typed: TypedRows | None = None
        self._numeric: tuple[str, ...] = ()  # the columns typed numeric, which the median's counts may name
        self._train_rows: np.ndarray | None = None
        self._train: dict[str, np.ndarray] = {}  # their training values, taken when first counted

    def answer(self, phase: str, question: Mapping[str, Any], rows: SiteTable,
               split: SplitIndices | None) -> dict:
        handlers = {"categories": self._categories, "locate": self._locate, "stats": self._stats,
                    "counts": self._counts}
        if phase not in handlers:
            raise DataError(f"site '{self.site_id}' got an unknown question '{self.name}.{phase}'; {AGAIN}")
        return handlers[phase](question, rows, split)

    def _own(self, phase: str, columns: Sequence[str]) -> None:
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise DataError(f"site '{self.site_id}' was asked '{self.name}.{phase}' about '{unknown[0]}', which is "
                            f"not a column of its {self.name} input; {AGAIN}")

    def _what(self, phase: str) -> str:
        return f"the '{self.name}.{phase}' question to site '{self.site_id}'"

    def _numbers_only(self, phase: str) -> DataError:
        return DataError(f"site '{self.site_id}' was asked '{self.name}.{phase}' for the values of its {self.name} "
                         f"columns, which it never sends; {AGAIN}")

    def _categories(self, question: Mapping[str, Any], rows: SiteTable, split: SplitIndices | None) -> dict:
        if not self.categories:
            raise self._numbers_only("categories")
        with reading(self._what("categories")):
            columns = [str(c) for c in question["columns"]]
        self._own("categories", columns)
        return {"columns": distinct_summary(rows, columns, self.min_count)}

    def _locate(self, question: Mapping[str, Any], rows: SiteTable, split: SplitIndices | None) -> dict:
        with reading(self._what("locate")):
            column, name_source = str(question["column"]), bool(question["name_source"])
        self._own("locate", [column])
        check_numbers(rows, column, self.source if name_source else None)
        return {"found": False}

    def _stats(self, question: Mapping[str, Any], rows: SiteTable, split: SplitIndices | None) -> dict:
        if split is None:
            raise DataError(f"site '{self.site_id}' got '{self.name}.stats' before 'split'; {AGAIN}")
        with reading(self._what("stats")):
            types = ColumnTypes.from_json(question["types"])
        self._own("stats", types.order)
        if types.categorical and not self.categories:
            raise self._numbers_only("stats")
        self._typed = typed_rows(rows, types, self.min_count)
        self._numeric, self._train_rows, self._train = types.numeric, split.train, {}
        return {"stats": stats_to_json(site_stats(self._typed.take(split.train), types))}

    def _counts(self, question: Mapping[str, Any], rows: SiteTable, split: SplitIndices | None) -> dict:
        if self._typed is None:
            raise DataError(f"site '{self.site_id}' got '{self.name}.counts' before '{self.name}.stats'; {AGAIN}")
        with reading(self._what("counts")):
            asked = {str(c): [check_number(t) for t in ts] for c, ts in question["thresholds"].items()}
            unknown = [c for c in asked if c not in self._numeric]
            if unknown:
                raise ValueError(f"'{unknown[0]}' is not a numeric column of the {self.name} input")
        for column, thresholds in asked.items():
            self._asked[column] = self._asked.get(column, 0) + len(thresholds)
            if self._asked[column] > self.threshold_budget:
                raise DataError(f"site '{self.site_id}' was asked for more than {self.threshold_budget} threshold "
                                f"counts of column '{column}' in this run, more than a median search needs; it "
                                "answers no more (counts at many thresholds would locate its patients' values)")
        if not self._train:  # most runs never search a median: no copy of the training values until one does
            values = self._typed.floats(self._numeric)[self._train_rows]
            self._train = dict(zip(self._numeric, values.T))
        return {"counts": {c: [count_at_most(self._train[c], t) for t in ts] for c, ts in asked.items()}}

    def encode(self, fitted: Mapping[str, Any], split: SplitIndices) -> dict[str, np.ndarray]:
        if self._typed is None:
            raise DataError(f"site '{self.site_id}' got 'finish' before '{self.name}.stats'; {AGAIN}")
        with reading(self._what("finish")):
            transform = transform_from_json(fitted)
            if not set(transform.order) <= set(self._typed.columns):
                raise ValueError(f"the {self.name} transform names columns the site was not asked to type")
        encoded = apply_transform(self._typed, transform)  # row by row: the same as encoding each split
        return {part: encoded[getattr(split, part)] for part in SPLITS}


def fit_table(job: InputJob, types: ColumnTypes, indicators: bool, warnings: tuple[str, ...] = ()) -> TableFit:
    """The sites send aggregates of their training rows; the median search; one Transform."""
    stats = []
    for site, answer in job.ask("stats", {"types": types.to_json()}):
        with reading(f"the '{job.name}.stats' answer of site '{site}'", site):
            stats.append(stats_from_json(answer["stats"], types))
            if job.train_rows is not None and stats[-1].rows != job.train_rows[site]:
                raise ValueError("its aggregates do not count its training rows")
    merged = merge_stats(stats)

    def count_many(asked: dict[str, list[float]]) -> dict[str, list[int]]:
        totals = {c: [0] * len(ts) for c, ts in asked.items()}
        for site, answer in job.ask("counts", {"thresholds": asked}):
            with reading(f"the '{job.name}.counts' answer of site '{site}'", site):
                for column, thresholds in asked.items():
                    counts = answer["counts"][column]
                    if len(counts) != len(thresholds):
                        raise ValueError(f"{len(counts)} counts for {len(thresholds)} thresholds")
                    totals[column] = [t + check_count(n) for t, n in zip(totals[column], counts)]
        return totals

    return TableFit(job.name, build_transform(types, merged, fit_medians(types, merged, count_many), indicators),
                    warnings)


def refuse_text_in_numbers(job: InputJob, column: str) -> None:
    """A column whose cells are numbers except a few: the site holding such a cell names its row
    (in-process, that error is what the caller sees); over the network its agent shows it, and this
    names the site."""
    job.tell("locate", {"column": column, "name_source": job.name_source})
    site, counts = next((s, c[column]) for s, c in zip(job.site_ids, job.counts)
                        if c[column]["numbers"] < c[column]["present"])
    raise DataError(f"column '{column}' is numeric but site '{site}' holds "
                    f"{counts['present'] - counts['numbers']} values that are not numbers (its log names "
                    f"the rows); fix them or pass --categorical {column}")
