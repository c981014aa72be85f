"""Read a site's table from CSV or Parquet into text cells (None = missing).

Everything is read as text first so that column typing is one rule for both formats; a
simulation's one big CSV (`read_table_typed`) has its number columns parsed at reading, by the
same rule, so that its cells are never all Python strings at once.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from fedcare.core.errors import DataError
from fedcare.data.values import clean_column, finite_numbers

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


def read_table_typed(path: Path, text: Collection[str]) -> pd.DataFrame:
    """`read_table`, except that a CSV column not named in `text` whose every present cell is a
    finite number comes back as float64 (NaN = missing), parsed once here: a big file's numbers are
    never held as Python strings (5 million rows x 20 columns would take several GB as text). The
    numbers are those the text rule gives (`clean_column`, then `parse_numbers`), so typing and
    encoding see the same values; a column with any other cell stays text, cell for cell as
    `read_table` gives it. Anything the Arrow reader does not take as a plain CSV (duplicate
    column names, ragged rows, bad UTF-8, an empty file) is read by `read_table`, with its messages."""
    if path.suffix.lower() not in CSV_SUFFIXES or not path.is_file():
        return read_table(path)
    try:
        table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
            column_types=_all_text(path), strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, ValueError):
        return read_table(path)
    names = [str(n) for n in table.column_names]
    if table.num_rows == 0 or len(set(names)) != len(names):
        return read_table(path)
    columns: dict[str, object] = {}
    for name in names:
        cells, table = table.column(0), table.remove_column(0)  # each column's text freed once converted
        numbers = None if name in text else finite_numbers(cells)
        columns[name] = pd.Series(numbers) if numbers is not None else pd.Series(_cleaned(cells), dtype=object)
    frame = pd.DataFrame(columns)
    frame.index = pd.RangeIndex(len(frame))
    pa.default_memory_pool().release_unused()  # the text is gone: give its memory back
    return frame


def _cleaned(cells: pa.ChunkedArray) -> np.ndarray:
    """`clean_column` of a text column, computed on its distinct cells only (Arrow's dictionary
    encoding) and spread over the rows: a site column of 5 million cells is 10,000 strings cleaned
    and held, not 5 million, and equal cells are one object."""
    encoded = cells.combine_chunks().dictionary_encode()
    distinct = clean_column(pd.Series(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object))
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)] if len(distinct) else np.full(len(cells), None)


def _all_text(path: Path) -> dict[str, pa.DataType]:
    """Every column read as a string (the header's names, as the CSV reader splits them)."""
    with pcsv.open_csv(path) as reader:
        return {name: pa.string() for name in reader.schema.names}
