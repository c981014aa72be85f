"""Judging predicted individual effects on held-out rows without knowing the true ones.

Policy value: the doubly robust value score Γᵢ(a) = m_a(xᵢ) + 1[tᵢ = a]·(yᵢ − m_a(xᵢ))/e_a(xᵢ) estimates
each patient's outcome under arm a; a policy's value is the mean of Γᵢ(π(xᵢ)), with a normal
interval, beside treating everyone with the control (treat-none) or with one arm (treat-all).
Qini coefficient and uplift AUC for one treated arm against the control: patients ranked by
predicted benefit, the area between the cumulative gain curve and random ranking, normalised by
the number of rows; intervals by a seeded bootstrap. Pure numpy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedcare.algorithms.effects import Z95

BOOTSTRAP = 200


def _mean_ci(values: np.ndarray) -> dict[str, Any]:
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"estimate": mean, "ci95": [mean - Z95 * se, mean + Z95 * se] if n > 1 else None}


def value_scores(y: np.ndarray, t: np.ndarray, m: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Γ (n, K): each row's doubly robust outcome under every arm."""
    onehot = t[:, None] == np.arange(m.shape[1])[None, :]
    return m + onehot * (np.asarray(y, dtype=np.float64)[:, None] - m) / e


def policy_values(gamma: np.ndarray, choice: np.ndarray, arms: tuple[str, ...]) -> dict[str, Any]:
    """The recommended policy's value and each fixed arm's, each with its interval."""
    rows = np.arange(len(gamma))
    policy = gamma[rows, choice]
    fixed = {arm: _mean_ci(gamma[:, a]) for a, arm in enumerate(arms)}
    return {"n": len(gamma), "policy": _mean_ci(policy), "treat_none": fixed[arms[0]],
            "treat_all": {arm: fixed[arm] for arm in arms[1:]},
            "recommended_share": {arm: float((choice == a).mean()) for a, arm in enumerate(arms)}}


def policy_gain(gamma: np.ndarray, choice: np.ndarray, over: int, sign: float) -> dict[str, Any]:
    """The policy's value minus that of giving everyone arm `over`, times `sign` (−1 when a lower
    outcome is better); paired row by row, so its interval is narrower than two values' intervals."""
    return _mean_ci(sign * (gamma[np.arange(len(gamma)), choice] - gamma[:, over]))


def _qini(benefit: np.ndarray, y: np.ndarray, treated: np.ndarray) -> tuple[float, float]:
    """(Qini coefficient, uplift AUC) of one ranking, both normalised by the rows."""
    order = np.argsort(-benefit, kind="stable")
    y, treated = y[order], treated[order]
    nt, nc = np.cumsum(treated), np.cumsum(~treated)
    yt, yc = np.cumsum(y * treated), np.cumsum(y * ~treated)
    with np.errstate(divide="ignore", invalid="ignore"):
        qini = np.where(nc > 0, yt - yc * nt / np.maximum(nc, 1), yt)
        uplift = np.where((nt > 0) & (nc > 0), yt / np.maximum(nt, 1) - yc / np.maximum(nc, 1), 0.0)
    n = len(y)
    random = qini[-1] * np.arange(1, n + 1) / n
    return float((qini - random).sum() / n / n), float(uplift.mean())


def qini(benefit: np.ndarray, y: np.ndarray, treated: np.ndarray, seed: int = 0) -> dict[str, Any] | None:
    """Qini coefficient and uplift AUC with bootstrap intervals; None with fewer than two rows per arm.
    `benefit` is the predicted effect in the direction that is better (higher predicted benefit first)."""
    treated = np.asarray(treated, dtype=bool)
    y = np.asarray(y, dtype=np.float64)
    if treated.sum() < 2 or (~treated).sum() < 2:
        return None
    q, auc = _qini(benefit, y, treated)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(y), len(y))
        if treated[i].any() and (~treated[i]).any():
            draws.append(_qini(benefit[i], y[i], treated[i]))
    d = np.array(draws)
    return {"n": len(y), "qini": q, "qini_ci95": np.percentile(d[:, 0], [2.5, 97.5]).tolist(),
            "uplift_auc": auc, "uplift_auc_ci95": np.percentile(d[:, 1], [2.5, 97.5]).tolist()}
