"""Decide the task from the label column and encode labels the same way at every site.

The encoding is fitted on the label values of all sites (only the set of distinct values is
needed), so class indices agree across hospitals. Over the network each site sends a
`label_summary` and the coordinator calls `label_from_summaries`: a site keeps its values to itself
when they can only be a regression outcome (many numbers), since those are patients' measurements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.targets import label_rules, reads
from fedcare.data.values import canonical, parse_number, sort_values

MAX_CLASSES = 20
MAX_SHARED_VALUES = 50  # a site with more distinct label values sends only their number


@dataclass(frozen=True)
class LabelEncoding:
    """Task, class names and the value -> class index map (None for regression)."""

    column: str
    task: str  # binary, multiclass, regression, or a registered task following one of their rules
    classes: tuple[str, ...]
    mapping: dict[str, int] | None

    def encode(self, values: Iterable[str]) -> np.ndarray:
        """Encode non-missing label texts to the dtype the task uses."""
        items = list(values)
        if self.mapping is None:
            return np.array([parse_number(v) for v in items], dtype=np.float32)
        code = {v: self.mapping[canonical(v)] for v in set(items)}  # each distinct text once (no sort of texts)
        codes = np.fromiter((code[v] for v in items), dtype=np.int64, count=len(items))
        if self.rules == "binary":
            return np.array(codes, dtype=np.float32)
        return np.array(codes, dtype=np.int64)

    @property
    def rules(self) -> str:
        """The built-in task whose rules this label follows (itself, unless a registered task)."""
        return label_rules(self.task)  # type: ignore[return-value]

    def codes(self, values: Iterable[str]) -> np.ndarray:
        """Integer class codes, for stratifying and label-skew partitioning (classification only)."""
        return self.encode(values).astype(np.int64)

    @property
    def columns(self) -> tuple[str]:
        """The target column(s) a row needs (shared interface with SurvivalEncoding)."""
        return (self.column,)

    def strata(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Class codes of a site's rows to stratify its split on; None for regression."""
        return None if self.mapping is None else self.codes(frame[self.column].tolist())

    def targets(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The named target of a site's rows: `label`, encoded."""
        return {"label": self.encode(frame[self.column].tolist())}

    def to_dict(self) -> dict[str, object]:
        """JSON-able description for the run folder."""
        out: dict[str, object] = {"column": self.column, "task": self.task, "classes": list(self.classes)}
        if self.rules == "binary":
            out["positive_class"] = self.classes[1]
        return out

    def to_json(self) -> dict[str, object]:
        """Everything a site needs to encode its labels (the mapping included)."""
        return {"kind": "label", "column": self.column, "task": self.task, "classes": list(self.classes),
                "mapping": None if self.mapping is None else dict(self.mapping)}

    @classmethod
    def from_json(cls, data: dict) -> LabelEncoding:
        mapping, task = data["mapping"], data["task"]
        if reads(str(task)) not in ("classes", "numbers") or (mapping is None) != (reads(task) == "numbers"):
            raise ValueError(f"not a label encoding: task {task!r}")
        return cls(str(data["column"]), task, tuple(str(c) for c in data["classes"]),
                   None if mapping is None else {str(k): int(v) for k, v in mapping.items()})


def _list(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def infer_label_encoding(column: str, values: Iterable[str], task: str | None) -> LabelEncoding:
    """Infer (or check the requested) task from all sites' non-missing label values."""
    return _named(_infer(column, values, label_rules(task)), task)


def _named(encoding: LabelEncoding, task: str | None) -> LabelEncoding:
    """A registered task's label, encoded by the rules it follows, under its own name."""
    return encoding if task is None or task == encoding.task else replace(encoding, task=task)


def _infer(column: str, values: Iterable[str], task: str | None) -> LabelEncoding:
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


# ----- over the network: each site summarizes its values, the coordinator decides ----------


def _shares_values(task: str | None, numeric: bool, integral: bool, n: int) -> bool:
    """Whether a site's distinct label values could be classes, so the coordinator needs them."""
    if task == "multiclass":
        return True  # declared classes
    if n > MAX_SHARED_VALUES:
        return False
    if task == "binary" or not numeric or n <= 2:
        return True
    return task is None and integral and n <= MAX_CLASSES  # more numbers, or fractions: regression


def label_summary(values: Iterable[str], task: str | None) -> dict[str, object]:
    """Site side: what the coordinator needs from this site's non-missing label values.

    `values` is the sorted distinct canonical values, or None when they can only be a regression
    outcome or exceed MAX_SHARED_VALUES; `first_text` is the first value that is not a number.
    """
    distinct = sort_values({canonical(v) for v in set(values)})
    numbers = [parse_number(v) for v in distinct]
    numeric = all(n is not None for n in numbers)
    integral = numeric and all(float(n).is_integer() for n in numbers)  # type: ignore[arg-type]
    texts = [v for v, n in zip(distinct, numbers) if n is None]
    return {"distinct": len(distinct), "numeric": numeric, "integral": integral,
            "values": distinct if _shares_values(label_rules(task), numeric, integral, len(distinct)) else None,
            "first_text": min(texts) if texts else None}


def label_from_summaries(column: str, summaries: Sequence[tuple[str, dict]], task: str | None) -> LabelEncoding:
    """Coordinator side: the encoding `infer_label_encoding` gives on the union of all sites' values.

    `summaries` = (site_id, label_summary) in site order. When a site withheld its values, it holds
    more than 2 (or more than MAX_SHARED_VALUES) distinct values, which settles the task without them.
    """
    return _named(_from_summaries(column, summaries, label_rules(task)), task)


def _from_summaries(column: str, summaries: Sequence[tuple[str, dict]], task: str | None) -> LabelEncoding:
    if all(s["values"] is not None for _, s in summaries):
        return _infer(column, [str(v) for _, s in summaries for v in s["values"]], task)
    if task == "multiclass":
        site = next(site for site, s in summaries if s["values"] is None)
        raise DataError(f"site '{site}' did not send its label values, which a multiclass task needs; "
                        "check that it runs the same fedcare version")
    known = sort_values({str(v) for _, s in summaries for v in (s["values"] or [])})
    at_least = max([len(known), *(int(s["distinct"]) for _, s in summaries)])
    texts = [(str(s["first_text"]), site) for site, s in summaries if s["first_text"] is not None]
    if task == "binary":
        raise DataError(
            f"task 'binary' needs exactly 2 label values but label '{column}' has at least {at_least}"
            f"{': ' + _list(known) if known else ''}; pass --task multiclass or fix the label"
        )
    if not texts:
        return LabelEncoding(column, "regression", (), None)
    text, site = min(texts)
    if task == "regression":
        raise DataError(
            f"task 'regression' needs a numeric label but label '{column}' holds {text!r}; "
            "fix the value or pick a classification task"
        )
    if any(s["values"] is None and s["numeric"] for _, s in summaries):
        raise DataError(
            f"label '{column}' holds many numbers at some sites but text such as {text!r} at site '{site}'; "
            "fix the text values for a regression, or pass --task multiclass if they are classes"
        )
    raise DataError(
        f"label '{column}' has at least {at_least} distinct non-numeric values (more than "
        f"{MAX_CLASSES}); pass --task multiclass if they really are classes"
    )
