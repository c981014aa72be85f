"""The run folder, the contract that reports, benchmarks and users read (docs/architecture.md):

    runs/<name>/config.yaml  metrics.jsonl  summary.json  global.safetensors  sites/  report.html

Written by whoever drives the run (a simulation, the network coordinator), so it sits below the
transports; report.html is rendered by the interfaces and handed in as text.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from fedcare.core.config import FederationConfig
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.core.serialization import save_params
from fedcare.data.modelcard import model_card

if TYPE_CHECKING:
    from fedcare.federation.engine import RoundRecord
    from fedcare.federation.summary import RunFacts


def file_stem(site_id: str) -> str:
    """A site id as a file name: site ids come from data, so anything but [A-Za-z0-9._-] becomes '_'
    and no name can climb out of the folder."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", site_id).lstrip(".")
    return stem or "_"


def metric_rows(model: str, records: Iterable[RoundRecord]) -> Iterable[dict]:
    """One row per (round, site, split, model): the shape metrics.jsonl promises."""
    for rec in records:
        for site, values in rec.train.items():
            yield {"round": rec.round, "model": model, "site": site, "split": "train", **values}
        for site, entry in rec.anomalies.items():
            yield {"round": rec.round, "model": model, "site": site, "split": "update", **entry}
        for site, splits in rec.evaluation.items():
            for split, values in splits.items():
                yield {"round": rec.round, "model": model, "site": site, "split": split, **values}
        if rec.bytes:  # what crossed the wire this round, each direction (the whole federation's)
            yield {"round": rec.round, "model": model, "site": "all", "split": "bytes", **rec.bytes}


# what a run (and `fedcare audit` on it) leaves in its folder: a new run into it removes exactly these
RUN_ENTRIES = frozenset({"config.yaml", "metrics.jsonl", "summary.json", "global.safetensors", "report.html",
                         "sites", "checkpoints", "rounds", "audit.json",
                         "tensorboard", "predictions.csv", "model.onnx", "model.pt"})  # --track, predict, export


def clear_for_new_run(path: Path) -> None:
    """Empty a previous run's folder before a new run writes there, so no old file (a site model, a
    checkpoint, an audit) sits beside new ones; refuse, touching nothing, a folder that holds
    anything a run does not write."""
    if not path.is_dir():
        return
    foreign = sorted(p.name for p in path.iterdir() if p.name not in RUN_ENTRIES and not
                     (p.name.startswith(".") and p.name.endswith(".tmp")))
    if foreign:
        raise ConfigError(f"--out '{path}' is not empty and not a fedcare run folder (it holds '{foreign[0]}'); "
                          "choose another --out or empty that folder")
    for entry in path.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


class RunFolder:
    """Writes a run's files; each file is written whole, through a temporary name, so a crash never
    leaves a half-written summary beside a complete one."""

    def __init__(self, path: Path):
        self.path = path

    def prepare(self, config: FederationConfig) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"run folder '{self.path}' cannot be created ({exc.strerror}); "
                              "choose another --out") from None
        self._write("config.yaml", config.to_yaml())

    def write_metrics(self, rows: Iterable[Mapping]) -> None:
        self._write("metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def write_summary(self, summary: Mapping) -> None:
        self._write("summary.json", json.dumps(summary, indent=2) + "\n")

    def write_report(self, html: str) -> None:
        self._write("report.html", html)

    def write_site(self, site_id: str, params: Params, meta: Mapping[str, object]) -> None:
        """sites/<site_id>.safetensors: a site's personalized model."""
        (self.path / "sites").mkdir(exist_ok=True)
        save_params(self.path / "sites" / f"{file_stem(site_id)}.safetensors", params, {**meta, "site_id": site_id})

    def write_global(self, params: Params, meta: Mapping[str, object]) -> None:
        save_params(self.path / "global.safetensors", params, meta)

    def _write(self, name: str, text: str) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(self.path / name)

    def write_result(self, cfg: FederationConfig, facts: RunFacts, summary: Mapping, rows: list[dict],
                     global_params: Params, site_params: Mapping[str, Params],
                     baseline_hazard: Mapping | None = None) -> None:
        """Everything a finished run leaves but report.html: metric rows, models, summary. A survival
        run's baseline hazard (of the global model) goes in the global model's card only."""
        self.write_metrics(rows)
        described = model_card(cfg.model, facts.shape, facts.preprocessing).to_meta() if facts.shape else {}
        card = (model_card(cfg.model, facts.shape, facts.preprocessing, baseline_hazard).to_meta()
                if facts.shape else {})
        self.write_global(global_params, {"dataset": facts.name, "algorithm": cfg.algorithm.name,
                                          "feature_names": list(facts.feature_names), **card})
        for sid, params in site_params.items():
            self.write_site(sid, params, {"dataset": facts.name, "personalization": cfg.personalization.mode,
                                          **described})
        self.write_summary(summary)
