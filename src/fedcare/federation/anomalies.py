"""The anomaly report: which sites look wrong this round, and across the run.

Per round and site: the update's L2 norm, its cosine similarity to the aggregate, the weight each
robust piece gave it, and whether it was refused on arrival. A site is *flagged* in a round when its
update was refused, or when a piece discarded it (weight 0 while others kept weight) or gave it
less than half the median weight of the round.

The report also judges every update on its own, whatever rule aggregates them (the plain mean
defends nothing, so its weights say nothing): with at least three updates it compares each with the
round's coordinate-wise median of the updates (the consensus, which a minority cannot move far) and
flags an update that points away from it (`cosine_consensus` below OPPOSED) or is more than
NORM_RATIO times the round's median norm (`norm_ratio`). A site that scales its update by a
moderate factor may pass both tests. A site flagged in more than half of the rounds it
took part in is named in summary.json: that is where an operator should look first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from fedcare.algorithms.robust import ReportProducts, report_products
from fedcare.core.params import Params
from fedcare.core.update import Update


# Measured on heart-disease and ovarian-genomics (4 sites): near convergence an honest site's update
# may point slightly away from the others' (cosine down to about -0.3 in a few rounds: client drift),
# and a small, skewed site's gradient can be 3-7 times the median norm under fedsgd; a sign-flipping
# or label-flipping site stays below -0.3 in most rounds, a noisy one far above 10 times.
OPPOSED = -0.3
NORM_RATIO = 10.0


def anomaly_report(updates: Sequence[Update], aggregate: Params, decisions: Mapping[str, Mapping[str, float]],
                   refused: Mapping[str, str]) -> dict[str, dict]:
    report: dict[str, dict] = {}
    if updates and aggregate:
        # one pass over the updates for every norm and product below (robust.report_products)
        sums = report_products(updates, aggregate, consensus=len(updates) >= 3)
        cosines = sums.cosines(sums.with_aggregate, sums.aggregate_norm)
        for site, norm, cosine in zip(sums.sites, sums.norms, cosines, strict=True):
            report[site] = {"norm": norm, "cosine": cosine, "flagged": False}
        for site, values in _against_consensus(sums).items():
            report[site].update(values)
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


def _against_consensus(sums: ReportProducts) -> dict[str, dict]:
    """Each update's cosine to the coordinate-wise median of the round's updates and its norm over
    the median norm, and whether either is out of line; nothing with fewer than three updates (the
    median of two is their mean, which one hostile site moves as far as it likes)."""
    if sums.with_consensus is None or sums.consensus_norm is None:
        return {}
    cosines = sums.cosines(sums.with_consensus, sums.consensus_norm)
    median_norm = float(np.median(sums.norms))
    out = {}
    for site, norm, cosine in zip(sums.sites, sums.norms, cosines, strict=True):
        ratio = norm / median_norm if median_norm > 0 else 1.0
        out[site] = {"cosine_consensus": cosine, "norm_ratio": ratio,
                     "flagged": cosine < OPPOSED or ratio > NORM_RATIO}
    return out
