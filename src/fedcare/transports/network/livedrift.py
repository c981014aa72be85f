"""Drift over the network: before a phase trains, each site scores the current model version on the
rows it had before (`reference`) and on its newly arrived rows (`new`), and sends the two sets of
what federation/drift.py compares: the headline metric, its standard error and each encoded feature's count, mean and
variance. Never a row. The coordinator checks what arrives and calls `detect_drift` per site.

The site's side (`arrival_stats`) runs in its agent; the coordinator's (`check_drift_answer`,
`notices`) in the coordinator. Feature keys are `<input>:<column index>`; the coordinator names them
from the run's prepared shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcare.core.errors import DataError
from fedcare.core.params import Params
from fedcare.data.dataset import DataShape, SiteData
from fedcare.data.examples import ArrayExamples
from fedcare.federation.drift import (
    DriftConfig,
    DriftNotice,
    DriftStats,
    detect_drift,
    feature_stats,
    metric_se,
)

MAX_FEATURES = 20_000  # a drift answer's features per side: far more than any table encodes


def arrival_stats(plan, data: SiteData, file_rows: Mapping[str, np.ndarray], arrived_from: int,
                  params: Params) -> dict | None:
    """{"reference": DriftStats, "new": DriftStats} as JSON for the rows before file row
    `arrived_from` and from it on, across all splits; None when either side is empty."""
    sides: dict[str, dict[str, list[np.ndarray]]] = {"reference": {}, "new": {}}
    for part, examples in data.splits.items():
        rows = np.asarray(file_rows[part])
        for side, mask in (("reference", rows < arrived_from), ("new", rows >= arrived_from)):
            chosen = np.flatnonzero(mask)
            if len(chosen):
                for name, values in examples.take(chosen).items():
                    sides[side].setdefault(name, []).append(values)
    if not sides["reference"] or not sides["new"]:
        return None
    task = plan.task
    out = {}
    for side, parts in sides.items():
        examples = ArrayExamples({name: np.concatenate(values) for name, values in parts.items()})
        site = plan.local_site(SiteData(data.site_id, {"train": examples, "val": examples, "test": examples}))
        metrics = site.evaluate(params, ["test"]).get("test", {})
        features = {}
        for name, shape in plan.shape.inputs.items():
            if len(shape.shape) == 1:  # a vector input: one column per encoded feature
                features.update(feature_stats(examples.arrays[name], [f"{name}:{j}" for j in range(shape.shape[0])]))
        out[side] = DriftStats(data.site_id, len(examples), task.headline, metrics.get(task.headline),
                               task.higher_is_better, features, metric_se(metrics, task.headline)).to_json()
    return out


def check_drift_answer(value: Mapping[str, Any], site_id: str) -> tuple[DriftStats, DriftStats] | None:
    """A site's drift answer, {"drift": {...}} or {"skipped": "why"}, read strictly; DataError says
    what is wrong."""
    if set(value) == {"skipped"} and isinstance(value["skipped"], str):
        return None
    if set(value) != {"drift"} or not isinstance(value["drift"], dict) or set(value["drift"]) != {"reference", "new"}:
        raise DataError('a drift answer is {"drift": {"reference": {...}, "new": {...}}} or {"skipped": "reason"}')
    reference, new = (DriftStats.from_json(value["drift"][side]) for side in ("reference", "new"))
    for stats in (reference, new):
        if stats.site_id != site_id:
            raise DataError(f"drift statistics about site '{stats.site_id[:64]}', not about '{site_id}'")
        if not 0 <= stats.rows <= 10**12 or len(stats.features) > MAX_FEATURES:
            raise DataError(f"drift statistics need 0 to 10^12 rows and at most {MAX_FEATURES} features")
    return reference, new


def named(notice: DriftNotice, shape: DataShape) -> DriftNotice:
    """The notice with `<input>:<j>` feature keys replaced by the run's encoded feature names."""
    def name(key: str) -> str:
        source, _, j = key.rpartition(":")
        features = shape.inputs[source].features if source in shape.inputs else ()
        return features[int(j)] if j.isdigit() and int(j) < len(features) else key

    return DriftNotice(**{**notice.to_json(), "shifted": {name(k): v for k, v in notice.shifted.items()}})


def notices(answers: Mapping[str, Any], shape: DataShape, config: DriftConfig) -> list[DriftNotice]:
    """One notice per site whose new rows drifted (answers as checked by `check_drift_answer`)."""
    found = []
    for pair in answers.values():
        if pair is not None and (notice := detect_drift(*pair, config)) is not None:
            found.append(named(notice, shape))
    return found
