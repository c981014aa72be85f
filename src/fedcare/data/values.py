"""Raw cell values: which tokens mean 'missing', and one canonical spelling per number.

Sites export the same code as '1' or '1.0' (CSV vs. float columns); categories and labels must
not split on that, so they are compared in canonical form.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MISSING_TOKENS: frozenset[str] = frozenset({"", "na", "n/a", "?", "nan", "null", "none"})
_LONGEST_TOKEN = max(map(len, MISSING_TOKENS))


def clean_column(column: pd.Series) -> np.ndarray:
    """Stripped text of each cell, or None where the cell is empty, NaN or a missing token."""
    missing = column.isna().to_numpy().copy()
    text = column.astype(str).str.strip()
    short = (text.str.len() <= _LONGEST_TOKEN).to_numpy()  # only short cells can be a token: casefold those
    missing[short] |= text[short].str.casefold().isin(MISSING_TOKENS).to_numpy()
    out = text.to_numpy(dtype=object)
    out[missing] = None
    return out


_PY_STRIP = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.strip() removes from ASCII text


def finite_numbers(cells: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A text column (Arrow strings) as float64 with NaN for missing, when every cell is ASCII and,
    after `clean_column`'s rule (stripped, missing tokens), missing or a finite number; else None
    (the column stays text). At least one cell must be a number: a column of missing cells only is
    typed as text, as `decide_types` does."""
    values = number_cells(cells)
    return None if values is None or np.isnan(values).all() else values


def number_cells(cells: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """`finite_numbers` without its last rule, for one block of a column read block by block: the
    block's cells as float64 (NaN = missing, and only then), even when every cell is missing; None
    when a cell is neither missing nor a finite number."""
    try:  # the usual column: every cell a bare finite number (no space, nothing missing), one cast
        values = pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False)
        if np.isfinite(values).all():  # NaN could be a cell '-nan', which the rule below says is text
            return values
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    if not pc.all(pc.string_is_ascii(cells)).as_py():  # ASCII: strip and lower-case are Python's
        return None
    text = pc.utf8_trim(cells, _PY_STRIP)
    missing = pc.is_in(pc.utf8_lower(text), value_set=pa.array(sorted(MISSING_TOKENS)))
    try:
        numbers = pc.cast(pc.if_else(missing, pa.scalar(None, pa.string()), text), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    values = numbers.to_numpy(zero_copy_only=False)  # null: NaN
    if not np.isfinite(values[~missing.to_numpy(zero_copy_only=False)]).all():
        return None  # 'inf' is not a number by parse_number's rule: the column stays text
    return values


def parse_numbers(cells: pd.Series | pd.DataFrame | np.ndarray) -> np.ndarray:
    """`parse_number` for a column (1-D, a Series or an array) or a frame (2-D) of text/None cells:
    float64, NaN where missing or not a number. One vectorised conversion (Arrow's) when every cell
    is a number or missing, the usual case, so a site's columns cost one pass; a column holding
    anything Arrow does not read as a number is parsed cell by cell with `parse_number`, the rule
    that decides."""
    array = isinstance(cells, np.ndarray)
    floats = np.asarray(cells.dtype == np.float64 if array else cells.dtypes == np.float64)
    if floats.all():  # parsed at reading (fedcare.data.readers.read_table_typed)
        numbers = np.array(cells, dtype=np.float64) if array else cells.to_numpy(dtype=np.float64, copy=True)
        numbers[~np.isfinite(numbers)] = np.nan
        return numbers
    if floats.any():
        numbers = np.empty(cells.shape)
        numbers[:, floats] = parse_numbers(cells.iloc[:, np.flatnonzero(floats)])
        numbers[:, ~floats] = parse_numbers(cells.iloc[:, np.flatnonzero(~floats)])
        return numbers
    values = np.asarray(cells if array else cells.to_numpy(dtype=object), dtype=object)
    try:
        flat = pc.cast(pa.array(values.reshape(-1), type=pa.string()), pa.float64())
        numbers = flat.to_numpy(zero_copy_only=False, writable=True).reshape(values.shape)  # null: NaN
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # some cell is text: only its column takes the slow path
        if values.ndim == 2:
            return np.column_stack([parse_numbers(cells.iloc[:, i]) for i in range(values.shape[1])])
        parsed = (None if v is None else parse_number(str(v)) for v in values)
        numbers = np.array([np.nan if n is None else n for n in parsed], dtype=np.float64)
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers


def present_cells(cells: pd.DataFrame) -> np.ndarray:
    """Which cells hold a value: text cells are not None, numbers read as such are not NaN."""
    floats = np.asarray(cells.dtypes == np.float64)
    if floats.all():
        return ~np.isnan(cells.to_numpy(dtype=np.float64))
    if not floats.any():
        return ~np.equal(cells.to_numpy(dtype=object), None)
    out = np.empty(cells.shape, dtype=bool)
    out[:, floats] = cells.iloc[:, np.flatnonzero(floats)].notna().to_numpy()
    out[:, ~floats] = ~np.equal(cells.iloc[:, np.flatnonzero(~floats)].to_numpy(dtype=object), None)
    return out


def parse_number(text: str) -> float | None:
    """Parse a finite number, else None (so 'inf' counts as garbage, not as a value)."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def canonical(text: str) -> str:
    """Spell integral numbers like '1.0' as '1' so categories agree across sites."""
    number = parse_number(text)
    if number is not None and number.is_integer() and not text.lstrip("+-").isdigit():
        return str(int(number))
    return text


def sort_values(values: set[str] | list[str]) -> list[str]:
    """Sort numerically when every value is a number (so '10' follows '2'), else as text."""
    items = list(values)
    numbers = [parse_number(v) for v in items]
    if items and all(n is not None for n in numbers):
        return [v for _, v in sorted(zip(numbers, items), key=lambda p: (p[0], p[1]))]
    return sorted(items)
