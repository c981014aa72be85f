"""What the round engine needs from a transport: deliver requests and params, bring back updates
and metrics. A transport moves things; it never decides how they are combined."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from fedcare.core.messages import FitRequest, Split
from fedcare.core.params import Params
from fedcare.core.update import Update

SiteMetrics = dict[str, dict[str, float | None]]  # split -> metric -> value


class Transport(Protocol):
    def site_ids(self) -> list[str]: ...

    def fit(self, params: Params, requests: Mapping[str, FitRequest]) -> list[Update]:
        """Send params and each selected site's request; return the validated updates that came back."""
        ...

    def evaluate(self, params: Params, site_ids: Sequence[str], splits: Sequence[Split]) -> dict[str, SiteMetrics]:
        """Metrics of params on each site's own splits."""
        ...

    @property
    def bytes_sent(self) -> int:
        """Bytes of params and updates moved so far, both directions."""
        ...
