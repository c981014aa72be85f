"""The coordinator's durable state in one embedded SQLite file: the run, its rounds, the sites seen,
the prepared dataset and the audit log.

Why SQLite: one file, no server to run, transactions that survive `kill -9` (WAL journal), and the
standard library's driver. Arrays never go in here: the global params of every completed round are
safetensors files beside it (see coordinator.py); this file holds what a person or a restart reads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from fedcare.core.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    prepared TEXT, started REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS rounds (
    run_id TEXT NOT NULL, round INTEGER NOT NULL, selected TEXT NOT NULL, answered TEXT NOT NULL,
    refused TEXT NOT NULL, closed REAL NOT NULL, PRIMARY KEY (run_id, round));
CREATE TABLE IF NOT EXISTS sites (site_id TEXT PRIMARY KEY, first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, site_id TEXT, action TEXT NOT NULL,
    status INTEGER NOT NULL, detail TEXT NOT NULL);
"""


class Store:
    """Thread-safe: the web handlers and the round engine's thread share one connection under a lock."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._last_seen: dict[str, float] = {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives the process being killed (kill -9), which is the
            # crash we promise to survive; only a power cut can lose the last commits, and the
            # round checkpoints on disk are what a restart resumes from
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("SELECT run_id, config, status, reason, prepared, started, finished FROM runs LIMIT 1")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"the coordinator's database '{path}' cannot be used ({exc}); move it aside and "
                              "start again: a run under way resumes from its run folder's checkpoint") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ----- runs ---------------------------------------------------------------------------------

    def create_run(self, run_id: str, config_yaml: str) -> None:
        self._run("INSERT INTO runs (run_id, config, status, started) VALUES (?, ?, 'running', ?)",
                  (run_id, config_yaml, time.time()))

    def latest_run(self) -> dict | None:
        rows = self._run("SELECT run_id, config, status, reason, prepared FROM runs ORDER BY started DESC LIMIT 1")
        if not rows:
            return None
        run_id, config, status, reason, prepared = rows[0]
        return {"run_id": run_id, "config": config, "status": status, "reason": reason,
                "prepared": json.loads(prepared) if prepared else None}

    def runs(self, limit: int = 20) -> list[dict]:
        """The latest runs, newest first: id, status, when they started and finished (epoch seconds)."""
        rows = self._run("SELECT run_id, status, started, finished FROM runs ORDER BY started DESC LIMIT ?", (limit,))
        return [{"run_id": r, "status": st, "started": a, "finished": b} for r, st, a, b in rows]

    def set_status(self, run_id: str, status: str, reason: str = "") -> None:
        finished = time.time() if status in ("completed", "stopped", "failed") else None
        self._run("UPDATE runs SET status = ?, reason = ?, finished = ? WHERE run_id = ?",
                  (status, reason, finished, run_id))

    def save_prepared(self, run_id: str, prepared: dict) -> None:
        self._run("UPDATE runs SET prepared = ? WHERE run_id = ?", (json.dumps(prepared), run_id))

    # ----- rounds -------------------------------------------------------------------------------

    def close_round(self, run_id: str, round_: int, selected: list[str], answered: list[str],
                    refused: dict[str, str]) -> None:
        self._run("INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?)",
                  (run_id, round_, json.dumps(selected), json.dumps(answered), json.dumps(refused), time.time()))

    def rounds(self, run_id: str) -> list[dict]:
        rows = self._run("SELECT round, selected, answered, refused FROM rounds WHERE run_id = ? ORDER BY round",
                         (run_id,))
        return [{"round": r, "selected": json.loads(s), "answered": json.loads(a), "refused": json.loads(f)}
                for r, s, a, f in rows]

    # ----- sites and audit ----------------------------------------------------------------------

    def seen(self, site_id: str) -> None:
        """When a site last called, to the nearest few seconds (one write per request would be waste)."""
        now = time.time()
        if now - self._last_seen.get(site_id, 0.0) < 5.0:
            return
        self._last_seen[site_id] = now
        self._run("INSERT INTO sites VALUES (?, ?, ?) ON CONFLICT(site_id) DO UPDATE SET last_seen = ?",
                  (site_id, now, now, now))

    def sites_seen(self) -> dict[str, float]:
        """site -> when it last called (seconds since the epoch)."""
        return dict(self._run("SELECT site_id, last_seen FROM sites ORDER BY site_id"))

    def audit(self, site_id: str | None, action: str, status: int, detail: str) -> None:
        self._run("INSERT INTO audit (at, site_id, action, status, detail) VALUES (?, ?, ?, ?, ?)",
                  (time.time(), site_id, action, status, detail[:1000]))

    def audit_log(self, limit: int = 1000) -> list[dict]:
        rows = self._run("SELECT at, site_id, action, status, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [{"at": at, "site_id": s, "action": a, "status": st, "detail": d} for at, s, a, st, d in rows][::-1]
