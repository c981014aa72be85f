"""fedcare.data.splitting draws the same rows as scikit-learn's train_test_split, bit for bit: the
splits every recorded result was made with (the arithmetic is computed without the library)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from fedcare.data.splitting import _fractions, _stratify, split_rows, split_site


def _reference(indices: np.ndarray, labels: np.ndarray | None, fraction: float, seed: int):
    test_size, train_size = _fractions(fraction)
    n = len(indices)
    stratify = _stratify(labels, int(np.ceil(test_size * n)), int(np.floor(train_size * n)))
    return train_test_split(indices, test_size=test_size, train_size=train_size, random_state=seed,
                            shuffle=True, stratify=stratify)


CASES = [(n, balance, fraction) for n in (4, 7, 30, 101, 500) for balance in (None, (0.5, 0.5), (0.9, 0.1),
         (0.2, 0.3, 0.5), (0.05, 0.05, 0.9)) for fraction in (0.34, 0.2, 0.5)]


@pytest.mark.parametrize(("n", "balance", "fraction"), CASES)
def test_split_rows_matches_scikit_learn(n, balance, fraction):
    rng = np.random.default_rng(n)
    labels = None if balance is None else rng.choice(len(balance), size=n, p=balance)
    indices = np.arange(100, 100 + n)  # not 0..n-1: the rows are taken from `indices`, not positions
    for seed in (0, 1, 43, 2**31 - 1):
        kept, carved = split_rows(indices, labels, fraction, seed)
        ref_kept, ref_carved = _reference(indices, labels, fraction, seed)
        assert kept.dtype == ref_kept.dtype and carved.dtype == ref_carved.dtype
        np.testing.assert_array_equal(kept, ref_kept)
        np.testing.assert_array_equal(carved, ref_carved)


def test_stratified_ties_match_scikit_learn():
    """Equal class shares leave remainders that tie: both draw the same classes for the spare rows."""
    labels = np.repeat(np.arange(4), [3, 3, 3, 5])
    for seed in range(20):
        kept, carved = split_rows(np.arange(len(labels)), labels, 0.34, seed)
        ref_kept, ref_carved = _reference(np.arange(len(labels)), labels, 0.34, seed)
        np.testing.assert_array_equal(kept, ref_kept)
        np.testing.assert_array_equal(carved, ref_carved)


def test_split_site_refuses_a_split_with_no_training_rows():
    with pytest.raises(Exception, match="too few to carve a validation"):
        split_site("a", 4, None, 0.5, 0.9, 0)
