"""Raw cell values: which tokens mean 'missing', and one canonical spelling per number.

Sites export the same code as '1' or '1.0' (CSV vs. float columns); categories and labels must
not split on that, so they are compared in canonical form.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

MISSING_TOKENS: frozenset[str] = frozenset({"", "na", "n/a", "?", "nan", "null", "none"})


def clean_column(column: pd.Series) -> np.ndarray:
    """Stripped text of each cell, or None where the cell is empty, NaN or a missing token."""
    missing = column.isna().to_numpy().copy()
    text = column.astype(str).str.strip()
    missing |= text.str.casefold().isin(MISSING_TOKENS).to_numpy()
    out = text.to_numpy(dtype=object)
    out[missing] = None
    return out


def parse_numbers(cells: pd.Series) -> np.ndarray:
    """`parse_number` for a column of text/None cells: float64, NaN where missing or not a number."""
    numbers = np.array(pd.to_numeric(cells, errors="coerce"), dtype=np.float64)
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers


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
