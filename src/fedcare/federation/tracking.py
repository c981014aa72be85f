"""Trackers: where a run's metric rows go while it runs. `JsonlTracker` (always on) appends each
round's rows to metrics.jsonl and flushes them, so a run that crashes or is killed leaves its
history up to its last finished round; at the end the run folder rewrites the file whole (the
baselines' rows included). Other trackers (MLflow, TensorBoard: fedcare.interfaces.trackers) take
the same three calls."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from fedcare.core.config import FederationConfig


class Tracker(Protocol):
    def start(self, config: FederationConfig, rows: Sequence[Mapping]) -> None:
        """The run's settings before its first round, and the rows a resumed run already has."""

    def log(self, rows: Sequence[Mapping]) -> None:
        """Metric rows (one per round, site, split and model) as they are made."""

    def finish(self, summary: Mapping | None, folder: Path) -> None:
        """The end: `summary` None when the run failed; the run folder holds the artefacts."""


class JsonlTracker:
    """metrics.jsonl, grown round by round (a resumed run first writes back the rows it resumes from)."""

    def __init__(self, path: Path):
        self.path = path

    def start(self, config: FederationConfig, rows: Sequence[Mapping]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)

    def log(self, rows: Sequence[Mapping]) -> None:
        with self.path.open("a") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)

    def finish(self, summary: Mapping | None, folder: Path) -> None:
        pass  # the run folder writes the complete file atomically at the end


class Trackers:
    """Several trackers as one."""

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)

    def start(self, config: FederationConfig, rows: Sequence[Mapping] = ()) -> None:
        for t in self.trackers:
            t.start(config, rows)

    def log(self, rows: Sequence[Mapping]) -> None:
        if rows:
            for t in self.trackers:
                t.log(rows)

    def finish(self, summary: Mapping | None, folder: Path) -> None:
        for t in self.trackers:
            t.finish(summary, folder)
