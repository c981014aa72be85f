"""New patients encoded exactly as a run's training rows were: the run's fitted table inputs
(imputation, standardisation, one-hot categories) applied to a table that has no outcome."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.columns import ColumnTypes, typed_frame
from fedcare.data.preprocessing import apply_transform, transform_from_json
from fedcare.data.values import clean_column


def encode_rows(frame: pd.DataFrame, encoding: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Each input's array for the rows of `frame` (cells as text or numbers; extra columns ignored)."""
    cells = pd.DataFrame({str(c): clean_column(frame[c]) for c in frame.columns}, dtype=object)
    out: dict[str, np.ndarray] = {}
    for name, fitted in encoding.items():
        try:
            transform = transform_from_json(fitted)
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"new patients are encoded for table inputs only; the run's '{name}' input is not one") from None
        missing = [c for c in transform.order if c not in cells.columns]
        if missing:
            raise DataError(f"the patients' table lacks column '{missing[0]}', which the run's {name} input "
                            f"was trained on; its columns must include: {', '.join(transform.order)}")
        types = ColumnTypes(transform.order, tuple(c for c in transform.order if c in transform.numeric),
                            tuple(c for c in transform.order if c in transform.categorical))
        typed = typed_frame(cells[list(transform.order)], types, 1)  # new patients: the transform maps any value
        for column in types.numeric:
            bad = typed[column].isna() & cells[column].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"row {row + 1} of the patients' table has '{cells[column].iloc[row]}' in the "
                                f"numeric column '{column}'; give a number or leave the cell empty")
        out[name] = apply_transform(typed, transform)
    return out
