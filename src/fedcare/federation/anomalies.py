"""The anomaly report: which sites look wrong this round, and across the run.

Per round and site: the update's L2 norm, its cosine similarity to the aggregate, the weight each
robust piece gave it, and whether it was refused on arrival. A site is *flagged* in a round when its
update was refused, or when a piece discarded it (weight 0 while others kept weight) or gave it
less than half the median weight of the round. A site flagged in more than half of the rounds it
took part in is named in summary.json: that is where an operator should look first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from fedcare.algorithms.robust import update_report
from fedcare.core.params import Params
from fedcare.core.update import Update


def anomaly_report(updates: Sequence[Update], aggregate: Params, decisions: Mapping[str, Mapping[str, float]],
                   refused: Mapping[str, str]) -> dict[str, dict]:
    report: dict[str, dict] = {}
    if updates and aggregate:
        for site, values in update_report(updates, aggregate).items():
            report[site] = {**values, "flagged": False}
    for piece, weights in decisions.items():
        values = np.array(list(weights.values()), dtype=np.float64)
        if values.size == 0:
            continue
        top, median = float(values.max()), float(np.median(values))
        for site, weight in weights.items():
            entry = report.setdefault(site, {"flagged": False})
            entry[f"weight/{piece}"] = weight
            if (weight <= 0.0 < top) or weight < 0.5 * median:
                entry["flagged"] = True
    for site, reason in refused.items():
        report[site] = {"flagged": True, "refused": reason}
    return report


def flagged_sites(reports: Iterable[Mapping[str, Mapping]]) -> dict:
    """{"flagged_sites": [...], "rounds_flagged": {site: n}, "rounds_seen": {site: n}}."""
    flagged: dict[str, int] = {}
    seen: dict[str, int] = {}
    for report in reports:
        for site, entry in report.items():
            seen[site] = seen.get(site, 0) + 1
            flagged[site] = flagged.get(site, 0) + int(bool(entry.get("flagged")))
    names = sorted(site for site, n in flagged.items() if n * 2 > seen[site])
    return {"flagged_sites": names, "rounds_flagged": dict(sorted(flagged.items())),
            "rounds_seen": dict(sorted(seen.items()))}
