"""The site's side of a live federation: watch the data file and keep the current model version.

A thread beside the agent's task loop looks at the file every few seconds (a `stat` first; the file
is read only when its size or time changed) and, when its row count or content hash changed, tells
the coordinator: the rows, how many are new since this site last prepared data for a phase, and
the SHA-256 of the file. Never a row. It also fetches the current model version when there is a
newer one than it holds (`current-model.safetensors` in the agent's state folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

import httpx

from fedcare.core.errors import DataError

log = logging.getLogger("fedcare.site")


def count_rows(path: Path) -> int:
    """Data rows of a CSV (its header aside, quoted line breaks counted once) or a Parquet file."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    import pandas as pd

    try:
        return sum(len(chunk) for chunk in pd.read_csv(path, usecols=[0], chunksize=100_000))
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot count the rows of '{path}' ({exc})") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DataWatch:
    """The file's (rows, sha256) now, and the row count it had when this site last prepared data."""

    def __init__(self, path: Path, state: Path):
        self.path = path
        self._record = state / "watch.json"  # survives an agent restart: what was prepared is not new
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._now: tuple[int, str] | None = None
        self._prepared = json.loads(self._record.read_text()).get("prepared_rows", 0) if self._record.is_file() else 0

    def current(self) -> tuple[int, str]:
        st = self.path.stat()
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                self._now, self._stamp = (count_rows(self.path), sha256_of(self.path)), stamp
            return self._now

    def arrived_from(self) -> int:
        """The row count of this site's last accepted preparation: where the newly arrived rows begin."""
        with self._lock:
            return self._prepared

    def mark_prepared(self, rows: int) -> None:
        """Called once the coordinator has accepted this site's preparation of its first `rows` rows:
        only then are they no longer new (a rejected or lost answer leaves them new, so the next
        phase is still asked for and no row is silently skipped)."""
        with self._lock:
            self._prepared = rows
            self._record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self._record.with_suffix(".tmp")
            tmp.write_text(json.dumps({"prepared_rows": rows}))
            tmp.replace(self._record)

    def report(self) -> dict:
        rows, digest = self.current()
        with self._lock:
            return {"rows": rows, "new_rows": max(0, rows - self._prepared), "sha256": digest}


class Watcher:
    """The thread: reports a changed file, fetches a newer model version; every `every` seconds."""

    def __init__(self, client: httpx.Client, watch: DataWatch, state: Path, every: float):
        self.client, self.watch, self.state, self.every = client, watch, state, every
        self._sent: dict | None = None
        self._version = 0
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="data-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.tick()
            except (httpx.HTTPError, OSError, DataError) as exc:  # the coordinator away, the file mid-write
                log.info("data watch: %s; trying again in %g s", exc, self.every)

    def tick(self) -> None:
        report = self.watch.report()
        if report != self._sent:
            answer = self.client.post("/v1/live/report", json=report)
            if answer.status_code == 404:  # not a live coordinator: nothing to tell it
                log.info("the coordinator keeps no live run; the data watch stops")
                self.stop()
                return
            if answer.status_code < 300:
                self._sent = report
                log.info("told the coordinator: %d rows, %d new", report["rows"], report["new_rows"])
        answer = self.client.get("/v1/models/current", params={"have": self._version})
        if answer.status_code == 200:
            self._version = int(answer.headers["x-fedcare-version"])
            tmp = self.state / "current-model.safetensors.tmp"
            tmp.write_bytes(answer.content)
            tmp.replace(self.state / "current-model.safetensors")
            log.info("model version %d fetched: %s", self._version, self.state / "current-model.safetensors")
