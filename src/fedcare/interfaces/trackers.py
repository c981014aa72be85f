"""`--track mlflow[:URI]` and `--track tensorboard[:DIR]`: a run's metric rows sent, round by round,
to an experiment tracker, beside metrics.jsonl (fedcare.federation.tracking). Each is an optional
extra (`pip install fedcare[tracking]`); asking for one that is not installed is one line.

MLflow: one MLflow run per fedcare run, in the experiment `fedcare`; every numeric value of a row
is a metric `<model>/<site>/<split>/<name>` at step = round; the flat config keys are its params;
summary.json, config.yaml, report.html and the model files its artefacts. The default store is
`sqlite:///mlflow.db` in the working folder (MLflow's file store is in maintenance mode).
TensorBoard: scalars `<model>/<split>/<name>/<site>` at step = round in `<run folder>/tensorboard`
(or DIR), the config and the summary as text.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedcare.core.config import FederationConfig
from fedcare.core.errors import ConfigError
from fedcare.federation.tracking import JsonlTracker, Tracker, Trackers

DEFAULT_MLFLOW = "sqlite:///mlflow.db"
ARTEFACTS = ("summary.json", "config.yaml", "report.html", "global.safetensors", "sites")
KEYS = ("round", "model", "site", "split")


def values(row: Mapping) -> dict[str, float]:
    """A row's numeric, finite values (booleans and text, such as a refusal's reason, left out)."""
    return {k: float(v) for k, v in row.items() if k not in KEYS and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def _name(text: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(text))  # what MLflow accepts in a key, slashes aside


def _artefacts_beside(uri: str) -> str | None:
    """A SQLite store's artefacts in `mlartifacts/` beside its file (MLflow would use the working folder)."""
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server decides
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


class MlflowTracker:
    def __init__(self, uri: str, run_dir: Path):
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ConfigError("--track mlflow needs MLflow: pip install 'fedcare[tracking]' (or mlflow-skinny "
                              "with sqlalchemy and alembic)") from None
        self.client, self.uri, self.run_dir = MlflowClient(uri), uri, run_dir
        self.run_id: str | None = None

    def start(self, config: FederationConfig, rows: Sequence[Mapping]) -> None:
        from mlflow.entities import Param

        experiment = self.client.get_experiment_by_name("fedcare")
        eid = experiment.experiment_id if experiment else self.client.create_experiment(
            "fedcare", artifact_location=_artefacts_beside(self.uri))
        self.run_id = self.client.create_run(eid, run_name=self.run_dir.name,
                                             tags={"fedcare.run_folder": str(self.run_dir.resolve())}).info.run_id
        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v)
                  for k, v in config.flat(mode="json").items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.log(rows)

    def log(self, rows: Sequence[Mapping]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{_name(r['model'])}/{_name(r['site'])}/{r['split']}/{_name(k)}", v, now, int(r["round"]))
                   for r in rows for k, v in values(r).items()]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def finish(self, summary: Mapping | None, folder: Path) -> None:
        if self.run_id is None:
            return
        if summary is not None:
            for name in ARTEFACTS:
                path = folder / name
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), name)
                elif path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED" if summary is not None else "FAILED")


class TensorboardTracker:
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--track tensorboard needs TensorBoard: pip install 'fedcare[tracking]'") from None
        self.log_dir, self.make = log_dir, SummaryWriter

    def start(self, config: FederationConfig, rows: Sequence[Mapping]) -> None:
        self.writer = self.make(str(self.log_dir))  # here, not before: a new run first clears its folder
        self.writer.add_text("config", "```\n" + config.to_yaml() + "```")
        self.log(rows)

    def log(self, rows: Sequence[Mapping]) -> None:
        for r in rows:
            for k, v in values(r).items():
                self.writer.add_scalar(f"{r['model']}/{r['split']}/{k}/{r['site']}", v, int(r["round"]))
        self.writer.flush()

    def finish(self, summary: Mapping | None, folder: Path) -> None:
        if summary is not None:
            self.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2) + "\n```")
        self.writer.close()


def open_trackers(config: FederationConfig) -> Trackers:
    """metrics.jsonl and every tracker the config names (one that is not installed: one line, before
    anything is written)."""
    run_dir = config.run_dir
    out: list[Tracker] = [JsonlTracker(run_dir / "metrics.jsonl")]
    for item in config.tracking.track:
        kind, _, where = item.partition(":")
        if kind == "mlflow":
            out.append(MlflowTracker(where or DEFAULT_MLFLOW, run_dir))
        else:
            out.append(TensorboardTracker(Path(where) if where else run_dir / "tensorboard"))
    return Trackers(out)
