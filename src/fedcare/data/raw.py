"""A site's rows before encoding, with where they came from (for error messages that point at a file row)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True, eq=False)
class RawSite:
    """Text cells (str/None) of one site; frame.index = 0-based data row in `source`."""

    site_id: str
    frame: pd.DataFrame
    source: str | None = None  # file name, shown in messages when several files are used

