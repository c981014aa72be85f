"""Model versions of a live federation: each training phase that ends is kept as `models/v<N>/`.

A version is a copy of the phase's finished run folder (summary.json, config.yaml, metrics.jsonl,
global.safetensors and, where the run wrote them, report.html, drift.json, the personalized models
in sites/ and the data preparation, checkpoints/prepared.json: the transforms a later phase
encodes with) plus `version.json`: the version, when it was published, the run it came from, its rounds,
its headline metric and its sites. A version is written under a temporary name and renamed into
place, so a crash leaves either the whole version or none of it; publishing the same run twice
(a coordinator restarted after the run ended but before the version was written) returns the
version it already has.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from fedcare.core.errors import DataError

_COPIED = ("summary.json", "config.yaml", "metrics.jsonl", "global.safetensors", "report.html", "drift.json")
_VERSION = re.compile(r"v(\d+)")


class ModelRegistry:
    def __init__(self, root: Path):
        self.root = root

    def versions(self) -> list[dict]:
        """Every version's `version.json`, oldest first."""
        if not self.root.is_dir():
            return []
        found = sorted((int(m.group(1)), p) for p in self.root.iterdir() if (m := _VERSION.fullmatch(p.name)))
        return [json.loads((p / "version.json").read_text()) for _, p in found if (p / "version.json").is_file()]

    def current(self) -> dict | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def folder(self, version: int) -> Path:
        return self.root / f"v{version}"

    def publish(self, run_dir: Path, run_id: str, extra: dict | None = None) -> dict:
        """Copy a finished run folder in as the next version; returns its `version.json`."""
        for known in self.versions():
            if known["run_id"] == run_id:
                return known
        summary_path = run_dir / "summary.json"
        if not summary_path.is_file():
            raise DataError(f"run {run_id} has no summary.json in '{run_dir}': only a finished phase becomes a version")
        summary = json.loads(summary_path.read_text())
        number = len(self.versions()) + 1
        metric = summary.get("metric")
        federated = summary.get("federated", {})
        meta = {"version": number, "run_id": run_id, "published": time.time(), "rounds": summary.get("rounds"),
                "metric": metric, "value": federated.get("mean", {}).get(metric),
                "sites": sorted(federated.get("sites", {})), **(extra or {})}
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".v{number}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name in _COPIED:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)
        if (run_dir / "sites").is_dir():
            shutil.copytree(run_dir / "sites", tmp / "sites")
        if (run_dir / "checkpoints" / "prepared.json").is_file():  # the fitted transforms the next phase encodes with
            (tmp / "checkpoints").mkdir()
            shutil.copy2(run_dir / "checkpoints" / "prepared.json", tmp / "checkpoints" / "prepared.json")
        if "drift" in meta:  # the version's summary says what drifted before it trained
            (tmp / "summary.json").write_text(json.dumps({**summary, "drift": meta["drift"]}, indent=2) + "\n")
        (tmp / "version.json").write_text(json.dumps(meta, indent=2) + "\n")
        tmp.rename(self.folder(number))
        return meta
