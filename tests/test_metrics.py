"""Metrics equal scikit-learn's on random cases, and are None where undefined."""

import numpy as np
import pytest
from sklearn import metrics as skm

from fedcare.learning.metrics import binary_metrics, multiclass_metrics, regression_metrics, roc_auc


@pytest.mark.parametrize("seed", range(5))
def test_binary_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    p = np.round(rng.random(60), 1)  # rounding makes ties, which AUC must count half
    m = binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p >= 0.5))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p >= 0.5))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-6)


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    proba = rng.dirichlet(np.ones(3), 90)
    m = multiclass_metrics(y, proba)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, proba.argmax(1)))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-6)


def test_one_class_split_has_no_auc_but_has_accuracy():
    m = binary_metrics(np.ones(5), np.array([0.9, 0.8, 0.2, 0.7, 0.6]))
    assert m["roc_auc"] is None and m["accuracy"] == pytest.approx(0.8)
    assert roc_auc(np.zeros(3), np.ones(3)) is None


def test_regression_metrics_by_hand():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(5 / 3)) and m["mae"] == pytest.approx(1.0)
