"""Federated average treatment effects: the coordinator asks, every site answers with sums.

Like data preparation, this is questions and JSON answers, transport-free: `effects` (the
coordinator) sends each question to every site through `ask`; `EffectSite` (one per site, holding
its encoded examples) answers it. Cross-fitting uses the split the sites already made: the models
fitted on every site's training (and validation) rows score the test rows, and the models fitted on
the test rows score the training rows, so no patient is scored by a model that saw it.

What each phase sends (coordinator's question -> site's answer), per fold (training rows, test rows):

outcomes    nothing -> per arm XᵀX, Xᵀy, yᵀy and the row count of the fold's rows;
propensity  the current coefficients (only without a known propensity, about 5-10 times) -> the
            log-likelihood's gradient and Hessian over the fold's rows;
scores      the fitted models -> per treated arm n, Σψ and Σψ² over all the site's rows, and its rows
            per arm.

The federated estimate needs only the sums over sites (so secure aggregation could hide each site's
share); the per-site estimates are each site's own three numbers per arm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedcare.algorithms import effects as fx
from fedcare.core.errors import ConfigError, DataError
from fedcare.data.arms import ArmEncoding
from fedcare.data.dataset import SiteData
from fedcare.data.examples import array

Ask = Callable[[str, dict], Mapping[str, dict]]
OUTCOME_RIDGE = 1.0     # on standardised features; the intercept is not penalised
PROPENSITY_RIDGE = 1.0
MIN_ARM_ROWS = 2        # a site's own estimate of an arm needs this many rows in it and in the control
FOLDS = (("train", "val"), ("test",))


def _lists(values: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in values.items()}


def _arrays(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    try:
        out = {str(k): np.asarray(v, dtype=np.float64) for k, v in values.items()}
    except (TypeError, ValueError, AttributeError):
        raise DataError("a site's answer about treatment effects is not a set of numbers; start it again") from None
    if not all(np.isfinite(v).all() for v in out.values()):
        raise DataError("a site's answer about treatment effects holds a value that is not finite")
    return out


def features(data: SiteData, split: str, inputs: Sequence[str]) -> np.ndarray:
    """A split's encoded inputs side by side, one row per patient."""
    arrays = [array(data.splits[split], name) for name in inputs]
    return np.hstack([a.reshape(len(a), int(np.prod(a.shape[1:]))).astype(np.float64) for a in arrays])


class EffectSite:
    """Site side: holds a site's encoded rows per fold; answers with sums, never rows."""

    def __init__(self, data: SiteData, inputs: Sequence[str], num_arms: int) -> None:
        self.site_id, self.num_arms = data.site_id, num_arms
        self.folds = []
        for splits in FOLDS:
            x = np.vstack([features(data, s, inputs) for s in splits])
            y = np.concatenate([array(data.splits[s], "label").astype(np.float64) for s in splits])
            t = np.concatenate([array(data.splits[s], "treatment").astype(np.int64) for s in splits])
            self.folds.append((x, y, t))

    def answer(self, phase: str, question: Mapping[str, Any]) -> dict[str, Any]:
        if phase == "outcomes":
            return {"folds": [_lists(fx.outcome_sums(x, y, t, self.num_arms)) for x, y, t in self.folds]}
        if phase == "propensity":
            coef = [np.asarray(c, dtype=np.float64) for c in question["coef"]]
            return {"folds": [_lists(fx.propensity_sums(x, t, c)) for (x, _, t), c in zip(self.folds, coef)]}
        if phase == "scores":
            return _lists(self._scores(question))
        raise DataError(f"site '{self.site_id}' got an unknown treatment question '{phase}'")

    def _scores(self, question: Mapping[str, Any]) -> dict[str, np.ndarray]:
        outcome = [np.asarray(c, dtype=np.float64) for c in question["outcome"]]
        known, coef = question.get("known"), question.get("propensity")
        psi, arms = [], []
        for k, (x, y, t) in enumerate(self.folds):
            other = 1 - k  # the models fitted on the other fold score this one
            mu = fx.predict_outcomes(x, outcome[other])
            if known is not None:
                e = np.tile(np.asarray(known, dtype=np.float64), (len(x), 1))
            else:
                e = np.clip(fx.propensities(x, np.asarray(coef[other])), fx.PROPENSITY_CLIP, 1 - fx.PROPENSITY_CLIP)
            psi.append(fx.aipw_scores(y, t, mu, e))
            arms.append(t)
        return fx.score_sums(np.vstack(psi), np.concatenate(arms), self.num_arms)


def in_process(sites: Sequence[EffectSite]) -> Ask:
    return lambda phase, question: {s.site_id: s.answer(phase, question) for s in sites}


def known_propensity(p: float, num_arms: int) -> list[float]:
    """Each arm's probability when every treated arm has probability p (the control the rest)."""
    control = 1.0 - (num_arms - 1) * p
    if control <= 0:
        raise ConfigError(f"--propensity {p} for each of {num_arms - 1} treated arms leaves no patient for the "
                          f"control; give a value below {1 / (num_arms - 1):.3g}")
    return [control] + [p] * (num_arms - 1)


def _ask(ask: Ask, site_ids: Sequence[str], phase: str, question: dict) -> list[dict[str, Any]]:
    answers = ask(phase, question)
    missing = [s for s in site_ids if s not in answers]
    if missing:
        raise DataError(f"site '{missing[0]}' sent no answer to the treatment question '{phase}'")
    return [answers[s] for s in site_ids]


def _fold_sums(answers: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
    return [fx.add([_arrays(a["folds"][k]) for a in answers]) for k in range(len(FOLDS))]


def effects(ask: Ask, site_ids: Sequence[str], arms: ArmEncoding, propensity: float | None,
            method_outcome: str) -> dict[str, Any]:
    """Each treated arm's federated AIPW effect against the control, each site's own, and Cochran's Q
    (`arms`); and the ridge outcome models of every arm fitted on all rows with their covariances
    (`model`: what recommendations for new patients use)."""
    num_arms = len(arms.arms)
    outcome_sums = _fold_sums(_ask(ask, site_ids, "outcomes", {}))
    for k, sums in enumerate(outcome_sums):
        empty = [arms.arms[a] for a in range(num_arms) if sums["n"][a] == 0]
        if empty:
            where = "training" if k == 0 else "test"
            raise DataError(f"arm '{empty[0]}' has no patient in any site's {where} rows, so its outcome model "
                            "cannot be cross-fitted; lower --test-fraction or pool that arm with another")
    outcome = [fx.fit_outcomes(s, OUTCOME_RIDGE).tolist() for s in outcome_sums]
    question: dict[str, Any] = {"outcome": outcome}
    if propensity is not None:
        question["known"] = known_propensity(propensity, num_arms)
        how = f"known propensity {propensity:g} per treated arm"
    else:
        dim = outcome_sums[0]["xty"].shape[-1]
        coef, step = fx.fit_propensities(
            lambda cs: _fold_sums(_ask(ask, site_ids, "propensity", {"coef": [c.tolist() for c in cs]})),
            [np.zeros((num_arms - 1, dim)) for _ in FOLDS], PROPENSITY_RIDGE)
        question["propensity"] = [c.tolist() for c in coef]
        how = (f"propensity learned (multinomial logistic, federated Newton, {step} steps, "
               f"clipped to [{fx.PROPENSITY_CLIP}, {1 - fx.PROPENSITY_CLIP}])")
    method = (f"AIPW (doubly robust), ridge outcome model per arm, {how}, 2-fold cross-fitting on the sites' "
              f"train/test split, influence-function variance; {method_outcome}")
    per_site = [_arrays(a) for a in _ask(ask, site_ids, "scores", question)]
    total = fx.add(per_site)
    everything = fx.add(outcome_sums)
    coef = fx.fit_outcomes(everything, OUTCOME_RIDGE)
    out: dict[str, Any] = {"model": {"coef": coef, "cov": fx.outcome_covariances(everything, coef, OUTCOME_RIDGE)},
                           "arms": {}}
    for j, arm in enumerate(arms.arms[1:]):
        ate = fx.mean_estimate(float(total["n"]), float(total["sum"][j]), float(total["sumsq"][j]))
        sites: dict[str, Any] = {}
        site_estimates = []
        for sid, s in zip(site_ids, per_site):
            rows = {arms.control: int(s["arm_rows"][0]), arm: int(s["arm_rows"][j + 1])}
            entry: dict[str, Any] = {"rows": rows}
            short = [a for a, n in rows.items() if n < MIN_ARM_ROWS]
            if short:
                entry.update(estimate=None, ci95=None,
                             note=f"fewer than {MIN_ARM_ROWS} patients in arm '{short[0]}': no estimate of its own; "
                                  "its rows still count in the federated estimate")
            else:
                est = fx.mean_estimate(float(s["n"]), float(s["sum"][j]), float(s["sumsq"][j]))
                entry.update(est.to_json())
                site_estimates.append(est)
            sites[sid] = entry
        out["arms"][arm] = {"ate": {**ate.to_json(), "n": int(total["n"]), "method": method}, "sites": sites,
                    "heterogeneity": fx.heterogeneity(site_estimates)}
    return out
