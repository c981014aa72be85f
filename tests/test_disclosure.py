"""What leaves a site while the data is prepared: no rare category by name, no patient's value pinned
by the median search, and no more threshold counts than a median search needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import cohort_frame
from fedcare.core.errors import DataError
from fedcare.data import DataSpec, load_dataset
from fedcare.data.columns import MIN_CATEGORY_COUNT, OTHER
from fedcare.data.inputs.table import THRESHOLD_BUDGET
from fedcare.data.preprocessing import NumericStats, federated_median
from fedcare.data.prepare import SitePreparation, prepare
from test_prepare import json_ask

UNIQUE = "Fabry disease (patient Jane Doe, ward 4)"


def _sites(tmp_path: Path) -> list[SitePreparation]:
    frame = cohort_frame("binary", sites=3, seed=4).astype(object)
    frame["diagnosis"] = np.where(np.arange(len(frame)) % 3 == 0, "asthma", "copd").astype(object)
    frame.loc[7, "diagnosis"] = UNIQUE  # one patient, at H1
    frame.loc[[65, 66], "diagnosis"] = "rare-at-H2"  # two patients, at H2
    frame.loc[[8, 40, 70], "age"] = ""  # missing ages: the median is searched
    sites = []
    for site, rows in frame.groupby("hospital", sort=False):
        path = tmp_path / f"{site}.csv"
        rows.drop(columns=["hospital"]).to_csv(path, index=False)
        sites.append(SitePreparation.from_file(path, str(site)))
    return sites


def test_a_rare_category_never_leaves_its_site_by_name(tmp_path):
    sites = _sites(tmp_path)
    log: list = []
    prepared = prepare(DataSpec(label="y", drop=("patient_id",)), [s.site_id for s in sites], json_ask(sites, log))
    sent = json.dumps([answers for _, _, answers in log])
    assert UNIQUE not in sent and "Jane Doe" not in sent and "rare-at-H2" not in sent
    assert "asthma" in sent  # common values are named as before
    names = prepared.shape.feature_names
    assert f"diagnosis={OTHER}" in names and "diagnosis=asthma" in names
    assert not any(UNIQUE in n or "rare-at-H2" in n for n in names)
    # the patient is encoded as OTHER at their own site, like every value held fewer than MIN_CATEGORY_COUNT times
    h1 = sites[0].data.splits
    column = names.index(f"diagnosis={OTHER}")
    assert sum(float(split.take(np.arange(len(split)), ["tabular"])["tabular"][:, column].sum())
               for split in h1.values()) == 1.0
    assert MIN_CATEGORY_COUNT > 2


def test_the_median_search_does_not_converge_onto_a_patients_value():
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(50, 10, 101), 6)  # odd count: the exact median is one patient's value
    mean, std = values.mean(), values.std()
    stats = NumericStats(count=values.size, mean=mean, m2=float(((values - mean) ** 2).sum()), missing=0)
    asked: list[float] = []

    def count(t: float) -> int:
        asked.append(t)
        return int((values <= t).sum())

    median = federated_median(stats, count)
    assert abs(median - np.median(values)) <= std / 128  # close enough to impute with
    assert np.min(np.abs(values - median)) > 1e-6 * std  # but not any patient's value
    assert len(asked) <= THRESHOLD_BUDGET // 2


def test_a_site_answers_no_more_threshold_counts_than_its_budget(tmp_path):
    sites = _sites(tmp_path)
    log: list = []
    prepare(DataSpec(label="y", drop=("patient_id",)), [s.site_id for s in sites], json_ask(sites, log))
    honest = sum(len(q["thresholds"].get("age", [])) for phase, q, _ in log if phase == "tabular.counts")
    assert 0 < honest <= THRESHOLD_BUDGET // 2  # the honest search fits the budget with room to spare
    site = sites[0]
    left = THRESHOLD_BUDGET - honest
    site.answer("tabular.counts", {"thresholds": {"age": list(np.linspace(20, 90, left))}})  # up to the budget
    with pytest.raises(DataError, match=f"more than {THRESHOLD_BUDGET} threshold counts of column 'age'"):
        site.answer("tabular.counts", {"thresholds": {"age": [55.0]}})
    # a curious coordinator sweeping thresholds from the start is stopped long before it can locate values
    again = tmp_path / "again"
    again.mkdir()
    fresh = _sites(again)[0]
    prepare(DataSpec(label="y", drop=("patient_id",)), ["H1"], json_ask([fresh]))
    with pytest.raises(DataError, match="answers no more"):
        fresh.answer("tabular.counts", {"thresholds": {"age": list(np.arange(20.0, 90.0, 0.5))}})


def test_common_values_keep_their_own_category(tmp_path):
    frame = pd.DataFrame({"hospital": ["A"] * 30 + ["B"] * 30, "y": [0, 1] * 30,
                          "ward": (["north"] * 10 + ["south"] * 20) * 2})
    path = tmp_path / "w.csv"
    frame.to_csv(path, index=False)
    ds = load_dataset(DataSpec(data=(str(path),), site="hospital", label="y"))
    assert ds.feature_names == ("ward=north", "ward=south")
