"""Calibration of a binary classifier on the sites' test rows, for summary.json and the report's
reliability plot: per site and pooled, equal-width bins of the predicted probability with their
rows, mean prediction and observed rate, and the Brier score. Pooled bins are the sites' sums."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcare.learning.metrics import RELIABILITY_BINS


def _finish(bins: Mapping[str, list]) -> dict[str, list]:
    """The sums as means (None for an empty bin), beside the counts."""
    count = np.asarray(bins["count"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.asarray(bins["sum_predicted"]) / count
        rate = np.asarray(bins["sum_observed"]) / count
    return {"edges": list(bins["edges"]), "count": [int(c) for c in count],
            "mean_predicted": [None if c == 0 else float(v) for c, v in zip(count, mean_p)],
            "observed_rate": [None if c == 0 else float(v) for c, v in zip(count, rate)]}


def calibration(bins: Mapping[str, dict | None], split: str = "test") -> dict | None:
    """Each site's bins (`LocalSite.calibration_bins`) as summary.json's block: per site and pooled; None when no
    site had any."""
    per_site, pooled, squares, rows = {}, None, 0.0, 0
    for sid, b in bins.items():
        if b is None:
            continue
        sums = {k: v for k, v in b.items() if k not in ("squares", "rows")}
        per_site[sid] = {"brier": b["squares"] / b["rows"], **_finish(sums)}
        squares, rows = squares + b["squares"], rows + b["rows"]
        pooled = sums if pooled is None else {k: v if k == "edges" else list(np.add(pooled[k], v))
                                              for k, v in sums.items()}
    if pooled is None:
        return None
    return {"split": split, "bins": RELIABILITY_BINS, "sites": per_site,
            "pooled": {"brier": squares / rows, **_finish(pooled)}}
