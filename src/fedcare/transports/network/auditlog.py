"""Refusals into the audit log, counted rather than stored one by one.

Anyone who can reach the port can send requests without a credential; storing one row per request,
with the whole path, let 2,000 such requests add 28 MB to the coordinator's database. A refusal is
written once per kind (who, status, reason) and window; the repeats within the window are counted
and the count is written with the next row of that kind (or when the log is read). Paths and
reasons are truncated, so no row is larger than a few hundred bytes.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

MAX_ACTION = 120
MAX_REASON = 300


class AuditSink(Protocol):
    def audit(self, site_id: str | None, action: str, status: int, detail: str) -> None: ...


class RefusalLog:
    def __init__(self, sink: AuditSink, window: float = 60.0, max_kinds: int = 10_000):
        self._sink, self._window, self._max_kinds = sink, window, max_kinds
        self._lock = threading.Lock()
        self._kinds: dict[tuple, list] = {}  # (site, status, reason) -> [window start, repeats, action]

    def refused(self, site_id: str | None, action: str, status: int, reason: str) -> None:
        action, reason = action[:MAX_ACTION], reason[:MAX_REASON]
        key = (site_id, status, reason)
        now = time.monotonic()
        with self._lock:
            seen = self._kinds.get(key)
            if seen is not None and now - seen[0] < self._window:
                seen[1] += 1
                return
            repeats = seen[1] if seen is not None else 0
            if len(self._kinds) >= self._max_kinds:  # many distinct reasons: forget the oldest counts
                self._flush_locked(keep=0)
            self._kinds[key] = [now, 0, action]
        suffix = f" (and {repeats} more like it since the last such line)" if repeats else ""
        self._sink.audit(site_id, action, status, reason + suffix)

    def flush(self) -> None:
        """Write the counts of repeats not written yet (before the log is read)."""
        with self._lock:
            self._flush_locked(keep=1)

    def _flush_locked(self, keep: int) -> None:
        for (site_id, status, reason), seen in list(self._kinds.items()):
            if seen[1]:
                self._sink.audit(site_id, seen[2], status, f"{reason} (repeated {seen[1]} more times)")
                seen[1] = 0
            if not keep:
                del self._kinds[(site_id, status, reason)]
