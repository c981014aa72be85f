"""Evaluation metrics per task, in plain numpy.

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


def binary_metrics(y: np.ndarray, p: np.ndarray) -> Metrics:
    """y in {0,1}, p = predicted probability of class 1."""
    y = y.astype(np.int64)
    pred = (p >= 0.5).astype(np.int64)
    pc = np.clip(p, _EPS, 1 - _EPS)
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "roc_auc": roc_auc(y, p),
        "log_loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))),
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
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> Metrics:
    err = pred.astype(np.float64) - y.astype(np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
