"""The omics input: gene expression (or any other wide block of measurements), one column per gene.

Its own preprocessing, for p ≫ n: every column must be a number (a text cell is refused, naming the
site's row, instead of turning the gene into a category); a site refuses to send any column's values
or counts per value (its TableSite has no categories); each gene is standardised with its federated
mean and population standard deviation; and a missing value is imputed with the federated median
without the missing-indicator column tabular adds (one per gene would double the width of the
data). Its default encoder is the model's own, shared with the other vector inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedcare.data.columns import ColumnTypes
from fedcare.data.inputs.base import InputJob
from fedcare.data.inputs.table import TableFit, TableSite, fit_table, refuse_text_in_numbers


class Omics:
    name = "omics"
    encoder = "vector"
    columns_key = "omics_columns"

    def site(self, columns: Sequence[str], source: str | None, site_id: str) -> TableSite:
        return TableSite(self.name, columns, source, site_id, categories=False)

    def plan_columns(self, job: InputJob) -> ColumnTypes:
        """Every column numeric; one that holds text at some site is refused, naming that site's row."""
        for column in job.columns:
            if any(c[column]["numbers"] < c[column]["present"] for c in job.counts):
                refuse_text_in_numbers(job, column)
        return ColumnTypes(tuple(job.columns), tuple(job.columns), ())

    def fit(self, job: InputJob, planned: ColumnTypes) -> TableFit:
        return fit_table(job, planned, indicators=False)


OMICS = Omics()
