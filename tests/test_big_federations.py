"""What makes big federations cheap without changing what they learn: sites grouped in one pass,
numbers parsed in one pass, and evaluation every N rounds on a sample of sites."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

import fedcare
from fedcare.data.loader import _sites_from_column
from fedcare.data.values import parse_number, parse_numbers


def test_numbers_in_one_pass_follow_the_cell_by_cell_rule():
    cells = ["1", "-0.5", "1e3", None, "1_000", "abc", "inf", "1e400", "nan(1)", "\u0661\u0662", "2."]
    frame = pd.DataFrame({"numbers": ["3", None, "4.25", "5", "6", "7", "8", "9", "10", "11", "12"],
                          "mixed": cells}, dtype=object)
    expected = np.array([[np.nan if (n := None if c is None else parse_number(c)) is None else n
                          for c in frame[col]] for col in frame.columns]).T
    np.testing.assert_array_equal(parse_numbers(frame), expected)  # the column holding text, cell by cell
    np.testing.assert_array_equal(parse_numbers(frame["numbers"]), expected[:, 0])  # one column, fast path
    assert parse_numbers(frame[[]]).shape == (11, 0)


def test_site_column_groups_rows_by_canonical_id_in_first_appearance_order():
    frame = pd.DataFrame({"site": ["2", "b", "2.0", "a", "b", "2"], "x": list("uvwxyz")}, dtype=object)
    sites = _sites_from_column(frame, "site", "f.csv")
    assert [s.site_id for s in sites] == ["2", "b", "a"]  # '2.0' is site '2'
    assert [list(s.frame["x"]) for s in sites] == [["u", "w", "z"], ["v", "y"], ["x"]]  # file order kept
    assert [list(s.frame.index) for s in sites] == [[0, 2, 5], [1, 4], [3]]  # rows still name the file's row


def test_eval_every_and_a_sample_of_sites_judge_fewer_rounds_and_train_the_same(tmp_path, cohort_csv):
    common = {"data": [str(cohort_csv)], "site": "hospital", "label": "y", "rounds": 3, "baselines": False,
              "checkpoint_every": 0, "drop": ["patient_id"]}
    full = fedcare.simulate(out=str(tmp_path / "full"), **common)
    cheap = fedcare.simulate(out=str(tmp_path / "cheap"), eval_every=2, eval_sites=2, **common)
    for name, value in full.global_params.items():
        np.testing.assert_array_equal(cheap.global_params[name], value)  # evaluation draws nothing from training
    rows = [json.loads(line) for line in (cheap.path / "metrics.jsonl").read_text().splitlines()]
    judged = {(r["round"], r["site"]) for r in rows if r["model"] == "federated" and r["split"] == "test"}
    assert sorted({rnd for rnd, _ in judged}) == [2, 3]  # every 2nd round and the last
    assert all(len([s for rnd, s in judged if rnd == k]) == 2 for k in (2, 3))
    assert cheap.summary["evaluation"]["sites_per_round"] == 2 and cheap.summary["evaluation"]["every"] == 2
    assert "evaluation" not in full.summary
    assert cheap.summary["federated"] == full.summary["federated"]  # the final figures are every site's
