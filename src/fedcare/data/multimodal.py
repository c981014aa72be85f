"""Several files per patient, joined at each site by a patient id (docs/multimodal.md).

The --data file (`main`) holds the outcome and is the tabular input; each further file is one input
kind's: `omics` (a table, every column but the patient and site columns a gene) or `image` (an
image manifest: its `path` column). At a site, every other file's rows are matched to the main
file's patients by the patient column; the result is one row per patient with every input's
columns, and per input which patients have it (`RawSite.present`). A patient may lack any input
but the main one; a site may lack a whole input (its rows of that file are none). A patient found
only in another file has no outcome: it is not an example, and is counted.

Joining happens at the site, on the site's own rows; only the counts below leave it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.manifest import PATH
from fedcare.data.raw import RawSite
from fedcare.data.values import canonical

IMAGE_KIND = "image"


@dataclass(frozen=True)
class InputRows:
    """One input kind's rows at one site, before the join."""

    kind: str
    frame: pd.DataFrame  # text cells (an image manifest's: paths made absolute)
    source: str  # its file's name, for messages


def input_columns(kind: str, frame: pd.DataFrame, patient: str, site: str | None) -> list[str]:
    """The columns that form the input: an image manifest's path column; every other column of a table."""
    if kind == IMAGE_KIND:
        return [PATH]
    return [c for c in frame.columns if c not in (patient, site)]


def _ids(frame: pd.DataFrame, patient: str, source: str, site_id: str) -> list[str]:
    """The file's patient ids at this site, canonical, each once."""
    if patient not in frame.columns:
        raise DataError(f"'{source}' has no patient column '{patient}' (--patient); its columns are: "
                        f"{', '.join(map(str, frame.columns))}")
    values = frame[patient].tolist()
    if any(v is None for v in values):
        row = int(frame.index[next(i for i, v in enumerate(values) if v is None)])
        raise DataError(f"row {row + 2} of '{source}' (site '{site_id}') has no patient id; fill it or drop the row")
    ids = [canonical(str(v)) for v in values]
    seen: set[str] = set()
    for position, pid in enumerate(ids):
        if pid in seen:
            row = int(frame.index[position])
            raise DataError(f"patient '{pid}' appears twice in '{source}' at site '{site_id}' (again in row "
                            f"{row + 2}); a file joined by patient holds one row per patient: merge or drop the row")
        seen.add(pid)
    return ids


def join_site(site_id: str, main: pd.DataFrame, main_source: str, others: Sequence[InputRows], patient: str,
              site: str | None = None) -> tuple[RawSite, dict[str, int]]:
    """One site's patients with every input's columns, and per input kind the patients of its file
    that have no row in the main file (no outcome: not examples)."""
    main_ids = _ids(main, patient, main_source, site_id)
    position = {pid: i for i, pid in enumerate(main_ids)}
    columns: dict[str, pd.Series] = {c: main[c] for c in main.columns}
    inputs: dict[str, tuple[str, ...]] = {}
    present: dict[str, np.ndarray] = {}
    unmatched: dict[str, int] = {}
    for other in others:
        ids = _ids(other.frame, patient, other.source, site_id)
        rows = np.array([position.get(pid, -1) for pid in ids], dtype=np.int64)
        matched = rows >= 0
        if len(ids) and not matched.any():
            raise DataError(f"none of the {len(ids)} patient ids of '{other.source}' at site '{site_id}' matches a "
                            f"patient of '{main_source}' (e.g. '{ids[0]}'); check --patient and that both files are "
                            "this site's")
        unmatched[other.kind] = int((~matched).sum())
        taken = input_columns(other.kind, other.frame, patient, site)
        for column in taken:
            if column in columns:
                raise DataError(f"column '{column}' is in '{other.source}' and in another file of site "
                                f"'{site_id}'; rename one: each column belongs to one input")
            cells = np.full(len(main), None, dtype=object)
            cells[rows[matched]] = other.frame[column].to_numpy(dtype=object)[matched]
            columns[column] = pd.Series(cells, index=main.index, dtype=object)
        inputs[other.kind] = tuple(taken)
        has = np.zeros(len(main), dtype=bool)
        has[rows[matched]] = True
        present[other.kind] = has
    frame = pd.DataFrame(columns, index=main.index, dtype=object)
    return RawSite(site_id, frame, main_source, inputs, present), unmatched


def by_site(frame: pd.DataFrame, column: str, source: str) -> dict[str, pd.DataFrame]:
    """A file's rows per value of the site column (canonical), rows without a site left out."""
    if column not in frame.columns:
        raise DataError(f"'{source}' has no site column '{column}' (--site); every joined file needs it, or give "
                        f"one folder per site; its columns are: {', '.join(map(str, frame.columns))}")
    sites = frame[column].map(lambda v: None if v is None else canonical(str(v)))
    return {str(s): frame[sites == s] for s in dict.fromkeys(sites.dropna())}

