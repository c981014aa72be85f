"""Evaluation metrics per task, in numpy (scikit-learn where it has the metric).

A metric that is undefined on a split (ROC-AUC with one class present) is None, not a crash: small
hospitals' test splits can hold a single class.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from fedcare.core.scoring import HEADLINE, LOWER_IS_BETTER, is_better  # noqa: F401 (re-exported)

Metrics = dict[str, float | None]


def binary_metrics(y: np.ndarray, p: np.ndarray) -> Metrics:
    """y in {0,1}, p = predicted probability of class 1."""
    y = y.astype(np.int64)
    pred = (p >= 0.5).astype(np.int64)
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    two = len(np.unique(y)) == 2
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if two else float(np.mean(pred == y)),
        "roc_auc": float(roc_auc_score(y, p)) if two else None,
        "log_loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))),
    }


def multiclass_metrics(y: np.ndarray, proba: np.ndarray) -> Metrics:
    """y = class index, proba = (n, k) class probabilities."""
    pred = np.argmax(proba, axis=1)
    k = proba.shape[1]
    present = np.unique(y)
    auc = None
    if len(present) == k:
        auc = float(roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(k)))
    picked = np.clip(proba[np.arange(len(y)), y], 1e-7, 1.0)
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "roc_auc": auc,
        "log_loss": float(-np.mean(np.log(picked))),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> Metrics:
    err = pred.astype(np.float64) - y.astype(np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}

