"""The tabular input: a hospital's EHR table. Each column is typed from every site's counts (numbers,
or categories when the values are text or the user says so), numbers are imputed with the federated
median (plus a COL__missing indicator where values are missing) and standardised, categories are
imputed with the federated mode and one-hot encoded. Its default encoder is the model's own (linear
or MLP), shared with the other vector inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedcare.data.columns import ColumnTypes, check_categories, check_dates, decide_types, identifier_warning
from fedcare.data.answers import check_count, read_distinct, reading
from fedcare.data.inputs.base import InputJob
from fedcare.data.inputs.table import TableFit, TableSite, fit_table, refuse_text_in_numbers


class Tabular:
    name = "tabular"
    encoder = "vector"
    columns_key = None  # every feature column no other input takes

    def site(self, columns: Sequence[str], source: str | None, site_id: str) -> TableSite:
        return TableSite(self.name, columns, source, site_id)

    def plan_columns(self, job: InputJob) -> ColumnTypes:
        """Type the columns from the counts; check categorical columns' sizes; have a typo's site name its row."""
        types, typos = decide_types(job.columns, job.counts, job.categorical)
        distinct: dict[str, list[dict[str, Any]]] = {c: [] for c in types.categorical}
        if types.categorical:
            for site, answer in job.ask("categories", {"columns": list(types.categorical)}):
                with reading(f"the '{self.name}.categories' answer of site '{site}'", site):
                    for column in types.categorical:
                        part = answer["columns"][column]
                        distinct[column].append({**read_distinct(part), "withheld": check_count(part["withheld"])})
        for column in job.columns:  # in column order, so the first problem is reported, as in one file
            if column in typos:
                refuse_text_in_numbers(job, column)
            if column in distinct:
                check_categories(column, distinct[column])
            if column in types.numeric:
                check_dates(column, [c[column] for c in job.counts])
        return types

    def fit(self, job: InputJob, planned: ColumnTypes) -> TableFit:
        warnings = [w for c in planned.numeric if (w := identifier_warning(c, [n[c] for n in job.counts]))]
        return fit_table(job, planned, indicators=True, warnings=tuple(warnings))


TABULAR = Tabular()
