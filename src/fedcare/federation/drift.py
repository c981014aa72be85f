"""Drift: has the current model drifted away from a site's patients? A pure function of what a site
already shares -- its metric of the current model version (a scalar) and the count, mean and
variance of each encoded input feature (what preparation's `stats` answer holds) -- never rows.

`detect_drift(reference, new, config)` compares the rows the model was last scored on (`reference`)
with the newly arrived ones (`new`) and returns a `DriftNotice` when either test fires:

metric   the model's headline metric on the new rows is worse than on the reference rows by more
         than `drift_threshold` (in the metric's direction) *and* by at least `drift_metric_z`
         standard errors of the difference, so a small site's sampling noise does not fire. Each
         side's standard error (`se`) is computed by the site from its own rows -- from the 95 %
         interval its metrics already carry (Wilson for accuracy, a bootstrap for ROC-AUC and the
         C-index, learning/intervals.py) -- and only that number travels. Judged only when both sides
         scored at least `min_rows` rows and both have a standard error.
inputs   a feature's standardised mean difference |m_new - m_ref| / sqrt((v_ref + v_new) / 2) is at
         least `drift_smd` *and* the difference is beyond sampling noise (|z| >= `drift_z`, the
         Welch statistic), so a small window's chance wobble over many features does not fire.

Simulation (federation/stream.py) and a live coordinator call the same function; both sides of it
travel as JSON (`to_json`/`from_json`), so a site's numbers can be checked where they arrive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedcare.core.errors import DataError
from fedcare.learning.intervals import Z95

FeatureStats = Mapping[str, float]  # {"count", "mean", "var"}


@dataclass(frozen=True)
class DriftConfig:
    drift_threshold: float = 0.05  # a metric drop beyond this fires
    drift_smd: float = 0.5         # a standardised mean difference at least this large ...
    drift_z: float = 4.0           # ... and this many standard errors away fires
    drift_metric_z: float = 2.0    # a metric drop must also be this many standard errors of the difference
    min_rows: int = 30             # fewer scored rows on either side: the metric is not judged


@dataclass(frozen=True)
class DriftStats:
    """What one site shares about one set of its rows under the current model version."""

    site_id: str
    rows: int
    metric: str
    value: float | None  # the metric on these rows (None: undefined, e.g. one class only)
    higher_is_better: bool = True
    features: dict[str, dict[str, float]] = field(default_factory=dict)  # feature -> count, mean, var
    se: float | None = None  # the standard error of `value` on these rows (None: no interval to derive it from)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftStats:
        try:
            features = {str(k): {s: _finite(v[s], f"{k}.{s}") for s in ("count", "mean", "var")}
                        for k, v in dict(data.get("features", {})).items()}
            if any(f["count"] < 0 or f["var"] < 0 for f in features.values()) or int(data["rows"]) < 0:
                raise ValueError("a count or a variance is negative")
            value, se = data.get("value"), data.get("se")
            if se is not None and _finite(se, "se") < 0:
                raise ValueError("a standard error is negative")
            return cls(str(data["site_id"]), int(data["rows"]), str(data["metric"]),
                       None if value is None else _finite(value, "value"), bool(data.get("higher_is_better", True)),
                       features, None if se is None else float(se))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"drift statistics cannot be read ({exc}); a site must send site_id, rows, metric, "
                            "value and per-feature count, mean and var") from None


@dataclass(frozen=True)
class DriftNotice:
    """Which site, which tests fired, and the numbers behind them."""

    site_id: str
    tests: list[str]                     # "metric", "inputs"
    metric: str
    reference_value: float | None
    new_value: float | None
    drop: float | None                   # reference - new, in the metric's direction (positive = worse)
    reference_rows: int
    new_rows: int
    shifted: dict[str, dict[str, float]] = field(default_factory=dict)  # feature -> smd, z, means
    drop_se: float | None = None         # the standard error of `drop` (both sides' SEs combined)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftNotice:
        return cls(**{**data, "tests": list(data["tests"]), "shifted": dict(data.get("shifted", {}))})

    def line(self) -> str:
        """One line for progress output and the report."""
        parts = []
        if "metric" in self.tests:
            parts.append(f"{self.metric} {self.reference_value:.3f} -> {self.new_value:.3f} "
                         f"(drop {self.drop:.3f}, SE {self.drop_se:.3f})")
        if "inputs" in self.tests:
            top = sorted(self.shifted.items(), key=lambda kv: -abs(kv[1]["smd"]))[:3]
            parts.append("inputs shifted: " + ", ".join(f"{k} (SMD {v['smd']:+.2f})" for k, v in top))
        return f"drift at {self.site_id}: " + "; ".join(parts)


def _finite(value: Any, name: str) -> float:
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} is not finite")
    return out


def metric_drop(reference: DriftStats, new: DriftStats) -> float | None:
    """How much worse the new rows score (positive = worse), or None when either is undefined."""
    if reference.value is None or new.value is None:
        return None
    drop = reference.value - new.value
    return drop if reference.higher_is_better else -drop


def metric_se(metrics: Mapping[str, float | None], name: str) -> float | None:
    """The standard error of metric `name`, read off the 95 % interval (`<name>_low`, `<name>_high`) a
    site's metrics carry: half its width over 1.96. None when the metric has no interval."""
    low, high = metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    if low is None or high is None:
        return None
    return max(0.0, float(high) - float(low)) / (2 * Z95)


def drop_se(reference: DriftStats, new: DriftStats) -> float | None:
    """The standard error of the drop: the two sides are disjoint rows, so their variances add."""
    if reference.se is None or new.se is None:
        return None
    return math.hypot(reference.se, new.se)


def metric_judged(reference: DriftStats, new: DriftStats, config: DriftConfig) -> bool:
    """Whether both sides scored enough rows, and say how sure they are, for a drop to mean something."""
    return min(reference.rows, new.rows) >= config.min_rows and drop_se(reference, new) is not None


def metric_dropped(reference: DriftStats, new: DriftStats, config: DriftConfig) -> bool:
    """The metric test: a drop beyond the threshold that is also beyond sampling noise."""
    if not metric_judged(reference, new, config):  # judged: both sides have a standard error
        return False
    drop = metric_drop(reference, new)
    return drop is not None and drop > config.drift_threshold and drop >= config.drift_metric_z * drop_se(reference, new)


def shifted_features(reference: DriftStats, new: DriftStats, config: DriftConfig) -> dict[str, dict[str, float]]:
    """The features whose mean moved by at least `drift_smd` pooled SDs and `drift_z` standard errors."""
    out: dict[str, dict[str, float]] = {}
    for name, ref in reference.features.items():
        now = new.features.get(name)
        if now is None or ref["count"] < 2 or now["count"] < 2:
            continue
        diff = now["mean"] - ref["mean"]
        pooled = math.sqrt((ref["var"] + now["var"]) / 2)
        se = math.sqrt(ref["var"] / ref["count"] + now["var"] / now["count"])
        if pooled <= 0 or se <= 0:
            continue
        smd, z = diff / pooled, diff / se
        if abs(smd) >= config.drift_smd and abs(z) >= config.drift_z:
            out[name] = {"smd": smd, "z": z, "reference_mean": ref["mean"], "new_mean": now["mean"]}
    return out


def detect_drift(reference: DriftStats, new: DriftStats, config: DriftConfig) -> DriftNotice | None:
    """A notice when the metric drops beyond the threshold or the inputs shift; None otherwise."""
    if reference.site_id != new.site_id:
        raise DataError(f"drift compares one site with itself, not '{reference.site_id}' with '{new.site_id}'")
    shifted = shifted_features(reference, new, config)  # its own guard against noise: the z statistic
    tests = (["metric"] if metric_dropped(reference, new, config) else []) + (["inputs"] if shifted else [])
    if not tests:
        return None
    return DriftNotice(new.site_id, tests, new.metric, reference.value, new.value, metric_drop(reference, new),
                       reference.rows, new.rows, shifted, drop_se(reference, new))


def feature_stats(matrix: Any, names: list[str]) -> dict[str, dict[str, float]]:
    """count, mean, variance per column of an encoded feature matrix (numpy), NaN cells left out:
    the same three numbers a site's `stats` answer shares, for the rows at hand."""
    matrix = np.asarray(matrix, dtype=np.float64)
    out = {}
    for j, name in enumerate(names):
        col = matrix[:, j]
        col = col[np.isfinite(col)]
        if len(col):
            out[name] = {"count": float(len(col)), "mean": float(col.mean()),
                         "var": float(col.var(ddof=1)) if len(col) > 1 else 0.0}
    return out
