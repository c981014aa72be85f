"""What the round engine needs from a transport: deliver requests and params, bring back updates
and metrics. A transport moves things; it never decides how they are combined."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedcare.core.messages import FitRequest, Split
from fedcare.core.params import Params
from fedcare.core.update import Update

SiteMetrics = dict[str, dict[str, float | None]]  # split -> metric -> value


@dataclass(frozen=True)
class FitResult:
    """The validated updates that came back, and the sites whose update was refused, with why."""

    updates: list[Update]
    refused: dict[str, str] = field(default_factory=dict)


class Transport(Protocol):
    def site_ids(self) -> list[str]: ...

    def fit(self, params: Params, requests: Mapping[str, FitRequest], extras: Params | None = None) -> FitResult:
        """Send params and each selected site's request; return the validated updates that came back
        (an update that fails validation is refused, not aggregated, and the round goes on).

        `extras` are arrays the strategy broadcasts beside the params (SCAFFOLD's `control/<name>`).
        Params and extras travel as one message, and each update must hold exactly that message's
        names, shapes and dtypes. The engine passes `extras` only when there are some."""
        ...

    def evaluate(self, params: Params, site_ids: Sequence[str], splits: Sequence[Split]) -> dict[str, SiteMetrics]:
        """Metrics of params on each site's own splits."""
        ...

    @property
    def bytes_sent(self) -> int:
        """Bytes of params and updates moved so far, both directions."""
        ...

    @property
    def bytes_upload(self) -> int:
        """The part of bytes_sent the sites sent: updates (and their side of a secure round)."""
        ...
