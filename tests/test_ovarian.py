"""The optional built-in survival dataset ovarian-genomics (needs the survset package)."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.data import DataSpec, dataset_info, load_dataset

pytest.importorskip("SurvSet")

SIZES = {"study-4": 84, "study-9": 58, "study-13": 258, "study-16": 510}  # after 2 rows with time 0


def test_ovarian_loads_four_studies():
    ds = load_dataset(DataSpec(dataset="ovarian-genomics"))
    assert ds.task == "survival" and ds.classes == ()
    assert [s.site_id for s in ds.sites] == list(SIZES)
    genes = [f for f in ds.feature_names if not f.startswith("debulk")]
    assert len(genes) == 158 and "ABI3BP" in genes
    assert [f for f in ds.feature_names if f.startswith("debulk")] == ["debulk=0", "debulk=1"]
    assert ds.preprocessing["rows_dropped_nonpositive_time"] == 2
    for site in ds.sites:
        y = np.concatenate([site.y_train, site.y_val, site.y_test])
        assert len(y) == SIZES[site.site_id] and y.shape[1] == 2 and y.dtype == np.float32
        assert (y[:, 0] > 0).all() and 0 < y[:, 1].sum() < len(y)
        assert site.x_train.shape[1] == len(ds.feature_names)
    total_events = sum(float(s.y_train[:, 1].sum() + s.y_test[:, 1].sum()) for s in ds.sites)
    assert total_events == 544


def test_ovarian_listed_with_sizes():
    (info,) = [d for d in dataset_info() if d["name"] == "ovarian-genomics"]
    assert info["task"] == "survival" and info["available"] is True
    assert info["sites"] == [{"site_id": k, "rows": v} for k, v in SIZES.items()]
