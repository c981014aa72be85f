"""Built-in heart-disease: FLamby's row counts, splits and encoding must not drift."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from conftest import site_x, site_y
from fedcare.data import BUILTIN_DATASETS, DataSpec, dataset_info, load_dataset
from fedcare.data import heart_disease
from fedcare.data.splitting import split_site

SIZES = {"cleveland": 303, "hungarian": 261, "switzerland": 46, "va": 130}


@pytest.fixture(scope="module")
def heart():
    return load_dataset(DataSpec(dataset="heart-disease"))


def _flamby_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes, counts = np.unique(labels, return_counts=True)
    stratify = labels if len(classes) == 2 and counts.min() > 2 else None
    return train_test_split(np.arange(len(labels)), test_size=1 - 0.66, train_size=0.66,
                            random_state=43, shuffle=True, stratify=stratify)


def test_site_order_and_row_counts(heart):
    assert [s.site_id for s in heart.sites] == list(SIZES)
    for s in heart.sites:
        assert len(site_y(s, "train")) + len(site_y(s, "test")) == SIZES[s.site_id]
        assert len(site_y(s, "val")) == 0 and site_x(s, "val").shape == (0, len(heart.feature_names))


def test_split_matches_flamby_exactly():
    for site, n in SIZES.items():
        frame, _ = heart_disease.read_site(site)
        assert len(frame) == n
        labels = (frame["num"].astype(float) > 0).to_numpy().astype(np.int64)
        expected_train, expected_test = _flamby_split(labels)
        ours = split_site(site, n, labels, 0.34, 0.0, 43)
        np.testing.assert_array_equal(ours.train, expected_train)
        np.testing.assert_array_equal(ours.test, expected_test)


def test_split_sizes_and_pinned_indices():
    frame, _ = heart_disease.read_site("cleveland")
    labels = (frame["num"].astype(float) > 0).to_numpy().astype(np.int64)
    split = split_site("cleveland", len(labels), labels, 0.34, 0.0, 43)
    assert (len(split.train), len(split.test)) == (199, 104)
    again = split_site("cleveland", len(labels), labels, 0.34, 0.0, 43)
    np.testing.assert_array_equal(split.test, again.test)
    other = split_site("cleveland", len(labels), labels, 0.34, 0.0, 44)
    assert not np.array_equal(np.sort(split.test), np.sort(other.test))
    # pinned from sklearn's own FLamby call, so an sklearn or code change that moves rows shows up
    exp_train, exp_test = _flamby_split(labels)
    assert list(split.train[:5]) == list(exp_train[:5])
    assert list(split.test[:5]) == list(exp_test[:5])


def test_train_test_sizes(heart):
    sizes = {s.site_id: (len(site_y(s, "train")), len(site_y(s, "test"))) for s in heart.sites}
    assert sizes == {"cleveland": (199, 104), "hungarian": (172, 89), "switzerland": (30, 16), "va": (85, 45)}


def test_features_and_labels(heart):
    assert heart.task == "binary"
    assert heart.classes == ("no disease", "disease")
    assert heart.feature_names == (
        "age", "sex", "cp=1", "cp=2", "cp=3", "cp=4", "trestbps", "chol", "fbs",
        "restecg=0", "restecg=1", "restecg=2", "thalach", "exang", "oldpeak",
    )
    for s in heart.sites:
        assert site_x(s, "train").dtype == np.float32 and site_y(s, "train").dtype == np.float32
        assert set(np.unique(site_y(s, "train"))) <= {0.0, 1.0}
    # Switzerland: a single healthy patient; its train split is all "disease" and that is allowed
    swiss = heart.site("switzerland")
    assert np.concatenate([site_y(swiss, "train"), site_y(swiss, "test")]).sum() == 45


def test_label_is_num_greater_than_zero(heart):
    frame, _ = heart_disease.read_site("cleveland")
    labels = (frame["num"].astype(float) > 0).to_numpy().astype(np.float32)
    train, test = _flamby_split(labels.astype(np.int64))
    site = heart.site("cleveland")
    np.testing.assert_array_equal(site_y(site, "train"), labels[train])
    np.testing.assert_array_equal(site_y(site, "test"), labels[test])


def test_one_hot_rows_sum_to_one(heart):
    names = heart.feature_names
    cp = [i for i, n in enumerate(names) if n.startswith("cp=")]
    restecg = [i for i, n in enumerate(names) if n.startswith("restecg=")]
    for s in heart.sites:
        for x in (site_x(s, "train"), site_x(s, "test")):
            np.testing.assert_array_equal(x[:, cp].sum(axis=1), 1.0)
            np.testing.assert_array_equal(x[:, restecg].sum(axis=1), 1.0)


def test_standardized_over_union_of_train_rows(heart):
    names = heart.feature_names
    numeric = [i for i, n in enumerate(names) if "=" not in n]
    pooled = np.concatenate([site_x(s, "train") for s in heart.sites]).astype(np.float64)
    np.testing.assert_allclose(pooled[:, numeric].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pooled[:, numeric].std(axis=0), 1.0, atol=1e-5)
    # test rows are scaled with the same (train) statistics, so they are not exactly centred
    pooled_test = np.concatenate([site_x(s, "test") for s in heart.sites]).astype(np.float64)
    assert np.abs(pooled_test[:, numeric].mean(axis=0)).max() > 1e-3


def test_preprocessing_is_json_and_records_rules(heart):
    text = json.dumps(heart.preprocessing)
    back = json.loads(text)
    assert back["categorical"]["cp"]["categories"] == ["1", "2", "3", "4"]
    assert back["missing_indicators"] == []
    assert set(back["numeric"]) == {"age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak"}
    assert back["rows_dropped_missing"]["switzerland"] == 123 - 46


def test_val_fraction_carved_from_train_only(heart):
    with_val = load_dataset(DataSpec(dataset="heart-disease", val_fraction=0.2))
    for a, b in zip(heart.sites, with_val.sites):
        np.testing.assert_array_equal(site_y(a, "test"), site_y(b, "test"))
        np.testing.assert_array_equal(site_x(a, "test").shape, site_x(b, "test").shape)
        assert len(site_y(b, "train")) + len(site_y(b, "val")) == len(site_y(a, "train"))
        assert len(site_y(b, "val")) > 0


def test_dataset_info_and_registry():
    assert "heart-disease" in BUILTIN_DATASETS
    (info,) = [d for d in dataset_info() if d["name"] == "heart-disease"]
    assert info["task"] == "binary"
    assert info["sites"] == [{"site_id": k, "rows": v} for k, v in SIZES.items()]
    assert "FLamby" in info["citation"] and "CC BY 4.0" in info["source"]
    json.dumps(info)


def test_data_layer_does_not_import_torch():
    code = "import sys, fedcare.data as d; d.load_dataset(d.DataSpec(dataset='heart-disease')); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
