"""Per-site, mean and worst-site figures: in medicine an average can hide a hospital the model fails."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcare.core.scoring import is_better

SiteValues = Mapping[str, Mapping[str, float | None]]


def block(per_site: SiteValues, metric: str) -> dict:
    """{"sites": site -> metrics, "mean": metric -> mean over sites, "worst_site": the site that is
    worst on the headline metric, with its metrics}."""
    names = sorted({m for values in per_site.values() for m in values})
    mean = {}
    for name in names:
        vals = [v[name] for v in per_site.values() if v.get(name) is not None]
        mean[name] = float(np.mean(vals)) if vals else None
    worst_id = None
    for site, values in per_site.items():
        value = values.get(metric)
        if value is None:
            continue
        if worst_id is None or is_better(metric, per_site[worst_id][metric], value):
            worst_id = site
    worst = {"site_id": worst_id, **per_site[worst_id]} if worst_id is not None else {"site_id": None}
    return {"sites": {k: dict(v) for k, v in per_site.items()}, "mean": mean, "worst_site": worst}
