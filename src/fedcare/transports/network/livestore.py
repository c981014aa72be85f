"""What a live federation must remember across restarts, in the coordinator's SQLite file: each
site's latest data report (row counts and a content hash, never rows), the sites that left and the
sites dropped from a phase for silence (until they are heard from again).

Its own tables and connection beside `Store`'s, so the run's schema stays as it is.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from fedcare.core.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_reports (
    site_id TEXT PRIMARY KEY, rows INTEGER NOT NULL, new_rows INTEGER NOT NULL, sha256 TEXT NOT NULL,
    at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS live_left (site_id TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS live_dropped (site_id TEXT PRIMARY KEY, at REAL NOT NULL);
"""


class LiveStore:
    def __init__(self, path: Path):
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"the coordinator's database '{path}' cannot be used ({exc}); move it aside") from None

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def report(self, site_id: str, rows: int, new_rows: int, sha256: str) -> None:
        self._run("INSERT OR REPLACE INTO live_reports VALUES (?, ?, ?, ?, ?)",
                  (site_id, rows, new_rows, sha256, time.time()))

    def reports(self) -> dict[str, dict]:
        return {s: {"rows": r, "new_rows": n, "sha256": h, "at": at}
                for s, r, n, h, at in self._run("SELECT site_id, rows, new_rows, sha256, at FROM live_reports")}

    def leave(self, site_id: str, reason: str) -> None:
        self._run("INSERT OR REPLACE INTO live_left VALUES (?, ?, ?)", (site_id, reason, time.time()))

    def left(self) -> dict[str, str]:
        return dict(self._run("SELECT site_id, reason FROM live_left"))

    def drop(self, site_id: str) -> None:
        self._run("INSERT OR REPLACE INTO live_dropped VALUES (?, ?)", (site_id, time.time()))

    def dropped(self) -> dict[str, float]:
        """site -> when it was dropped for silence (seconds since the epoch)."""
        return dict(self._run("SELECT site_id, at FROM live_dropped"))

    def back(self, site_id: str) -> None:
        self._run("DELETE FROM live_dropped WHERE site_id = ?", (site_id,))
