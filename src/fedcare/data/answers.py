"""Reading the questions and answers that data preparation exchanges: anything malformed becomes one
clear DataError, and every count, number and list is checked before it is used."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

from fedcare.core.errors import DataError

AGAIN = "check that the coordinator and the site run the same fedcare version"


class SiteAnswerError(DataError):
    """One site's answer cannot be read: the coordinator may go on without that site (`site`)."""

    def __init__(self, message: str, site: str):
        super().__init__(message)
        self.site = site


@contextlib.contextmanager
def reading(what: str, site: str | None = None) -> Iterator[None]:
    """Turn a malformed question or answer into one DataError; with `site`, the answer of that site."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        message = f"{what} is malformed ({detail}); {AGAIN}"
        raise (DataError(message) if site is None else SiteAnswerError(message, site)) from None


def check_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def check_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def strings(message: Mapping[str, Any], key: str) -> list[str]:
    value = message[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{key}' should be a list of strings")
    return value


def optional_text(message: Mapping[str, Any], key: str) -> str | None:
    value = message[key]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{key}' should be a string or null")
    return value


def read_distinct(data: Any) -> dict[str, Any]:
    """A site's distinct values (or only their number): categories, event values."""
    values = data["values"]
    if values is not None and not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
        raise ValueError("'values' should be a list of strings or null")
    return {"distinct": check_count(data["distinct"]), "values": values}
