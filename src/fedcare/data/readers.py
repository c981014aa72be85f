"""Read a site's table from CSV or Parquet into text cells (None = missing).

Everything is read as text first so that column typing is one rule for both formats.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.values import clean_column

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: Path, allow_empty: bool = False) -> pd.DataFrame:
    """Return an object-dtype frame of str/None cells; index = 0-based data row in the file.
    `allow_empty`: a header without rows is a table of no rows (a site without a joined input)."""
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(f"unsupported data file '{path}': use a .csv or .parquet file")
    if not path.is_file():
        raise DataError(f"data file '{path}' not found")
    try:
        if suffix in CSV_SUFFIXES:
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        else:
            raw = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file '{path}' is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read data file '{path}': {first_line}") from None
    if raw.empty and not (allow_empty and len(raw.columns)):
        raise DataError(f"data file '{path}' has no data rows")
    frame = pd.DataFrame({str(col): clean_column(raw[col]) for col in raw.columns}, dtype=object)
    frame.index = pd.RangeIndex(len(frame))
    return frame
