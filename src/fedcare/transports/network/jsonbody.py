"""Strict JSON for what sites send: every number finite and of sane size, nesting shallow.

Python's `json` accepts `1e400` (as inf), 4,000-digit integers and nesting until the interpreter's
recursion limit; each of those either reaches the run as a value nothing downstream expects or
fails later with an error the site never sees. Here they are refused on arrival, with one line.
"""

from __future__ import annotations

import json
import math

MAX_DEPTH = 32          # preparation answers nest 4 levels deep; metric answers 3
MAX_INT_DIGITS = 18     # counts and sizes fit in a signed 64-bit integer


class BadJson(ValueError):
    """A body that is not the strict JSON a site must send; the message says what is wrong."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadJson(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is out of range")
    return value


def _constant(token: str) -> None:
    raise BadJson(f"{token} is not allowed")


def parse(body: bytes) -> object:
    """The decoded body; BadJson with one line when it is not valid, strict JSON."""
    try:
        value = json.loads(body, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except BadJson:
        raise
    except RecursionError:
        raise BadJson(f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(str(exc).splitlines()[0][:200]) from None
    _check_depth(value)
    return value


def _check_depth(value: object) -> None:
    level = [value]
    for _ in range(MAX_DEPTH + 1):
        level = [v for item in level if isinstance(item, (dict, list))
                 for v in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return
    raise BadJson(f"nested deeper than {MAX_DEPTH} levels")
