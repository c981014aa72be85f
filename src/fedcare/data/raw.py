"""A site's rows before encoding, with where they came from (for error messages that point at a file row)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedcare.data.sitetable import SiteTable


@dataclass(frozen=True, eq=False)
class RawSite:
    """Text cells (str/None) of one site; frame.index = 0-based data row in `source`. The sites cut
    from one file come as a SiteTable (views of the file's blocks) instead of a DataFrame.

    A site whose patients were joined from several files (fedcare.data.multimodal) also says which
    columns came from which input kind's file (`inputs`) and, per kind, which rows have that input
    (`present`, one bool per row): a kind without an entry is present in every row."""

    site_id: str
    frame: pd.DataFrame | SiteTable
    source: str | None = None  # file name, shown in messages when several files are used
    inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> its file's columns
    present: Mapping[str, np.ndarray] = field(default_factory=dict)  # kind -> which rows have it
