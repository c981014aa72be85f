"""The optional built-in survival dataset ovarian-genomics (needs the survset package)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import named, site_x
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
    # the genes are the omics input, debulking status the tabular one, side by side in file order
    assert {name: (s.kind, s.shape) for name, s in ds.shape.inputs.items()} == \
        {"omics": ("omics", (158,)), "tabular": ("tabular", (2,))}
    assert ds.shape.inputs["omics"].features == tuple(genes)
    for site in ds.sites:
        parts = [named(site, split) for split in ("train", "val", "test")]
        time, event = (np.concatenate([p[k] for p in parts]) for k in ("time", "event"))
        assert len(time) == SIZES[site.site_id] and time.dtype == event.dtype == np.float32
        assert (time > 0).all() and 0 < event.sum() < len(event)
        assert site_x(site, "train").shape[1] == len(ds.feature_names)
    total_events = sum(float(named(s, "train")["event"].sum() + named(s, "test")["event"].sum()) for s in ds.sites)
    assert total_events == 544


def test_ovarian_listed_with_sizes():
    (info,) = [d for d in dataset_info() if d["name"] == "ovarian-genomics"]
    assert info["task"] == "survival" and info["available"] is True
    assert info["sites"] == [{"site_id": k, "rows": v} for k, v in SIZES.items()]
