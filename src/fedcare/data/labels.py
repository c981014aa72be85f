"""Decide the task from the label column and encode labels the same way at every site.

The encoding is fitted on the label values of all sites (only the set of distinct values is
needed), so class indices agree across hospitals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.dataset import TaskKind
from fedcare.data.values import canonical, parse_number, sort_values

MAX_CLASSES = 20


@dataclass(frozen=True)
class LabelEncoding:
    """Task, class names and the value -> class index map (None for regression)."""

    column: str
    task: TaskKind
    classes: tuple[str, ...]
    mapping: dict[str, int] | None

    def encode(self, values: Iterable[str]) -> np.ndarray:
        """Encode non-missing label texts to the dtype the task uses."""
        items = list(values)
        if self.mapping is None:
            return np.array([parse_number(v) for v in items], dtype=np.float32)
        distinct, inverse = np.unique(np.asarray(items, dtype=object), return_inverse=True)
        codes = np.array([self.mapping[canonical(v)] for v in distinct], dtype=np.int64)[inverse]
        if self.task == "binary":
            return np.array(codes, dtype=np.float32)
        return np.array(codes, dtype=np.int64)

    def codes(self, values: Iterable[str]) -> np.ndarray:
        """Integer class codes, for stratifying and label-skew partitioning (classification only)."""
        return self.encode(values).astype(np.int64)

    @property
    def columns(self) -> tuple[str]:
        """The target column(s) a row needs (shared interface with SurvivalEncoding)."""
        return (self.column,)

    def strata(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Class codes of a site's rows to stratify its split on; None for regression."""
        return None if self.task == "regression" else self.codes(frame[self.column].tolist())

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        """Encoded labels of a site's rows."""
        return self.encode(frame[self.column].tolist())

    def to_dict(self) -> dict[str, object]:
        """JSON-able description for the run folder."""
        out: dict[str, object] = {"column": self.column, "task": self.task, "classes": list(self.classes)}
        if self.task == "binary":
            out["positive_class"] = self.classes[1]
        return out


def _list(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def infer_label_encoding(column: str, values: Iterable[str], task: TaskKind | None) -> LabelEncoding:
    """Infer (or check the requested) task from all sites' non-missing label values."""
    distinct = sort_values({canonical(v) for v in set(values)})
    if len(distinct) < 2:
        only = repr(distinct[0]) if distinct else "no values"
        raise DataError(
            f"label '{column}' has a single value ({only}) across all sites; a model needs at least "
            "two classes: check the label column"
        )
    numbers = [parse_number(v) for v in distinct]
    numeric = all(n is not None for n in numbers)
    integral = numeric and all(float(n).is_integer() for n in numbers)  # type: ignore[arg-type]
    if task is None:
        if len(distinct) == 2:
            task = "binary"
        elif (integral or not numeric) and len(distinct) <= MAX_CLASSES:
            task = "multiclass"
        elif numeric:
            task = "regression"
        else:
            raise DataError(
                f"label '{column}' has {len(distinct)} distinct non-numeric values (more than "
                f"{MAX_CLASSES}); pass --task multiclass if they really are classes"
            )
    if task == "binary" and len(distinct) != 2:
        raise DataError(
            f"task 'binary' needs exactly 2 label values but label '{column}' has {len(distinct)}: "
            f"{_list(distinct)}; pass --task multiclass or fix the label"
        )
    if task == "regression":
        if not numeric:
            bad = next(v for v, n in zip(distinct, numbers) if n is None)
            raise DataError(
                f"task 'regression' needs a numeric label but label '{column}' holds {bad!r}; "
                "fix the value or pick a classification task"
            )
        return LabelEncoding(column, "regression", (), None)
    if task not in ("binary", "multiclass"):
        raise ConfigError(f"unknown task '{task}': use binary, multiclass or regression")
    return LabelEncoding(column, task, tuple(distinct), {v: i for i, v in enumerate(distinct)})
