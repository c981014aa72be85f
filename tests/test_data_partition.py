"""Partitioners: deterministic, every row exactly once, the promised skew, minimum site size."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.core.errors import DataError
from fedcare.data import partition


def _assert_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


def _labels(n: int = 600, classes: int = 3) -> np.ndarray:
    return np.arange(n) % classes


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "quantity"])
def test_cover_and_determinism(kind: str):
    def run(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        if kind == "iid":
            return partition.iid(600, 5, rng)
        if kind == "dirichlet":
            return partition.dirichlet(_labels(), 5, 0.5, rng)
        return partition.quantity(600, 5, 0.5, rng)

    a, b, c = run(7), run(7), run(8)
    assert len(a) == 5
    _assert_cover(a, 600)
    assert all(len(p) >= partition.MIN_ROWS for p in a)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_are_even():
    parts = partition.iid(103, 4, np.random.default_rng(0))
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]


def test_dirichlet_skew_grows_as_alpha_shrinks():
    labels = _labels(3000, 3)

    def mean_max_share(alpha: float) -> float:
        parts = partition.dirichlet(labels, 4, alpha, np.random.default_rng(1))
        shares = [np.bincount(labels[p], minlength=3).max() / len(p) for p in parts]
        return float(np.mean(shares))

    skewed, balanced = mean_max_share(0.1), mean_max_share(1000.0)
    assert balanced < 0.4  # close to 1/3: every site sees all classes evenly
    assert skewed > 0.7    # most sites are dominated by one class


def test_quantity_skew_and_minimum():
    parts = partition.quantity(400, 8, 0.1, np.random.default_rng(3))
    sizes = [len(p) for p in parts]
    _assert_cover(parts, 400)
    assert min(sizes) >= partition.MIN_ROWS
    assert max(sizes) > 3 * 400 / 8


def test_too_few_rows_and_regression_labels():
    with pytest.raises(DataError, match="num-sites"):
        partition.iid(10, 3, np.random.default_rng(0))
    with pytest.raises(DataError, match="regression"):
        partition.dirichlet(np.linspace(0, 1, 40), 2, 0.5, np.random.default_rng(0))


def test_dirichlet_gives_up_with_clear_message():
    labels = np.array([0] * 10 + [1] * 10)
    with pytest.raises(DataError, match="alpha"):
        partition.dirichlet(labels, 5, 0.01, np.random.default_rng(0))
