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
from fedcare.data.values import clean_column, number_cells

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


BLOCK_BYTES = 1 << 24  # how much of a CSV's text `read_table_typed` holds at once


def read_table_typed(path: Path, text: Collection[str], block_bytes: int = BLOCK_BYTES) -> pd.DataFrame:
    """`read_table`, except that a CSV column not named in `text` whose every present cell is a
    finite number comes back as float64 (NaN = missing), parsed once here: a big file's numbers are
    never held as Python strings (5 million rows x 20 columns would take several GB as text). The
    numbers are those the text rule gives (`clean_column`, then `parse_numbers`), so typing and
    encoding see the same values; a column with any other cell stays text, cell for cell as
    `read_table` gives it. Anything the Arrow reader does not take as a plain CSV (duplicate
    column names, ragged rows, bad UTF-8, an empty file) is read by `read_table`, with its messages.
    The file is read `block_bytes` at a time and each block's number columns parsed at once, so its
    text is never held whole (1.4 GB for 5 million rows); a column found to hold text only in a
    later block has its text read again, on its own."""
    if path.suffix.lower() not in CSV_SUFFIXES or not path.is_file():
        return read_table(path)
    try:
        names, block, numbers, cells = _read_blocks(path, text, block_bytes)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, ValueError):
        return read_table(path)
    if names is None:
        return read_table(path)
    again = [n for n in names if n not in cells and n not in numbers]  # text seen after its first block
    if again:
        try:
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(again, pa.string()), include_columns=again, strings_can_be_null=False))
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError, ValueError):
            return read_table(path)
        cells.update({n: table.column(n).chunks for n in again})
        del table
    columns: dict[str, pd.Series] = {}
    for name in names:
        if name in numbers:  # a view of the one block: no second copy of the numbers
            columns[name] = pd.Series(block[:, numbers[name]], copy=False)
        else:
            columns[name] = pd.Series(_cleaned(pa.chunked_array(cells.pop(name), pa.string())), dtype=object,
                                      copy=False)
    frame = pd.DataFrame(columns, copy=False)  # the columns as they are
    frame.index = pd.RangeIndex(len(frame))
    pa.default_memory_pool().release_unused()  # the text is gone: give its memory back
    return frame


def _read_blocks(path: Path, text: Collection[str], block_bytes: int
                 ) -> tuple[list[str] | None, np.ndarray, dict[str, int], dict[str, list[pa.Array]]]:
    """The CSV block by block into one (rows, columns) float64 block, in the order of the columns not
    named in `text` (`numbers`: column -> its position, for those whose every block was numbers), and
    the text blocks (`cells`) of the columns that were text from the first block; a column in neither
    turned to text later (or held only missing cells) and must be read again. The block grows in
    place (realloc), so it is never held twice. `names` is None when the file has no rows or repeats
    a column name (`read_table` then decides)."""
    options = pcsv.ReadOptions(block_size=block_bytes, use_threads=False)  # one block parsed at a time
    with open(path, "rb") as raw, pcsv.open_csv(raw, read_options=options) as probe:
        header = [str(n) for n in probe.schema.names]
    if len(set(header)) != len(header):
        return None, np.empty((0, 0)), {}, {}
    candidates = [n for n in header if n not in text]
    numbers = {n: k for k, n in enumerate(candidates)}
    cells: dict[str, list[pa.Array]] = {n: [] for n in header if n in text}
    found = dict.fromkeys(numbers, False)  # whether a column had a number yet (not only missing cells)
    block = np.empty((0, len(candidates)))
    rows, first = 0, True
    # A Python file, not Arrow's: Arrow's own file reads ahead of the parser (600 MB more here).
    with open(path, "rb") as raw, pcsv.open_csv(raw, read_options=options, convert_options=pcsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False)) as reader:
        for batch in reader:
            end = rows + batch.num_rows
            if end > len(block):  # grow by half at least: few reallocations, each moving no data
                block.resize((max(end, len(block) * 3 // 2), len(candidates)), refcheck=False)
            for i, name in enumerate(header):
                if name in cells:
                    cells[name].append(batch.column(i))
                elif name in numbers:
                    values = number_cells(batch.column(i))
                    if values is None:
                        del numbers[name]
                        if first:  # text from the start: keep its blocks as text
                            cells[name] = [batch.column(i)]
                    else:
                        block[rows:end, numbers[name]] = values
                        found[name] = found[name] or not np.isnan(values).all()
            rows, first = end, first and batch.num_rows == 0
            del batch
    if rows == 0:
        return None, block, {}, {}
    block.resize((rows, len(candidates)), refcheck=False)
    numbers = {n: k for n, k in numbers.items() if found[n]}  # only missing cells: text, as `read_table` gives it
    return header, block, numbers, cells


def _cleaned(cells: pa.ChunkedArray) -> np.ndarray:
    """`clean_column` of a text column, computed on its distinct cells only (Arrow's dictionary
    encoding) and spread over the rows: a site column of 5 million cells is 10,000 strings cleaned
    and held, not 5 million, and equal cells are one object."""
    encoded = cells.combine_chunks().dictionary_encode()
    distinct = clean_column(pd.Series(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object))
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)] if len(distinct) else np.full(len(cells), None)
