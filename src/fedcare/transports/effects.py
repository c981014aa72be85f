"""Treatment effects in a simulated federation: every site answers in this process, and the pooled
baseline is the same estimator with every site's rows at one site."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.core.config import FederationConfig
from fedcare.core.config.data import DataSpec
from fedcare.core.errors import ConfigError
from fedcare.data import FederatedDataset, SiteData
from fedcare.data.arms import ArmEncoding
from fedcare.data.dataset import SPLITS
from fedcare.data.examples import concat
from fedcare.federation.effects import EffectSite, effects, in_process, known_propensity
from fedcare.federation.recommender import Recommender
from fedcare.transports.cate import cate_block

OUTCOMES = {"binary": "risk difference", "regression": "mean difference"}


def treatment_block(dataset: FederatedDataset, spec: DataSpec) -> dict[str, Any]:
    """summary.json's `treatment`: control, arms, and per treated arm the federated `ate`, the `pooled`
    one, each site's own, and the heterogeneity across sites."""
    return estimate_treatment(dataset, spec)[0]


def check_treatment(dataset: FederatedDataset, spec: DataSpec) -> None:
    """Refuse, before any training, what the effects cannot estimate: a label that is neither binary
    nor continuous, or a known propensity that leaves the control no patient."""
    if dataset.task not in OUTCOMES:
        raise ConfigError(f"treatment effects need a binary or continuous --label, not a {dataset.task} one")
    if spec.propensity is not None:
        known_propensity(spec.propensity, len(dataset.preprocessing["treatment"]["arms"]))


def estimate_treatment(dataset: FederatedDataset, spec: DataSpec) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The treatment block, and the federated outcome models of every arm (for recommendations)."""
    check_treatment(dataset, spec)
    arms = ArmEncoding.from_json(dataset.preprocessing["treatment"])
    inputs = tuple(dataset.shape.inputs)
    label = dataset.preprocessing["label"]
    outcome = OUTCOMES[dataset.task] + (f" of {label['column']} = {label['positive_class']}"
                                        if dataset.task == "binary" else f" of {label['column']}")
    sites = [EffectSite(sd, inputs, len(arms.arms)) for sd in dataset.sites]
    federated = effects(in_process(sites), [s.site_id for s in sites], arms, spec.propensity, outcome)
    pooled_data = SiteData("pooled", {s: concat([sd.splits[s] for sd in dataset.sites]) for s in SPLITS})
    pooled = effects(in_process([EffectSite(pooled_data, inputs, len(arms.arms))]), ["pooled"], arms,
                     spec.propensity, outcome)
    block: dict[str, Any] = {"column": arms.column, "control": arms.control, "control_from": arms.control_from,
                             "arms": list(arms.arms), "outcome": outcome, "missing_arms": arms.missing(),
                             "effects": {}}
    for arm, result in federated["arms"].items():
        p = pooled["arms"][arm]["ate"]
        block["effects"][arm] = {"ate": result["ate"],
                                 "pooled": {k: p[k] for k in ("estimate", "se", "ci95", "n")},
                                 "sites": result["sites"], "heterogeneity": result["heterogeneity"]}
    return block, federated["model"]


@dataclass(frozen=True)
class SimulatedEffects:
    block: dict[str, Any]      # summary.json's `treatment`
    recommender: Recommender   # what `fedcare recommend` reads from the run folder


def simulate_effects(cfg: FederationConfig, dataset: FederatedDataset) -> SimulatedEffects:
    """Everything a simulated run with an arm adds: the average effects, the CATE learners' evaluation
    (unless `learner none`) and the recommender."""
    block, models = estimate_treatment(dataset, cfg.data)
    if cfg.effects.learners:
        block["cate"] = cate_block(cfg, dataset)
    recommender = Recommender(tuple(block["arms"]), cfg.effects.outcome_better, block["outcome"],
                              dataset.preprocessing["encoding"], models["coef"], models["cov"])
    return SimulatedEffects(block, recommender)
