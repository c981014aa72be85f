"""Raw cell values: which tokens mean 'missing', and one canonical spelling per number.

Sites export the same code as '1' or '1.0' (CSV vs. float columns); categories and labels must
not split on that, so they are compared in canonical form.
"""

from __future__ import annotations

import math

import pandas as pd

MISSING_TOKENS: frozenset[str] = frozenset({"", "na", "n/a", "?", "nan", "null", "none"})


def clean(value: object) -> str | None:
    """Return the stripped text of a cell, or None when it is a missing token."""
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            if pd.isna(value) is True:  # None, NaN, NaT, pd.NA from Parquet columns
                return None
        except (TypeError, ValueError):
            pass
    text = str(value).strip()
    return None if text.casefold() in MISSING_TOKENS else text


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
