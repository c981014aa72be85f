"""Per-site 95 % intervals, computed at the site: Wilson for accuracy, a seeded weighted bootstrap
for ROC-AUC and the C-index, checked against resampling the patients one replicate at a time."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.learning import intervals as I
from fedcare.learning.metrics import c_index, roc_auc


def _resampled(n: int, statistic) -> tuple[float, float]:
    """The same replicates as the weighted bootstrap, drawn as index lists and scored one by one."""
    values = []
    for counts in I._weights(n):
        idx = np.repeat(np.arange(n), counts.astype(int))
        value = statistic(idx)
        values.append(np.nan if value is None else value)
    return I._percentiles(np.array(values))


def test_wilson_matches_its_formula_at_the_edges():
    assert I.wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert I.wilson(13, 16) == pytest.approx((0.56991, 0.93408), abs=1e-5)
    assert I.wilson(5, 0) is None


@pytest.mark.parametrize("n", [16, 150])
def test_bootstrap_intervals_equal_resampling_patient_by_patient(n):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n)
    score = np.round(y + rng.normal(0, 1.5, n), 1)  # rounded: ties count half
    got = I.auc_interval(y, score)
    assert got == pytest.approx(_resampled(n, lambda i: roc_auc(y[i], score[i])), abs=1e-12)
    assert got[0] <= roc_auc(y, score) <= got[1]
    time, event = np.round(rng.exponential(1, n), 1), rng.integers(0, 2, n)
    risk = -time + rng.normal(0, 1, n)
    got = I.c_index_interval(time, event, risk)
    assert got == pytest.approx(_resampled(n, lambda i: c_index(time[i], event[i], risk[i])), abs=1e-12)
    assert got[0] <= c_index(time, event, risk) <= got[1]
    assert I.auc_interval(np.ones(n), score) is None and I.c_index_interval(time, np.zeros(n), risk) is None
