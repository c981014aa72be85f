"""Per-site train/validation/test split, following FLamby's Fed-Heart-Disease recipe.

Each site splits its own rows; stratification is used only when every class at that site has
more than two rows, since a stratified split cannot serve tiny classes (e.g. Switzerland's one healthy
patient). The arithmetic is scikit-learn's `train_test_split` (ShuffleSplit, or StratifiedShuffleSplit
when stratified): the same random draws from the same seed, so the same rows, bit for bit
(tests/test_splitting.py compares them). It is computed here directly, because the library's argument
checking cost more than the split itself (2,000 splits for 1,000 sites) and importing it cost 0.76 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcare.core.errors import DataError

MIN_SPLIT_ROWS = 4  # fewer rows cannot give a training and a test split that both say something


@dataclass(frozen=True)
class SplitIndices:
    """Row positions (0-based, into the site's rows in file order) of each split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _fractions(test_fraction: float) -> tuple[float, float]:
    # FLamby passes train_size=0.66, test_size=1-0.66 to scikit-learn; computing test_size the same
    # way keeps its ceil/floor row counts identical to FLamby for the default 0.34.
    train_size = round(1.0 - test_fraction, 12)
    return 1.0 - train_size, train_size


def _stratify(labels: np.ndarray | None, n_test: int, n_train: int) -> np.ndarray | None:
    """FLamby's rule: stratify only if 2+ classes and every class has more than 2 rows."""
    if labels is None:
        return None
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() <= 2:
        return None
    if n_test < len(classes) or n_train < len(classes):
        return None  # no split smaller than the class count can hold every class
    return labels


def split_rows(indices: np.ndarray, labels: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (kept, carved) with `fraction` carved out, seeded and maybe stratified."""
    test_size, train_size = _fractions(fraction)
    n = len(indices)
    n_test = int(np.ceil(test_size * n))
    n_train = int(np.floor(train_size * n))
    if n_train == 0 or n_test == 0 or n_train + n_test > n:
        raise ValueError(f"{n} rows give {n_train} training and {n_test} held-out rows")
    rng = np.random.RandomState(seed)  # the legacy generator: the draws scikit-learn makes from a seed
    stratify = _stratify(labels, n_test, n_train)
    if stratify is None:
        permutation = rng.permutation(n)
        kept, carved = permutation[n_test:n_test + n_train], permutation[:n_test]
    else:
        kept, carved = _stratified(stratify, n_train, n_test, rng)
    indices = np.asarray(indices)
    return indices[kept], indices[carved]


def _stratified(labels: np.ndarray, n_train: int, n_test: int, rng: np.random.RandomState
                ) -> tuple[np.ndarray, np.ndarray]:
    """StratifiedShuffleSplit's one split: per class, as many rows as its share (ties drawn at random),
    taken from a permutation of the class's rows; then each split shuffled."""
    _, codes, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(codes, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _share(class_counts, n_train, rng)
    t_i = _share(class_counts - n_i, n_test, rng)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for rows, count, k, t in zip(by_class, class_counts, n_i, t_i):
        shuffled = rows.take(rng.permutation(count), mode="clip")
        train.append(shuffled[:k])
        test.append(shuffled[k:k + t])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _share(class_counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of `draws` rows each class gets: its floored proportional share, the rows left over
    going to the largest remainders first, equal remainders drawn at random."""
    exact = class_counts / class_counts.sum() * draws
    share = np.floor(exact)
    missing = int(draws - share.sum())
    remainder = exact - share
    for value in np.unique(remainder)[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), missing), replace=False)
        share[chosen] += 1
        missing -= len(chosen)
    return share.astype(int)


def split_site(
    site_id: str, n_rows: int, labels: np.ndarray | None, test_fraction: float, val_fraction: float, seed: int
) -> SplitIndices:
    """Split one site's rows; `labels` = class codes for classification, None for regression.

    Validation rows are carved from the training split only, so the test split never changes
    when --val-fraction does. A site of fewer than MIN_SPLIT_ROWS rows keeps them all for training.
    """
    all_rows = np.arange(n_rows)
    if n_rows < MIN_SPLIT_ROWS:  # real trials have sites of 2-3 patients: they train, and cannot be evaluated
        none = np.array([], dtype=np.int64)
        return SplitIndices(train=all_rows.astype(np.int64), val=none, test=none)
    try:
        train, test = split_rows(all_rows, labels, test_fraction, seed)
    except ValueError as exc:
        raise DataError(f"site '{site_id}' ({n_rows} rows) cannot be split with test fraction "
                        f"{test_fraction}: {exc}") from None
    val = np.array([], dtype=np.int64)
    if val_fraction > 0:
        try:
            train, val = split_rows(train, None if labels is None else labels[train], val_fraction, seed)
        except ValueError:
            raise DataError(
                f"site '{site_id}' has {len(train)} training rows, too few to carve a validation "
                f"fraction of {val_fraction}; lower --val-fraction or merge the site with another"
            ) from None
    return SplitIndices(train=train.astype(np.int64), val=val.astype(np.int64), test=test.astype(np.int64))
