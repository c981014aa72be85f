"""95 % intervals of a site's metrics, computed where the per-patient scores are: at the site.

Only scalars leave the site (`accuracy_low`, `accuracy_high`, ...), so the report can show how sure
each hospital's figure is without any patient's score crossing the wire. Wilson's score interval
for a proportion (accuracy); a percentile bootstrap for ROC-AUC and Harrell's C-index, whose
sampling distribution has no closed form worth trusting on a 16-patient split. The bootstrap is
seeded, so a run repeats bit for bit, and is weighted (multinomial counts over the patients) so
each replicate costs array operations, not a Python loop.
"""

from __future__ import annotations

import numpy as np

from fedcare.learning.metrics import Metrics

Z95 = 1.959963984540054
REPLICATES = 200
_SEED = 20_240_601
_CHUNK = 1 << 22  # pair-matrix elements per block of the C-index bootstrap (bounds memory at ~32 MB)


def wilson(successes: float, n: int) -> tuple[float, float] | None:
    """Wilson's 95 % score interval of a proportion; None without observations."""
    if n <= 0:
        return None
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _weights(n: int) -> np.ndarray:
    """(REPLICATES, n) bootstrap counts: how often each patient is drawn in each replicate."""
    draws = np.random.default_rng(_SEED).integers(0, n, size=(REPLICATES, n))
    draws += np.arange(REPLICATES)[:, None] * n
    return np.bincount(draws.ravel(), minlength=REPLICATES * n).reshape(REPLICATES, n).astype(np.float64)


def _percentiles(values: np.ndarray) -> tuple[float, float] | None:
    values = values[np.isfinite(values)]
    if len(values) < REPLICATES // 2:  # most replicates undefined (one class drawn): no interval
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def auc_interval(y: np.ndarray, score: np.ndarray) -> tuple[float, float] | None:
    """Bootstrap 95 % interval of ROC-AUC (ties count half): one sort, then cumulative sums of the
    negatives' weights per replicate."""
    y = np.asarray(y).reshape(-1) == 1
    if y.all() or not y.any():
        return None
    order = np.argsort(score, kind="stable")
    s, pos = np.asarray(score, dtype=np.float64)[order], y[order]
    w = _weights(len(s))[:, order]
    neg_w = np.where(pos, 0.0, w)
    cum = np.concatenate([np.zeros((REPLICATES, 1)), np.cumsum(neg_w, axis=1)], axis=1)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    group = np.repeat(np.arange(len(starts)), ends - starts)
    below = cum[:, starts[group]]
    tied = cum[:, ends[group]] - below
    pos_w = np.where(pos, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_w * (below + 0.5 * tied)).sum(axis=1) / (pos_w.sum(axis=1) * neg_w.sum(axis=1))
    return _percentiles(auc)


def c_index_interval(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> tuple[float, float] | None:
    """Bootstrap 95 % interval of Harrell's C-index, from the comparable pairs' matrix (built in
    blocks of rows): cost replicates × n², fine for a site's test split of a few thousand."""
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event).reshape(-1) != 0
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    n = len(time)
    if n < 2 or not event.any() or np.isnan(risk).any():
        return None
    w = _weights(n)
    num = np.zeros(REPLICATES)
    den = np.zeros(REPLICATES)
    step = max(1, _CHUNK // n)
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        comparable = event[rows, None] & (time[rows, None] < time[None, :])
        diff = risk[rows, None] - risk[None, :]
        score = comparable * ((diff > 0) + 0.5 * (diff == 0))
        num += np.einsum("bi,bi->b", w[:, rows], w @ score.T)
        den += np.einsum("bi,bi->b", w[:, rows], w @ comparable.T.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return _percentiles(num / den)


def _add(out: Metrics, name: str, bounds: tuple[float, float] | None) -> None:
    if bounds is not None:
        out[f"{name}_low"], out[f"{name}_high"] = bounds


def classification_intervals(y: np.ndarray, correct: np.ndarray, positive_score: np.ndarray | None) -> Metrics:
    """accuracy's Wilson interval; ROC-AUC's bootstrap interval when a positive-class score is given."""
    out: Metrics = {}
    _add(out, "accuracy", wilson(float(np.sum(correct)), len(correct)))
    if positive_score is not None:
        _add(out, "roc_auc", auc_interval(y, positive_score))
    return out


def survival_intervals(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> Metrics:
    out: Metrics = {}
    _add(out, "c_index", c_index_interval(time, event, risk))
    return out
