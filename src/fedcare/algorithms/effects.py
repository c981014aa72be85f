"""Treatment effects from per-site sums: the math of federated AIPW (doubly robust) estimation.

Every fit here is a sum over patients, so the coordinator needs only each site's sums and the
federated result equals the pooled one to rounding: outcome models per arm are ridge regressions
from XᵀX and Xᵀy; the propensity model is a multinomial logistic regression fitted by Newton's
method from the sites' summed gradients and Hessians; the effect of arm a against the control is
the mean of the AIPW score

    ψ = μ_a(x) − μ_0(x) + 1[t=a]·(y − μ_a(x))/e_a(x) − 1[t=0]·(y − μ_0(x))/e_0(x)

with its influence-function (sandwich) variance from Σψ, Σψ² and n. Arm 0 is the control.
Pure numpy: the site side (`*_sums`) reads a site's arrays, the coordinator side the added sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054
PROPENSITY_CLIP = 0.01  # learned propensities are kept in [0.01, 0.99], so no patient's weight exceeds 100


def with_intercept(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.hstack([np.ones((len(x), 1)), x])


# ----- outcome models: ridge per arm from XᵀX, Xᵀy ---------------------------------------------


def outcome_sums(x: np.ndarray, y: np.ndarray, t: np.ndarray, num_arms: int) -> dict[str, np.ndarray]:
    """A site's sufficient statistics per arm: XᵀX (K, d, d), Xᵀy (K, d), yᵀy (K,) and rows (K,)."""
    d = with_intercept(x)
    y = np.asarray(y, dtype=np.float64)
    xtx = np.stack([d[t == a].T @ d[t == a] for a in range(num_arms)])
    xty = np.stack([d[t == a].T @ y[t == a] for a in range(num_arms)])
    yty = np.array([float(y[t == a] @ y[t == a]) for a in range(num_arms)])
    return {"xtx": xtx, "xty": xty, "yty": yty, "n": np.bincount(t, minlength=num_arms).astype(np.float64)}


def _penalty(dim: int, ridge: float) -> np.ndarray:
    return ridge * np.diag([0.0] + [1.0] * (dim - 1)) + 1e-12 * np.eye(dim)


def fit_outcomes(sums: Mapping[str, np.ndarray], ridge: float) -> np.ndarray:
    """Coefficients (K, d) of each arm's ridge regression (the intercept is not penalised)."""
    xtx, xty = np.asarray(sums["xtx"]), np.asarray(sums["xty"])
    penalty = _penalty(xtx.shape[-1], ridge)
    return np.stack([np.linalg.solve(xtx[a] + penalty, xty[a]) for a in range(len(xtx))])


def outcome_covariances(sums: Mapping[str, np.ndarray], coef: np.ndarray, ridge: float) -> np.ndarray:
    """Each arm's coefficient covariance (K, d, d): σ̂² A⁻¹XᵀX A⁻¹ with A = XᵀX + λD and σ̂² the
    residual variance, all from the sums (yᵀy − 2βᵀXᵀy + βᵀXᵀXβ is the residual sum of squares)."""
    out = []
    for a in range(len(coef)):
        xtx, xty, b = np.asarray(sums["xtx"][a]), np.asarray(sums["xty"][a]), coef[a]
        rss = max(float(sums["yty"][a] - 2 * b @ xty + b @ xtx @ b), 0.0)
        dof = max(float(sums["n"][a]) - len(b), 1.0)
        inv = np.linalg.inv(xtx + _penalty(len(b), ridge))
        out.append(rss / dof * inv @ xtx @ inv)
    return np.stack(out)


def predict_outcomes(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Each row's predicted outcome under every arm, (n, K)."""
    return with_intercept(x) @ np.asarray(coef).T


# ----- propensity: multinomial logistic regression, Newton steps from summed derivatives -------


def propensities(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """P(arm | x), (n, K), from coefficients (K−1, d) of the treated arms against the control."""
    logits = np.hstack([np.zeros((len(x), 1)), with_intercept(x) @ np.asarray(coef).T])
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def propensity_sums(x: np.ndarray, t: np.ndarray, coef: np.ndarray) -> dict[str, np.ndarray]:
    """A site's gradient and Hessian of the log-likelihood at `coef` (flattened, arm-major)."""
    d = with_intercept(x)
    k1 = np.asarray(coef).shape[0]
    p = propensities(x, coef)[:, 1:]
    onehot = (np.asarray(t)[:, None] == np.arange(1, k1 + 1)[None, :]).astype(np.float64)
    grad = ((onehot - p).T @ d).reshape(-1)
    hess = np.zeros((k1 * d.shape[1],) * 2)
    for a in range(k1):
        for b in range(k1):
            w = p[:, a] * ((a == b) - p[:, b])
            hess[a * d.shape[1]:(a + 1) * d.shape[1], b * d.shape[1]:(b + 1) * d.shape[1]] = (d * w[:, None]).T @ d
    return {"grad": grad, "hess": hess}


def newton_step(coef: np.ndarray, sums: Mapping[str, np.ndarray], ridge: float) -> tuple[np.ndarray, float]:
    """One Newton step on the penalised log-likelihood; returns the new coefficients and the step's size."""
    coef = np.asarray(coef, dtype=np.float64)
    k1, dim = coef.shape
    mask = np.tile([0.0] + [1.0] * (dim - 1), k1)
    grad = np.asarray(sums["grad"]) - ridge * mask * coef.reshape(-1)
    hess = np.asarray(sums["hess"]) + np.diag(ridge * mask + 1e-9)
    step = np.linalg.solve(hess, grad)
    return coef + step.reshape(k1, dim), float(np.abs(step).max())


def fit_propensities(sums_at: Callable[[list[np.ndarray]], Sequence[Mapping[str, np.ndarray]]],
                     coefs: list[np.ndarray], ridge: float, steps: int = 50, tol: float = 1e-9
                     ) -> tuple[list[np.ndarray], int]:
    """Newton's method on several models at once (one per cross-fitting fold): `sums_at(coefs)` returns
    each model's summed gradient and Hessian (one question to the sites per step). Returns the
    coefficients and the steps taken."""
    for step in range(1, steps + 1):
        moved = [newton_step(c, s, ridge) for c, s in zip(coefs, sums_at(coefs), strict=True)]
        coefs = [c for c, _ in moved]
        if max(size for _, size in moved) < tol:
            break
    return coefs, step


# ----- the AIPW score and its sums --------------------------------------------------------------


def aipw_scores(y: np.ndarray, t: np.ndarray, mu: np.ndarray, e: np.ndarray) -> np.ndarray:
    """ψ (n, K−1): each row's score for every treated arm against the control."""
    y = np.asarray(y, dtype=np.float64)
    num_arms = mu.shape[1]
    residual = np.stack([(t == a) * (y - mu[:, a]) / e[:, a] for a in range(num_arms)], axis=1)
    return (mu[:, 1:] - mu[:, :1]) + residual[:, 1:] - residual[:, :1]


def score_sums(psi: np.ndarray, t: np.ndarray, num_arms: int) -> dict[str, np.ndarray]:
    """What a site sends of its scores: n, Σψ and Σψ² per treated arm, and its rows per arm."""
    return {"n": np.array(float(len(psi))), "sum": psi.sum(axis=0), "sumsq": (psi ** 2).sum(axis=0),
            "arm_rows": np.bincount(t, minlength=num_arms).astype(np.float64)}


def add(sums: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The sum of several sites' sums, key by key."""
    return {key: np.sum([np.asarray(s[key], dtype=np.float64) for s in sums], axis=0) for key in sums[0]}


@dataclass(frozen=True)
class Estimate:
    """A mean effect with its standard error and 95 % normal interval."""

    estimate: float
    se: float

    @property
    def ci95(self) -> tuple[float, float]:
        return self.estimate - Z95 * self.se, self.estimate + Z95 * self.se

    def to_json(self) -> dict[str, object]:
        low, high = self.ci95
        return {"estimate": self.estimate, "se": self.se, "ci95": [low, high]}


def mean_estimate(n: float, total: float, total_sq: float) -> Estimate:
    """The mean of ψ and its standard error √(Σ(ψ − ψ̄)² / (n(n − 1))), from n, Σψ and Σψ²."""
    mean = total / n
    if n < 2:
        return Estimate(mean, math.nan)
    ss = max(total_sq - n * mean * mean, 0.0)
    return Estimate(mean, math.sqrt(ss / (n * (n - 1))))


def heterogeneity(estimates: Sequence[Estimate]) -> dict[str, float | int | None]:
    """Cochran's Q across sites (inverse-variance weights), its χ² p-value and I²."""
    usable = [e for e in estimates if math.isfinite(e.se) and e.se > 0]
    if len(usable) < 2:
        return {"q": None, "df": len(usable) - 1 if usable else 0, "p_value": None, "i2": None,
                "sites": len(usable)}
    w = np.array([1.0 / e.se ** 2 for e in usable])
    theta = np.array([e.estimate for e in usable])
    fixed = float((w * theta).sum() / w.sum())
    q = float((w * (theta - fixed) ** 2).sum())
    df = len(usable) - 1
    from scipy.stats import chi2  # here, not at the top: importing scipy.stats costs every simulation ~1 s

    return {"q": q, "df": df, "p_value": float(chi2.sf(q, df)), "i2": max(0.0, (q - df) / q) if q > 0 else 0.0,
            "sites": len(usable)}
