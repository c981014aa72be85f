"""Evaluation metrics per task (binary, multiclass, regression, survival, segmentation), in plain numpy;
the clinical ones (Brier, sensitivity and specificity at a threshold, reliability bins) in their own block.

They run for every site on every round, so they avoid per-call validation overhead; the tests check
them against scikit-learn. A metric that is undefined on a split (ROC-AUC with one class present) is
None, not a crash: small hospitals' test splits can hold a single class.
"""

from __future__ import annotations

import numpy as np

Metrics = dict[str, float | None]
_EPS = 1e-7


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Mann–Whitney form: P(score of a positive > score of a negative), ties counted half."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in y."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> Metrics:
    """y in {0,1}, p = predicted probability of class 1; sensitivity and specificity at `threshold`."""
    y = y.astype(np.int64)
    pred = (p >= 0.5).astype(np.int64)
    pc = np.clip(p, _EPS, 1 - _EPS)
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "roc_auc": roc_auc(y, p),
        "log_loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))),
        "brier": brier(y, p),
        **sensitivity_specificity(y, p, threshold),
    }


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> Metrics:
    """y = class index, proba = (n, k) class probabilities; ROC-AUC is the macro one-vs-rest mean."""
    y = y.astype(np.int64)
    pred = np.argmax(proba, axis=1)
    k = proba.shape[1]
    aucs = [roc_auc((y == c).astype(np.int64), proba[:, c]) for c in range(k)]
    picked = np.clip(proba[np.arange(len(y)), y], _EPS, 1.0)
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "roc_auc": float(np.mean(aucs)) if all(a is not None for a in aucs) else None,
        "log_loss": float(-np.mean(np.log(picked))),
        "brier": brier(y, proba),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> Metrics:
    err = pred.astype(np.float64) - y.astype(np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def _tie_group_ends(sorted_values: np.ndarray) -> np.ndarray:
    """For values already sorted, the index of the last element of each element's run of equal values."""
    n = len(sorted_values)
    starts_next = np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1
    ends = np.append(starts_next - 1, n - 1)
    counts = np.diff(np.concatenate(([0], ends + 1)))
    return np.repeat(ends, counts)


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float | None:
    """Harrell's concordance index; None when no pair is comparable (or a risk is NaN).

    A pair (i, j) is comparable when i had an event and time_i < time_j (equal times are not
    comparable); it is concordant when risk_i > risk_j, and counts 0.5 when the risks are equal.

    O(n log n): patients are visited from the longest time down, one tie group at a time; a Fenwick
    tree over the risk ranks holds everyone with a strictly longer time, so each event asks it how
    many of them have a lower (and an equal) risk.
    """
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event).reshape(-1) != 0
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    n = len(time)
    if n < 2 or np.isnan(risk).any():
        return None
    _, inverse = np.unique(risk, return_inverse=True)
    rank = (inverse.reshape(-1) + 1).tolist()  # 1-based dense ranks: equal risks share a rank
    size = max(rank)
    tree = [0] * (size + 1)

    def prefix(r: int) -> int:  # how many inserted patients have rank <= r
        total = 0
        while r > 0:
            total += tree[r]
            r -= r & -r
        return total

    order = np.argsort(-time, kind="stable")
    t_sorted = time[order]
    cuts = (np.flatnonzero(t_sorted[1:] != t_sorted[:-1]) + 1).tolist()
    order_list, events = order.tolist(), event.tolist()
    lower = ties = comparable = inserted = 0
    for start, stop in zip([0, *cuts], [*cuts, n]):
        group = order_list[start:stop]
        for i in group:
            if events[i]:
                r = rank[i]
                below = prefix(r - 1)
                lower += below
                ties += prefix(r) - below
                comparable += inserted
        for i in group:
            r = rank[i]
            while r <= size:
                tree[r] += 1
                r += r & -r
        inserted += stop - start
    if comparable == 0:
        return None
    return float((lower + 0.5 * ties) / comparable)


def neg_partial_loglik(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float | None:
    """The Cox loss (mean negative partial log-likelihood, Breslow ties) in numpy; None with no event."""
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = (np.asarray(event).reshape(-1) != 0).astype(np.float64)
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    n_events = event.sum()
    if n_events == 0:
        return None
    order = np.argsort(-time, kind="stable")
    risk_s, event_s = risk[order], event[order]
    log_cum = np.logaddexp.accumulate(risk_s)
    log_risk_set = log_cum[_tie_group_ends(time[order])]
    return float(-np.sum(event_s * (risk_s - log_risk_set)) / n_events)


def survival_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> Metrics:
    """risk = predicted log relative hazard (higher = earlier event); event 1 = observed."""
    return {"c_index": c_index(time, event, risk), "neg_partial_loglik": neg_partial_loglik(time, event, risk)}


def segmentation_metrics(mask: np.ndarray, pred: np.ndarray, classes: int) -> Metrics:
    """Dice and IoU of each foreground class over every voxel of the split (None for a class absent
    from both the masks and the prediction), their means, and the voxel accuracy."""
    out: Metrics = {"voxel_accuracy": float(np.mean(mask == pred)) if mask.size else None}
    dice, iou = [], []
    for c in range(1, classes):
        truth, guess = mask == c, pred == c
        both, either = int(np.sum(truth & guess)), int(np.sum(truth | guess))
        total = int(truth.sum()) + int(guess.sum())
        d = 2.0 * both / total if total else None
        j = both / either if either else None
        out[f"dice_{c}"], out[f"iou_{c}"] = d, j
        dice += [d] if d is not None else []
        iou += [j] if j is not None else []
    out["dice"] = float(np.mean(dice)) if dice else None
    out["iou"] = float(np.mean(iou)) if iou else None
    return out


# ----- clinical metrics and calibration (--metric; summary.json's calibration) -----------------------

# Which metrics each built-in task reports, and which way is better: what --metric may choose.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "balanced_accuracy", "roc_auc", "log_loss", "brier", "sensitivity", "specificity"),
    "multiclass": ("accuracy", "balanced_accuracy", "roc_auc", "log_loss", "brier"),
    "regression": ("rmse", "mae"),
    "survival": ("c_index", "neg_partial_loglik"),
    "segmentation": ("dice", "iou", "voxel_accuracy"),
}
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae", "neg_partial_loglik"})
RELIABILITY_BINS = 10


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared distance between the predicted probabilities and the outcome: for a binary task
    (proba of class 1) (p − y)², for k classes the sum over classes (Brier's original score)."""
    if proba.ndim == 1:
        return float(np.mean((proba - y) ** 2))
    onehot = np.eye(proba.shape[1])[y.astype(np.int64)]
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def sensitivity_specificity(y: np.ndarray, p: np.ndarray, threshold: float) -> Metrics:
    """Recall of the positives and of the negatives when p ≥ threshold is called positive; None for
    a class absent from y."""
    pos, called = y == 1, p >= threshold
    return {"sensitivity": float(np.mean(called[pos])) if pos.any() else None,
            "specificity": float(np.mean(~called[~pos])) if (~pos).any() else None}


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> dict[str, list]:
    """Equal-width bins of the predicted probability of class 1: per bin the rows, the sum of the
    predictions and the sum of the outcomes. Sums, so sites' bins add up to the pooled ones."""
    index = np.minimum((np.asarray(p) * bins).astype(np.int64), bins - 1)
    return {"edges": [k / bins for k in range(bins + 1)],
            "count": np.bincount(index, minlength=bins).tolist(),
            "sum_predicted": np.bincount(index, weights=p, minlength=bins).tolist(),
            "sum_observed": np.bincount(index, weights=np.asarray(y, dtype=np.float64), minlength=bins).tolist()}
