"""The Breslow cumulative baseline hazard of a survival run, computed federatedly, so a Cox model
can give survival curves S(t | x) = exp(−H0(t)·exp(risk)) and not only its log relative hazard.

The time grid is common to all sites and chosen without pooling rows: GRID_POINTS equally spaced
times t_k = T·k/GRID_POINTS (k = 1..GRID_POINTS), T the longest follow-up any site reports on its
training rows (each site's maximum is an aggregate; it is one patient's time, as a survival table's
last row is). Each site then returns, per grid interval I_k = (t_{k−1}, t_k] (the first interval
also holds times ≤ 0), its number of events d_k and the sum R_k of exp(risk) over its training
patients still at risk at the start of the interval (time > t_{k−1}; everyone for k = 1): sums,
never rows (LocalSite.hazard_sums). The coordinator adds them over sites and

    H0(t_k) = Σ_{j ≤ k} d_j / R_j   (a term with d_j = 0 is 0)

This is Breslow's estimator with the events binned to the grid: every event in I_k is counted at
t_k, with the risk set at the interval's start (exact Breslow uses the risk set at each event time),
so it equals the exact estimator when every event time is a grid point and the risk set does not
change inside an interval, and is close to it for a fine grid."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

GRID_POINTS = 20


def time_grid(max_times: Iterable[float | None], points: int = GRID_POINTS) -> np.ndarray | None:
    """The common grid from each site's longest training follow-up; None when no site has one > 0."""
    longest = max((float(t) for t in max_times if t is not None), default=0.0)
    if not longest > 0:
        return None
    return longest * np.arange(1, points + 1, dtype=np.float64) / points


def site_sums(time: np.ndarray, event: np.ndarray, risk: np.ndarray, grid: np.ndarray) -> dict[str, list[float]]:
    """One site's per-interval events and at-risk sums of exp(risk) (see the module's docstring)."""
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event, dtype=np.float64).reshape(-1)
    weight = np.exp(np.asarray(risk, dtype=np.float64).reshape(-1))
    grid = np.asarray(grid, dtype=np.float64)
    starts = np.concatenate([[-np.inf], grid[:-1]])
    events = [float(np.sum(event[(time > a) & (time <= b)])) for a, b in zip(starts, grid)]
    at_risk = [float(np.sum(weight[time > a])) for a in starts]
    return {"events": events, "at_risk": at_risk}


def breslow(sums: Iterable[Mapping[str, list[float]] | None], grid: np.ndarray) -> dict[str, list[float]] | None:
    """The sites' sums added up, as the model card's block: the grid and H0 at each of its times;
    None when no site sent any."""
    sent = [s for s in sums if s is not None]
    if not sent:
        return None
    d = np.sum([s["events"] for s in sent], axis=0)
    r = np.sum([s["at_risk"] for s in sent], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        steps = np.where(d > 0, d / np.where(r > 0, r, 1.0), 0.0)
    return {"times": [float(t) for t in grid], "cumulative_hazard": [float(h) for h in np.cumsum(steps)]}


def survival_curves(risk: np.ndarray, baseline: Mapping[str, list[float]]) -> np.ndarray:
    """S(t_k | x) = exp(−H0(t_k)·exp(risk)), one row per patient, one column per grid time."""
    h0 = np.asarray(baseline["cumulative_hazard"], dtype=np.float64)
    return np.exp(-np.outer(np.exp(np.asarray(risk, dtype=np.float64).reshape(-1)), h0))


def column(t: float) -> str:
    """A grid time's column name in predictions: `survival@<t>`."""
    return f"survival@{t:.6g}"
