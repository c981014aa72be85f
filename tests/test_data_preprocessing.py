"""Federated preprocessing must equal what pooling the training rows would give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import site_x
from fedcare.data import DataSpec, load_dataset
from fedcare.data.columns import ColumnTypes
from fedcare.data.preprocessing import (
    NumericStats,
    apply_transform,
    federated_median,
    fit_transform,
    mean_std,
    merge_stats,
    site_stats,
)


def _sites(rng: np.random.Generator, sizes: list[int], missing: float = 0.0) -> list[pd.DataFrame]:
    frames = []
    for i, n in enumerate(sizes):
        x = rng.normal(50 + 10 * i, 5 + i, size=n).round(3)
        if missing:
            x[rng.random(n) < missing] = np.nan
        colour = np.array(rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2]), dtype=object)
        frames.append(pd.DataFrame({"x": x, "colour": colour}))
    return frames


TYPES = ColumnTypes(order=("x", "colour"), numeric=("x",), categorical=("colour",))


@pytest.mark.parametrize("sizes", [[31, 20, 12], [30, 20, 12]])  # odd and even pooled counts
def test_federated_stats_equal_pooled(sizes: list[int]):
    frames = _sites(np.random.default_rng(5), sizes, missing=0.1)  # missing values: the median is searched
    pooled = pd.concat(frames, ignore_index=True)
    transform = fit_transform(frames, TYPES)
    rule = transform.numeric["x"]
    assert rule.mean == pytest.approx(pooled["x"].mean(), abs=1e-9)
    assert rule.std == pytest.approx(pooled["x"].std(ddof=0), abs=1e-9)
    assert rule.median == pytest.approx(pooled["x"].median(), abs=rule.std / 128)  # coarse on purpose
    assert transform.categorical["colour"].mode == pooled["colour"].mode()[0]
    assert transform.categorical["colour"].categories == ("blue", "green", "red")


def test_complete_column_asks_no_threshold_counts_and_imputes_with_the_mean():
    frames = _sites(np.random.default_rng(2), [15, 9])
    rule = fit_transform(frames, TYPES).numeric["x"]
    assert rule.median == pytest.approx(pd.concat(frames)["x"].mean(), abs=1e-9)


def test_merged_counts_equal_pooled_counts():
    frames = _sites(np.random.default_rng(1), [10, 7], missing=0.3)
    merged = merge_stats([site_stats(f, TYPES) for f in frames])
    pooled = pd.concat(frames, ignore_index=True)
    assert merged.numeric["x"].count == pooled["x"].notna().sum()
    assert merged.numeric["x"].missing == pooled["x"].isna().sum()
    assert merged.numeric["x"].mean == pytest.approx(pooled["x"].mean())
    assert merged.categorical["colour"].counts == pooled["colour"].value_counts().to_dict()
    assert merged.rows == 17


@pytest.mark.parametrize("relative", [1e-7, 3e-9])
def test_std_of_a_near_constant_column_with_a_large_offset_matches_numpy(relative):
    """Per-site (count, mean, M2) merged as Chan et al. do: the sum-of-squares formula gave 1.3 % error
    at std/|mean| = 1e-7 and 2.5-5.5x the truth at 3e-9 on such a column (a date, a lab code)."""
    rng = np.random.default_rng(0)
    offset = 2.0e7
    frames = [pd.DataFrame({"x": offset + rng.normal(0, relative * offset, n) + shift, "colour": ["red"] * n})
              for n, shift in [(40, 0.0), (25, relative * offset), (3, -relative * offset)]]
    mean, std = mean_std(merge_stats([site_stats(f, TYPES) for f in frames]).numeric["x"])
    pooled = pd.concat(frames)["x"].to_numpy()
    assert mean == pytest.approx(pooled.mean(), rel=1e-15)
    assert std == pytest.approx(np.std(pooled), rel=1e-6)


def test_median_with_duplicates_and_outliers():
    values = np.array([1.0, 1.0, 1.0, 2.0, 1000.0])
    stats = NumericStats(count=5, mean=values.mean(), m2=(((values - values.mean())**2).sum()), missing=0)
    assert federated_median(stats, lambda t: int((values <= t).sum())) == pytest.approx(1.0, abs=values.std() / 128)
    even = np.array([3.0, 4.0, 10.0, 20.0])
    stats = NumericStats(count=4, mean=even.mean(), m2=(((even - even.mean())**2).sum()), missing=0)
    assert federated_median(stats, lambda t: int((even <= t).sum())) == pytest.approx(7.0, abs=even.std() / 128)
    constant = np.full(6, 2.5)
    stats = NumericStats(count=6, mean=constant.mean(), m2=(((constant - constant.mean())**2).sum()), missing=0)
    assert federated_median(stats, lambda t: int((constant <= t).sum())) == pytest.approx(2.5, abs=1e-6)


def test_imputation_indicator_and_unseen_category():
    a = pd.DataFrame({"x": [1.0, np.nan, 3.0, 5.0], "colour": ["red", "red", None, "blue"]})
    b = pd.DataFrame({"x": [7.0, 9.0, 11.0], "colour": ["blue", "red", "green"]})
    transform = fit_transform([a, b], TYPES)
    median = transform.numeric["x"].median
    assert median == pytest.approx(6.0, abs=transform.numeric["x"].std / 128)  # median of 1,3,5,7,9,11
    assert transform.categorical["colour"].mode == "red"
    assert transform.feature_names == ("x", "colour=blue", "colour=green", "colour=red",
                                       "x__missing", "colour__missing")
    out = apply_transform(a, transform)
    rule = transform.numeric["x"]
    assert out[1, 0] == pytest.approx((median - rule.mean) / rule.std, rel=1e-6)  # imputed median, scaled
    np.testing.assert_array_equal(out[:, 4], [0, 1, 0, 0])                      # x__missing stays 0/1
    np.testing.assert_array_equal(out[2, 1:4], [0, 0, 1])                       # colour imputed with mode
    np.testing.assert_array_equal(out[:, 5], [0, 0, 1, 0])
    unseen = pd.DataFrame({"x": [2.0], "colour": ["purple"]})
    np.testing.assert_array_equal(apply_transform(unseen, transform)[0, 1:4], [0, 0, 0])


def test_no_indicator_without_missing_training_values():
    a = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "colour": ["red"] * 4})
    transform = fit_transform([a], TYPES)
    assert transform.indicators == ()
    test = pd.DataFrame({"x": [np.nan], "colour": [None]})
    out = apply_transform(test, transform)
    assert out.shape == (1, 2)
    assert out[0, 0] == pytest.approx((2.5 - 2.5) / transform.numeric["x"].std)
    assert out[0, 1] == 1.0


def test_constant_column_scales_to_zero_not_nan():
    a = pd.DataFrame({"x": [4.0] * 5, "colour": ["red"] * 5})
    transform = fit_transform([a], TYPES)
    assert transform.numeric["x"].std == 1.0
    np.testing.assert_array_equal(apply_transform(a, transform)[:, 0], 0.0)


def test_end_to_end_csv_matches_pooled_train_stats(tmp_path: Path):
    rng = np.random.default_rng(2)
    n = 90
    age = rng.integers(20, 90, size=n).astype(float)
    frame = pd.DataFrame({
        "hospital": np.repeat(["north", "south", "east"], n // 3),
        "age": age,
        "smoker": rng.choice(["yes", "no"], size=n),
        "y": rng.integers(0, 2, size=n),
    })
    frame.loc[[3, 40, 77], "age"] = np.nan
    path = tmp_path / "cohort.csv"
    frame.to_csv(path, index=False)
    ds = load_dataset(DataSpec(data=(str(path),), site="hospital", label="y"))
    assert ds.feature_names == ("age", "smoker=no", "smoker=yes", "age__missing")
    # recompute from the rows that ended up in train, pooled
    train_rows = []
    for site_id, s in zip(["north", "south", "east"], ds.sites):
        assert s.site_id == site_id
        train_rows.append(site_x(s, "train"))
    pooled = np.concatenate(train_rows)
    observed = pooled[pooled[:, 3] == 0, 0]
    assert observed.mean() == pytest.approx(0.0, abs=1e-5)
    assert observed.std() == pytest.approx(1.0, abs=1e-5)
    info = ds.preprocessing["numeric"]["age"]
    imputed = pooled[pooled[:, 3] == 1, 0]
    np.testing.assert_allclose(imputed, (info["median"] - info["mean"]) / info["std"], rtol=1e-5)
