"""What every config section shares: typed, frozen, unknown keys refused, and a hook for the rules
that involve other sections."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig


class Section(BaseModel):
    """One capability's keys. Each key is also a flat config key (and a CLI flag): its field name,
    or its alias where the flat key names the capability itself (`model: mlp`, `algorithm: fedavg`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def check(self, config: FederationConfig) -> None:
        """Refuse combinations this capability cannot honour, with one line (a ValueError)."""


def one_or_many(value: object) -> object:
    """A single value or path where a list is expected: `data: file.csv`, `hidden: 32`."""
    if isinstance(value, (str, int, os.PathLike)):
        value = (value,)
    if isinstance(value, (list, tuple)):
        return tuple(os.fspath(x) if isinstance(x, os.PathLike) else x for x in value)
    return value
