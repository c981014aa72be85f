"""The bundled UCI Heart Disease files, read the way FLamby's Fed-Heart-Disease reads them.

Rows are returned as text cells so the shared pipeline types, splits and encodes them.
"""

from __future__ import annotations

import io
from importlib import resources

import pandas as pd

from fedcare.data.values import clean_column

SITES: tuple[str, ...] = ("cleveland", "hungarian", "switzerland", "va")
COLUMNS: tuple[str, ...] = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num",
)
DROPPED: tuple[str, ...] = ("slope", "ca", "thal")  # mostly missing outside Cleveland (FLamby drops them)
CATEGORICAL: tuple[str, ...] = ("cp", "restecg")
LABEL = "num"


def _read_file(site: str) -> pd.DataFrame:
    """The institution's file as text cells, '?' and all."""
    text = resources.files(__name__).joinpath(f"processed.{site}.data").read_text(encoding="utf-8")
    return pd.read_csv(io.StringIO(text), header=None, names=list(COLUMNS), dtype=str,
                       keep_default_na=False, na_filter=False)


def read_site(site: str) -> tuple[pd.DataFrame, int]:
    """One institution's rows after dropping FLamby's columns and rows with a missing value.

    Returns the frame (index = 0-based row in the file) and how many rows were dropped.
    """
    raw = _read_file(site).drop(columns=list(DROPPED))
    cells = pd.DataFrame({c: clean_column(raw[c]) for c in raw.columns}, dtype=object)
    complete = cells[cells.notna().all(axis=1)]
    return complete, len(cells) - len(complete)


def hospital_table(site: str) -> pd.DataFrame:
    """One institution's file as a hospital would export it: every column, missing cells empty, and
    the outcome as `disease` (1 when num > 0, as FLamby encodes it) instead of `num`. For demos and
    tests of a site's own CSV; nothing is dropped or imputed here."""
    raw = _read_file(site)
    table = raw.drop(columns=[LABEL]).replace("?", "")
    table["disease"] = (raw[LABEL].astype(int) > 0).astype(int)
    return table
