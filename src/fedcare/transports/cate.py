"""Individual treatment effects (CATE) in a simulated federation: T-, S- and DR-learners trained with
the run's own federated training (its algorithm, model and personalization), or as the local and
pooled baselines, and judged on every site's held-out test rows.

T-learner: one outcome model per arm, τ̂_a = μ̂_a − μ̂_0. S-learner: one model with the arm as an
input. DR-learner: outcome models and propensities cross-fitted on two halves of each site's
training rows give every training row its AIPW pseudo-outcome, which one model per treated arm
learns. The models are params like any other: only params, counts and metrics leave a site.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.algorithms import effects as fx
from fedcare.algorithms.uplift import policy_gain, policy_values, qini, value_scores
from fedcare.core.config import FederationConfig
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.data import FederatedDataset, SiteData
from fedcare.data.derived import ARM_INPUT, arm_rows, one_hot, with_arm_input, with_label
from fedcare.data.examples import ArrayExamples, array
from fedcare.federation.effects import OUTCOME_RIDGE, PROPENSITY_RIDGE, features, known_propensity
from fedcare.federation.engine import QuorumError, RoundEngine
from fedcare.federation.plan import Plan
from fedcare.learning.predict import expected_outcome
from fedcare.transports.simulated import build_federation, personalize, pooled_site
from fedcare.transports.simulation import SimulationTransport

LEARNERS = ("t", "s", "dr")
MODES = ("federated", "local", "pooled")


@dataclass
class Models:
    """One trained model per site (the same params everywhere unless personalized or local)."""

    plan: Plan
    params: dict[str, Params]

    def __post_init__(self) -> None:
        self._model = self.plan.new_model()

    def predict(self, site: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """E[y | inputs] under the site's model; None where the site has none."""
        if site not in self.params:
            return None
        return expected_outcome(self._model, self.params[site], inputs, self.plan.shape.task)


def train(cfg: FederationConfig, dataset: FederatedDataset, mode: str, ids: Sequence[str]) -> Models:
    """Train on `dataset` with the run's algorithm: federated (personalized where the run is), each
    site alone, or every site's rows pooled. A shared model serves every site of `ids`, those that
    had no rows to train on included."""
    fed = build_federation(cfg, dataset)
    if mode == "federated":
        result = RoundEngine(fed.plan.algorithm, SimulationTransport(fed.federated_sites), fed.plan.settings).run(
            fed.initial)
        if cfg.personalization.mode != "none":
            return Models(fed.plan, {**dict.fromkeys(ids, result.params), **personalize(fed, result.params)})
        return Models(fed.plan, dict.fromkeys(ids, result.params))
    algorithm, settings = fed.plan.baseline()
    if mode == "local":
        own = {}
        for site in fed.sites:
            try:
                own[site.site_id] = RoundEngine(algorithm, SimulationTransport([site]), settings).run(fed.initial).params
            except QuorumError:  # its training diverged (non-finite params are refused): no model of its own
                continue
        return Models(fed.plan, own)
    params = RoundEngine(algorithm, SimulationTransport([pooled_site(fed)]), settings).run(fed.initial).params
    return Models(fed.plan, dict.fromkeys(ids, params))


def _inputs(data: SiteData, split: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {n: array(data.splits[split], n) for n in names}


def _halves(dataset: FederatedDataset) -> list[FederatedDataset]:
    """The dataset with only the even (then odd) training rows of every site: the DR-learner's folds."""
    out = []
    for h in (0, 1):
        sites = []
        for sd in dataset.sites:
            train = sd.splits["train"]
            rows = np.arange(len(train))[h::2]
            sites.append(SiteData(sd.site_id, {**sd.splits, "train": ArrayExamples(train.take(rows))}))
        out.append(FederatedDataset(dataset.name, dataset.shape, tuple(sites), dataset.preprocessing))
    return out


def _propensity(parts: list[tuple[np.ndarray, np.ndarray]], num_arms: int, known: float | None):
    """P(arm | x) as a function: the known randomisation, or a logistic model from summed Newton steps."""
    if known is not None:
        p = known_propensity(known, num_arms)
        return lambda x: np.tile(p, (len(x), 1))
    (coef,), _ = fx.fit_propensities(lambda cs: [fx.add([fx.propensity_sums(x, t, cs[0]) for x, t in parts])],
                                     [np.zeros((num_arms - 1, parts[0][0].shape[1] + 1))], PROPENSITY_RIDGE)
    return lambda x: np.clip(fx.propensities(x, coef), fx.PROPENSITY_CLIP, 1 - fx.PROPENSITY_CLIP)


class Learners:
    """The CATE learners on one prepared dataset with treatment arms."""

    def __init__(self, cfg: FederationConfig, dataset: FederatedDataset) -> None:
        if dataset.task not in ("binary", "regression"):
            raise ConfigError(f"treatment effects need a binary or continuous --label, not a {dataset.task} one")
        self.cfg, self.dataset = cfg, dataset
        self.arms = tuple(dataset.preprocessing["treatment"]["arms"])
        self.inputs = tuple(dataset.shape.inputs)
        self.known = cfg.data.propensity
        self.ids = [sd.site_id for sd in dataset.sites]
        self._psi: dict[str, dict[str, dict[str, np.ndarray]]] = {}  # pseudo-outcomes per mode, made once

    def _outcomes(self, dataset: FederatedDataset, mode: str) -> list[Models]:
        return [train(self.cfg, arm_rows(dataset, a), mode, self.ids) for a in range(len(self.arms))]

    def effects(self, learner: str, mode: str, split: str = "test") -> dict[str, np.ndarray | None]:
        """Per site, τ̂ (n, K−1) of every treated arm on the rows of `split` (None: no model for an arm)."""
        if learner not in LEARNERS or mode not in MODES:
            raise ConfigError(f"unknown learner '{learner}' or mode '{mode}': learners are t, s, dr")
        return {"t": self._t, "s": self._s, "dr": self._dr}[learner](mode, split)

    def _t(self, mode: str, split: str) -> dict[str, np.ndarray | None]:
        models = self._outcomes(self.dataset, mode)
        out: dict[str, np.ndarray | None] = {}
        for sd in self.dataset.sites:
            mu = [m.predict(sd.site_id, _inputs(sd, split, self.inputs)) for m in models]
            out[sd.site_id] = None if any(v is None for v in mu) else np.stack(mu[1:], 1) - mu[0][:, None]
        return out

    def _s(self, mode: str, split: str) -> dict[str, np.ndarray | None]:
        data = with_arm_input(self.dataset, self.arms)
        model = train(self.cfg, data, mode, self.ids)
        out: dict[str, np.ndarray | None] = {}
        for sd in data.sites:
            x = _inputs(sd, split, self.inputs)
            n = len(next(iter(x.values())))
            mu = [model.predict(sd.site_id, {**x, ARM_INPUT: one_hot(np.full(n, a), len(self.arms))})
                  for a in range(len(self.arms))]
            out[sd.site_id] = None if mu[0] is None else np.stack(mu[1:], 1) - mu[0][:, None]
        return out

    def pseudo_outcomes(self, mode: str) -> dict[str, dict[str, np.ndarray]]:
        """Each row's AIPW pseudo-outcome (n, K−1) per site and split: training rows scored by the
        outcome and propensity models of the other half, validation and test rows by the first half's.
        A site without a model for every arm (local, where it lacks one in a half) has none."""
        if mode not in self._psi:
            self._psi[mode] = self._pseudo_outcomes(mode)
        return self._psi[mode]

    def ate(self, mode: str = "federated") -> dict[str, dict[str, Any]]:
        """Each treated arm's AIPW effect with the DR-learner's nuisances (the run's own federated
        models, cross-fitted): the mean of every row's pseudo-outcome and its standard error."""
        psi = np.vstack([v for splits in self.pseudo_outcomes(mode).values() for v in splits.values()])
        method = (f"AIPW with the DR-learner's {mode} outcome models ({self.cfg.model.name}) and "
                  f"{'known' if self.known is not None else 'learned'} propensity, cross-fitted on halves of "
                  "each site's training rows")
        return {arm: {**fx.mean_estimate(len(psi), float(psi[:, j].sum()), float((psi[:, j] ** 2).sum())).to_json(),
                      "n": len(psi), "method": method} for j, arm in enumerate(self.arms[1:])}

    def _pseudo_outcomes(self, mode: str) -> dict[str, dict[str, np.ndarray]]:
        halves = _halves(self.dataset)
        models = [self._outcomes(h, mode) for h in halves]
        props = []
        for h in halves:
            parts = [(features(sd, "train", self.inputs), array(sd.splits["train"], "treatment")) for sd in h.sites]
            if mode == "local":
                props.append({sd.site_id: _propensity([p], len(self.arms), self.known)
                              for sd, p in zip(h.sites, parts)})
            else:
                shared = _propensity(parts, len(self.arms), self.known)
                props.append({sd.site_id: shared for sd in h.sites})
        out: dict[str, dict[str, np.ndarray]] = {}
        for sd in self.dataset.sites:
            if any(sd.site_id not in m.params for half in models for m in half):
                continue
            out[sd.site_id] = {}
            for split in sd.splits:
                n = sd.sizes()[split]
                which = np.arange(n) % 2 if split == "train" else np.ones(n, dtype=int)  # the other half's models
                psi = np.zeros((n, len(self.arms) - 1))
                for h in (0, 1):
                    rows = which == (1 - h)  # rows the half-h models never saw
                    if not rows.any():
                        continue
                    x = {k: v[rows] for k, v in _inputs(sd, split, self.inputs).items()}
                    mu = [m.predict(sd.site_id, x) for m in models[h]]
                    e = props[h][sd.site_id](np.hstack([v.reshape(len(v), -1) for v in x.values()]))
                    y = array(sd.splits[split], "label")[rows]
                    t = array(sd.splits[split], "treatment")[rows]
                    psi[rows] = fx.aipw_scores(y, t, np.stack(mu, 1), e)
                out[sd.site_id][split] = psi
        return out

    def _dr(self, mode: str, split: str) -> dict[str, np.ndarray | None]:
        psi = self.pseudo_outcomes(mode)
        usable = FederatedDataset(self.dataset.name, self.dataset.shape,
                                  tuple(sd for sd in self.dataset.sites if sd.site_id in psi), self.dataset.preprocessing)
        per_arm = []
        for j in range(len(self.arms) - 1):
            labels = {s: {split_: v[:, j] for split_, v in splits.items()} for s, splits in psi.items()}
            per_arm.append(train(self.cfg, with_label(usable, labels), mode, self.ids))
        out: dict[str, np.ndarray | None] = {}
        for sd in self.dataset.sites:
            tau = [m.predict(sd.site_id, _inputs(sd, split, self.inputs)) for m in per_arm]
            out[sd.site_id] = None if any(v is None for v in tau) else np.stack(tau, 1)
        return out

    def value_scores(self) -> dict[str, np.ndarray]:
        """Γ (n, K) on every site's test rows, from ridge outcome models and propensities fitted on every
        site's training rows (summed, as the effects are): the yardstick of every learner alike."""
        train_parts = [(np.vstack([features(sd, s, self.inputs) for s in ("train", "val")]),
                        np.concatenate([array(sd.splits[s], "label") for s in ("train", "val")]),
                        np.concatenate([array(sd.splits[s], "treatment") for s in ("train", "val")]))
                       for sd in self.dataset.sites]
        coef = fx.fit_outcomes(fx.add([fx.outcome_sums(x, y, t, len(self.arms)) for x, y, t in train_parts]),
                               OUTCOME_RIDGE)
        propensity = _propensity([(x, t) for x, _, t in train_parts], len(self.arms), self.known)
        out = {}
        for sd in self.dataset.sites:
            x = features(sd, "test", self.inputs)
            out[sd.site_id] = value_scores(array(sd.splits["test"], "label"), array(sd.splits["test"], "treatment"),
                                           fx.predict_outcomes(x, coef), propensity(x))
        return out


def recommend(tau: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """The arm with the best predicted outcome: the control (0) unless some arm's effect is better than 0."""
    gain = np.hstack([np.zeros((len(tau), 1)), tau if higher_is_better else -tau])
    return gain.argmax(axis=1)


def evaluation(learners: Learners, taus: Mapping[str, np.ndarray | None], higher_is_better: bool) -> dict[str, Any]:
    """Per site, on its test rows: the recommended policy's value against treat-none and treat-all, its
    gain over the best of them (positive: better, in the outcome's better direction), and for each
    treated arm the Qini coefficient and uplift AUC, each with its interval; the site where the
    policy gains least is the worst site."""
    gammas = learners.value_scores()
    sites: dict[str, Any] = {}
    held: list[tuple[np.ndarray, ...]] = []
    for sd in learners.dataset.sites:
        tau = taus[sd.site_id]
        if tau is None:
            sites[sd.site_id] = {"note": "no model for every arm at this site"}
            continue
        rows = (array(sd.splits["test"], "label"), array(sd.splits["test"], "treatment"), tau, gammas[sd.site_id])
        sites[sd.site_id] = _judge(*rows, learners.arms, higher_is_better)
        held.append(rows)
    overall = (_judge(*(np.concatenate(parts) for parts in zip(*held)), learners.arms, higher_is_better)
               if held else None)  # None: no site has a model for every arm
    judged = {s: v["policy_gain"]["estimate"] for s, v in sites.items() if "policy_gain" in v}
    worst = min(judged, key=judged.__getitem__) if judged else None
    return {"all_sites": overall, "sites": sites,
            "worst_site": {"site_id": worst, "policy_gain": judged[worst] if worst else None}}


def _judge(y: np.ndarray, t: np.ndarray, tau: np.ndarray, gamma: np.ndarray, arms: tuple[str, ...],
           higher_is_better: bool) -> dict[str, Any]:
    choice = recommend(tau, higher_is_better)
    pv = policy_values(gamma, choice, arms)
    sign = 1.0 if higher_is_better else -1.0
    fixed = {arms[0]: pv["treat_none"]["estimate"], **{a: v["estimate"] for a, v in pv["treat_all"].items()}}
    best = max(fixed, key=lambda a: sign * fixed[a])
    entry: dict[str, Any] = {"policy_value": pv, "uplift": {},
                             "policy_gain": {**policy_gain(gamma, choice, arms.index(best), sign), "over": best}}
    for j, arm in enumerate(arms[1:]):
        rows = (t == 0) | (t == j + 1)
        benefit = tau[rows, j] if higher_is_better else -tau[rows, j]
        entry["uplift"][arm] = qini(benefit, y[rows], t[rows] == j + 1)
    return entry


def cate_block(cfg: FederationConfig, dataset: FederatedDataset) -> dict[str, Any]:
    """summary.json's `treatment.cate`: per learner and model (federated, and the baselines when the run
    has them), the held-out evaluation per site; with the DR-learner, the average effects again with
    its federated models as the nuisances."""
    learners = Learners(cfg, dataset)
    higher = cfg.effects.outcome_better == "higher"
    modes = MODES if cfg.run.baselines else ("federated",)
    block: dict[str, Any] = {"better": cfg.effects.outcome_better, "split": "test", "learners": {}}
    for learner in cfg.effects.learners:
        block["learners"][learner] = {mode: evaluation(learners, learners.effects(learner, mode), higher)
                                      for mode in modes}
    if "dr" in cfg.effects.learners:
        block["ate_with_learned_models"] = learners.ate("federated")
    return block
