"""Splitting a site's rows by patient: several images (or visits) of one patient all go to the same
split, so no patient is both trained on and tested on. The patients are split as rows would be
(fedcare.data.splitting, stratified by the class of each patient's first row when it can be), and
each split takes every row of its patients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcare.core.errors import DataError
from fedcare.data.splitting import SplitIndices, split_site
from fedcare.data.values import canonical


def split_patients(site_id: str, patients: Sequence[object], labels: np.ndarray | None, test_fraction: float,
                   val_fraction: float, seed: int) -> SplitIndices:
    """Split the site's patients; each split holds the rows of its patients, in row order."""
    if any(p is None for p in patients):
        row = next(i for i, p in enumerate(patients) if p is None)
        raise DataError(f"site '{site_id}': row {row + 1} has no patient id; fill it or drop the row")
    ids = [canonical(p) for p in patients]
    order = list(dict.fromkeys(ids))  # patients in order of their first row
    index = {p: i for i, p in enumerate(order)}
    patient_of_row = np.array([index[p] for p in ids], dtype=np.int64)
    first_row = np.unique(patient_of_row, return_index=True)[1]  # patient i's first row
    by_patient = split_site(site_id, len(order), None if labels is None else labels[first_row], test_fraction,
                            val_fraction, seed)

    def rows(chosen: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(patient_of_row, chosen)).astype(np.int64)

    return SplitIndices(rows(by_patient.train), rows(by_patient.val), rows(by_patient.test))
