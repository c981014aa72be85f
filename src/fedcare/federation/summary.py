"""summary.json: the same figures for a simulated and a networked run.

Every number is given per site, as the mean over sites and for the worst site: in medicine an
average can hide a hospital the model fails. The privacy spent and the anomaly report come from the
run's metric rows, so they survive a resume.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedcare.core.config import FederationConfig
from fedcare.data.dataset import DataShape
from fedcare.federation.anomalies import flagged_sites
from fedcare.federation.caveats import caveats
from fedcare.federation.engine import EngineResult

if TYPE_CHECKING:
    from fedcare.learning.tasks import Task

SiteValues = Mapping[str, Mapping[str, float | None]]


def block(per_site: SiteValues, metric: str, higher_is_better: bool) -> dict:
    """{"sites": site -> metrics, "mean": metric -> mean over sites, "worst_site": the site that is
    worst on the headline metric, with its metrics}. A site's interval bounds (`accuracy_low`, ...)
    have no mean: a mean of bounds is no interval of the mean."""
    names = sorted({m for values in per_site.values() for m in values if not m.endswith(("_low", "_high"))})
    mean = {}
    for name in names:
        vals = [v[name] for v in per_site.values() if v.get(name) is not None]
        mean[name] = float(np.mean(vals)) if vals else None
    scored = [(site, values[metric]) for site, values in per_site.items() if values.get(metric) is not None]
    worst_id = None
    if scored:  # the first of the sites with the worst value
        pick = min if higher_is_better else max
        worst_id = pick(scored, key=lambda sv: sv[1])[0]
    worst = {"site_id": worst_id, **per_site[worst_id]} if worst_id is not None else {"site_id": None}
    return {"sites": {k: dict(v) for k, v in per_site.items()}, "mean": mean, "worst_site": worst}


@dataclass(frozen=True)
class RunFacts:
    """What a run's summary says about its data: learned in one process (simulation) or from the
    sites' aggregates (a networked run), never from rows."""

    name: str
    task: str
    feature_names: tuple[str, ...]
    preprocessing: dict
    site_sizes: dict[str, dict[str, int]]
    shape: DataShape | None = None  # what the model files describe (with the ModelSpec), to be loadable


def summarize(cfg: FederationConfig, facts: RunFacts, task: Task, result: EngineResult, per_model: dict,
              rows: list[dict], bytes_sent: int, started: float, aggregator: str, attacked: list[str],
              constant: SiteValues | None = None) -> dict:
    """summary.json: the same keys for a simulated and a networked run; `constant` is the constant
    predictor's test metrics per site, the reference a final model must beat (see caveats)."""
    metric = task.headline
    summary = {
        "dataset": facts.name,
        "task": facts.task,
        "algorithm": cfg.algorithm.name,
        "rounds": result.rounds_run,
        "best_round": result.best_round,
        "stopped_early": result.stopped_early,
        "metric": metric,
        "higher_is_better": task.higher_is_better,
        "seed": cfg.run.seed,
        "num_features": len(facts.feature_names),
        "site_sizes": facts.site_sizes,
        **{name: block(values, metric, task.higher_is_better) for name, values in per_model.items()},
        "aggregator": aggregator,
        "attack": {"kind": cfg.robustness.attack, "sites": attacked},
        "anomalies": flagged_sites(_anomalies(rows)),
        "bytes_sent": bytes_sent,
        "communication": _communication(cfg, rows),
        "privacy": _privacy(cfg, rows),
        "preprocessing": facts.preprocessing,
        **({"constant": block(constant, metric, task.higher_is_better)} if constant else {}),
        **_evaluation(cfg, len(facts.site_sizes)),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    summary["warnings"] = caveats(summary, task.higher_is_better)
    return summary


def _evaluation(cfg: FederationConfig, sites: int) -> dict:
    """How the per-round curves were judged, when not every site after every round (big federations)."""
    every, sample = cfg.run.eval_every, cfg.run.eval_sites
    if every == 1 and (not sample or sample >= sites):
        return {}
    judged = min(sample, sites) if sample else sites
    return {"evaluation": {
        "every": every, "sites_per_round": judged, "sites": sites,
        "note": f"the global model was evaluated after every {every} rounds (and the last) on {judged} of "
                f"{sites} sites per evaluated round; the final test figures above are every site's"}}


def _communication(cfg: FederationConfig, rows: list[dict]) -> dict:
    """The schemes, and the federated run's bytes by direction: in total and round by round."""
    per_round = [{"round": r["round"], "upload": r["upload"], "broadcast": r["broadcast"]}
                 for r in rows if r.get("split") == "bytes" and r.get("model") == "federated"]
    c = cfg.compression
    return {"compress_updates": c.compress_updates, "compress_broadcast": c.compress_broadcast,
            "error_feedback": c.error_feedback, "upload": sum(r["upload"] for r in per_round),
            "broadcast": sum(r["broadcast"] for r in per_round), "per_round": per_round}


def _privacy(cfg: FederationConfig, rows: list[dict]) -> dict:
    """What the run spent. Top level: the record-level figures when DP-SGD ran, else the site-level
    ones; `site` holds the site-level figures whenever site-level DP ran."""
    record, site = _record_spent(cfg, rows), _site_spent(cfg, rows)
    if site is None:
        block = record or {"epsilon": None, "delta": None}
        return {**block, "secure_aggregation": True} if cfg.privacy.secure_aggregation else block
    if record is None:
        return {"level": "site", **{k: site[k] for k in ("budget", "epsilon", "delta", "clip")}, "site": site}
    return {**record, "level": "record+site", "site": site}


def _record_spent(cfg: FederationConfig, rows: list[dict]) -> dict | None:
    """Record-level ε spent by each site (its accountant's figure after its last round), and δ."""
    if cfg.privacy.dp_epsilon is None:
        return None
    spent: dict[str, float] = {}
    for row in rows:
        if row["model"] == "federated" and row["split"] == "train" and "epsilon" in row:
            spent[row["site"]] = max(spent.get(row["site"], 0.0), row["epsilon"])
    return {"level": "record", "budget": cfg.privacy.dp_epsilon, "delta": cfg.privacy.dp_delta, "clip": cfg.privacy.dp_clip,
            "epsilon": max(spent.values()) if spent else 0.0, "epsilon_per_site": dict(sorted(spent.items()))}


def _site_spent(cfg: FederationConfig, rows: list[dict]) -> dict | None:
    """Site-level ε after the last round (every round released counts, selected or not), the C of
    the last round, σ: from the figures the accountant wrote into the training rows."""
    if cfg.privacy.site_dp_epsilon is None:
        return None
    last: dict = {}
    for row in rows:
        if row["model"] == "federated" and row["split"] == "train" and "site_epsilon" in row:
            if not last or row["round"] >= last["round"]:
                last = row
    return {"budget": cfg.privacy.site_dp_epsilon, "epsilon": last.get("site_epsilon", 0.0), "delta": cfg.privacy.site_dp_delta,
            "clip": last.get("site_clip", cfg.privacy.site_dp_clip), "clip_quantile": cfg.privacy.site_dp_clip_quantile,
            "noise_multiplier": last.get("site_noise_multiplier"), "rounds": last.get("round", 0),
            "secure_aggregation": cfg.privacy.secure_aggregation, "accounting": SITE_ACCOUNTING}


SITE_ACCOUNTING = ("dp_accounting RDP, replace-one relation, a fixed number of sites per round sampled "
                   "without replacement (none when every site takes part)")


def _anomalies(rows: list[dict]) -> list[dict]:
    """Per-round anomaly reports back from the federated metric rows (they survive a resume)."""
    by_round: dict[int, dict] = {}
    for row in rows:
        if row["model"] == "federated" and row["split"] == "update":
            by_round.setdefault(row["round"], {})[row["site"]] = row
    return [by_round[r] for r in sorted(by_round)]
