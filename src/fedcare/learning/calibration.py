"""Calibration of a binary classifier on the sites' test rows, for summary.json and the report's
reliability plot: per site and pooled, equal-width bins of the predicted probability with their
rows, mean prediction and observed rate, and the Brier score. Pooled bins are the sites' sums."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedcare.core.params import Params
from fedcare.learning.metrics import RELIABILITY_BINS, brier, reliability
from fedcare.learning.site import LocalSite


def _finish(bins: Mapping[str, list]) -> dict[str, list]:
    """The sums as means (None for an empty bin), beside the counts."""
    count = np.asarray(bins["count"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.asarray(bins["sum_predicted"]) / count
        rate = np.asarray(bins["sum_observed"]) / count
    return {"edges": list(bins["edges"]), "count": [int(c) for c in count],
            "mean_predicted": [None if c == 0 else float(v) for c, v in zip(count, mean_p)],
            "observed_rate": [None if c == 0 else float(v) for c, v in zip(count, rate)]}


def calibration(sites: Mapping[str, LocalSite], params: Mapping[str, Params], split: str = "test") -> dict | None:
    """`params` per site (the global model everywhere, or each site's own); None for a task that is
    not binary."""
    per_site, pooled, squares, rows = {}, None, 0.0, 0
    for sid, site in sites.items():
        if site.task.name != "binary" or site.num_examples(split) == 0:
            continue
        out, targets = site.outputs(params[sid], split)
        p = torch.sigmoid(out.squeeze(-1)).double().numpy()
        y = np.asarray(targets["label"], dtype=np.float64)
        bins = reliability(y, p)
        per_site[sid] = {"brier": brier(y, p), **_finish(bins)}
        squares, rows = squares + float(np.sum((p - y) ** 2)), rows + len(y)
        pooled = bins if pooled is None else {k: v if k == "edges" else list(np.add(pooled[k], v))
                                              for k, v in bins.items()}
    if pooled is None:
        return None
    return {"split": split, "bins": RELIABILITY_BINS, "sites": per_site,
            "pooled": {"brier": squares / rows, **_finish(pooled)}}
