"""What an input kind is: a kind of patient data (an EHR table, gene expression, later images) with its
own reader, its own federated preprocessing and its own default encoder.

Preparation asks each input its own questions, under its own name (`tabular.stats`, `omics.counts`):

  coordinator side  InputKind.plan_columns (before the sites split their rows: decide what each
                    column is) and InputKind.fit (after: merge the sites' aggregates of their
                    training rows into what every site applies);
  site side         SiteInput.answer (aggregates of the site's own rows, never rows) and
                    SiteInput.encode (apply the fitted preprocessing to every split, locally).

A new kind is a new module with these two halves, registered in fedcare.data.inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedcare.data.dataset import DataSpec, InputShape
from fedcare.data.sitetable import SiteTable
from fedcare.data.splitting import SplitIndices

Answers = list[tuple[str, Mapping[str, Any]]]
"""Every site's answer to one question, in the coordinator's order of sites."""
@dataclass(frozen=True)
class InputJob:
    """What the coordinator knows when it prepares one input."""

    name: str                                  # the input's name (its kind's name)
    columns: tuple[str, ...]                   # its columns in the sites' table, in file order
    counts: Sequence[Mapping[str, Mapping[str, int]]]  # per site: per column, cells present and numbers
    site_ids: Sequence[str]
    categorical: tuple[str, ...]               # columns the user declared categorical
    name_source: bool                          # whether a site's error may name its file
    ask: Callable[[str, dict], Answers]        # this input's question to every site
    tell: Callable[[str, dict], object]        # the same, when only a site's error matters (no answer read)
    train_rows: Mapping[str, int] | None = None  # each site's training rows, once the sites have split
    spec: DataSpec | None = None                # the data section (an input's own settings: image_size)


class Fitted(Protocol):
    """An input's fitted preprocessing."""

    @property
    def shape(self) -> InputShape: ...

    def to_json(self) -> dict[str, Any]:
        """Everything a site needs to encode its rows."""
        ...

    def describe(self) -> dict[str, Any]:
        """Its entries in summary.json's `preprocessing` (lists and mappings merge across inputs)."""
        ...


class SiteInput(Protocol):
    """One input at one site: answers the coordinator's questions about its own rows."""

    def answer(self, phase: str, question: Mapping[str, Any], rows: SiteTable,
               split: SplitIndices | None) -> dict: ...

    def encode(self, fitted: Mapping[str, Any], split: SplitIndices) -> dict[str, np.ndarray]:
        """The input's array for each split, encoded at the site."""
        ...


class InputKind(Protocol):
    name: str
    encoder: str  # the learning layer's default encoder: "vector" = fused with the other vector inputs
    columns_key: str | None  # the data-section key naming the table columns it takes (None: the rest)

    def site(self, columns: Sequence[str], source: str | None, site_id: str) -> SiteInput: ...

    def plan_columns(self, job: InputJob) -> Any:
        """Before the split: decide what each column is (asking the sites what it takes)."""
        ...

    def fit(self, job: InputJob, planned: Any) -> Fitted:
        """After the split: fit the preprocessing from the sites' aggregates of their training rows."""
        ...
