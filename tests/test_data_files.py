"""Bring-your-own data: site modes, task inference, Parquet, and one clear error per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedcare
from conftest import site_x, site_y
from fedcare.core.errors import ConfigError, DataError
from fedcare.data import DataSpec, load_dataset


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "patient_id": [f"P{i:04d}" for i in range(n)],
        "site": np.where(np.arange(n) < n // 2, "A", "B"),
        "age": rng.integers(20, 90, size=n),
        "sex": rng.choice(["F", "M"], size=n),
        "y": np.arange(n) % 2,
    })


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "cohort.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _load(path: str | tuple[str, ...], **kw) -> object:
    data = (path,) if isinstance(path, str) else path
    kw.setdefault("label", "y")
    return load_dataset(DataSpec(data=data, **kw))


# ----- site modes and formats --------------------------------------------------------------


def test_site_column_order_of_first_appearance(tmp_path: Path):
    frame = _frame()
    frame["site"] = np.where(np.arange(40) % 3 == 0, "zeta", "alpha")  # zeta appears first
    ds = _load(_csv(tmp_path, frame), site="site", drop=("patient_id",))
    assert [s.site_id for s in ds.sites] == ["zeta", "alpha"]
    assert ds.name == "cohort"
    assert sum(len(site_y(s, "train")) + len(site_y(s, "test")) for s in ds.sites) == 40
    assert "patient_id" not in " ".join(ds.feature_names)


def test_several_files_one_site_each(tmp_path: Path):
    frame = _frame().drop(columns=["site"])
    a = _csv(tmp_path, frame.iloc[:25], "hospital_a.csv")
    b = _csv(tmp_path, frame.iloc[25:], "hospital_b.csv")
    ds = _load((a, b), drop=("patient_id",))
    assert [s.site_id for s in ds.sites] == ["hospital_a", "hospital_b"]
    assert [len(site_y(s, "train")) + len(site_y(s, "test")) for s in ds.sites] == [25, 15]
    assert ds.feature_names == ("age", "sex=F", "sex=M")


def test_parquet_matches_csv(tmp_path: Path):
    frame = _frame()
    frame.loc[5, "age"] = None
    csv = _csv(tmp_path, frame)
    pq = tmp_path / "cohort.parquet"
    frame.to_parquet(pq, index=False)
    from_csv = _load(csv, site="site", drop=("patient_id",))
    from_pq = _load(str(pq), site="site", drop=("patient_id",))
    assert from_pq.feature_names == from_csv.feature_names == ("age", "sex=F", "sex=M", "age__missing")
    for a, b in zip(from_csv.sites, from_pq.sites):
        np.testing.assert_allclose(site_x(a, "train"), site_x(b, "train"))
        np.testing.assert_array_equal(site_y(a, "test"), site_y(b, "test"))


def test_partition_mode(tmp_path: Path):
    path = _csv(tmp_path, _frame(80).drop(columns=["site"]))
    ds = _load(path, partition="iid", num_sites=3, drop=("patient_id",))
    assert [s.site_id for s in ds.sites] == ["site-1", "site-2", "site-3"]
    assert sum(len(site_y(s, "train")) + len(site_y(s, "test")) for s in ds.sites) == 80
    again = _load(path, partition="iid", num_sites=3, drop=("patient_id",))
    np.testing.assert_array_equal(site_x(ds.sites[0], "train"), site_x(again.sites[0], "train"))
    skew = _load(path, partition="dirichlet", num_sites=2, alpha=0.5, drop=("patient_id",))
    assert ds.preprocessing["partition"]["kind"] == "iid"
    assert len(skew.sites) == 2


def test_val_fraction_and_missing_labels_counted(tmp_path: Path):
    frame = _frame(60)
    frame["y"] = frame["y"].astype(object)
    frame.loc[[0, 1, 2], "y"] = "NA"
    ds = _load(_csv(tmp_path, frame), site="site", drop=("patient_id",), val_fraction=0.25)
    assert ds.preprocessing["rows_dropped_missing_label"] == {"cohort.csv": 3}
    assert sum(len(site_y(s, "train")) + len(site_y(s, "val")) + len(site_y(s, "test")) for s in ds.sites) == 57
    assert all(len(site_y(s, "val")) > 0 for s in ds.sites)


# ----- task inference ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "task", "classes", "dtype"),
    [
        (["no", "yes"], "binary", ("no", "yes"), np.float32),
        ([False, True], "binary", ("False", "True"), np.float32),
        ([0, 1], "binary", ("0", "1"), np.float32),
        (["mild", "moderate", "severe"], "multiclass", ("mild", "moderate", "severe"), np.int64),
        ([1, 2, 3, 10], "multiclass", ("1", "2", "3", "10"), np.int64),
        ([0.5, 1.25, 2.75, 3.1], "regression", (), np.float32),
    ],
)
def test_task_inference(tmp_path: Path, labels, task, classes, dtype):
    n = 48
    frame = pd.DataFrame({"site": ["A"] * 24 + ["B"] * 24, "x": np.arange(n, dtype=float),
                          "y": [labels[i % len(labels)] for i in range(n)]})
    ds = _load(_csv(tmp_path, frame), site="site")
    assert ds.task == task
    assert ds.classes == classes
    assert site_y(ds.sites[0], "train").dtype == dtype
    if task == "binary":  # positive class = second sorted value
        assert set(np.unique(np.concatenate([site_y(s, "train") for s in ds.sites]))) == {0.0, 1.0}


def test_many_integer_values_is_regression_and_task_override(tmp_path: Path):
    frame = pd.DataFrame({"site": ["A"] * 30 + ["B"] * 30, "x": np.arange(60.0), "y": np.arange(60)})
    path = _csv(tmp_path, frame)
    assert _load(path, site="site").task == "regression"
    assert _load(path, site="site", task="multiclass").task == "multiclass"
    with pytest.raises(DataError, match="task 'binary' needs exactly 2 label values.*60"):
        _load(path, site="site", task="binary")


def test_regression_forced_on_text_label(tmp_path: Path):
    frame = pd.DataFrame({"site": ["A"] * 10, "x": np.arange(10.0), "y": ["a", "b"] * 5})
    with pytest.raises(DataError, match="regression.*'a'"):
        _load(_csv(tmp_path, frame), site="site", task="regression")


# ----- bad input -----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="data file '.*nothere.csv' not found"):
        _load(str(tmp_path / "nothere.csv"), site="site")


def test_unsupported_suffix(tmp_path: Path):
    path = tmp_path / "cohort.xlsx"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="unsupported.*cohort.xlsx.*csv.*parquet"):
        _load(str(path), site="site")


def test_unknown_column_lists_available(tmp_path: Path):
    path = _csv(tmp_path, _frame())
    with pytest.raises(DataError, match="column 'hospital' not found in 'cohort.csv'; available columns: patient_id, site, age"):
        _load(path, site="hospital")
    with pytest.raises(DataError, match="column 'outcome' not found"):
        _load(path, site="site", label="outcome")
    with pytest.raises(DataError, match="column 'nope' not found"):
        _load(path, site="site", drop=("nope",))


def test_unknown_column_list_is_truncated(tmp_path: Path):
    frame = pd.DataFrame({f"c{i}": range(8) for i in range(30)})
    with pytest.raises(DataError, match=r"c11, \.\.\. \(30 in all\)"):
        _load(_csv(tmp_path, frame), label="missing_label", site="c0")


def test_a_site_of_two_or_three_patients_trains_and_says_it_is_not_evaluated(tmp_path: Path):
    frame = _frame()
    frame.loc[:2, "site"] = "three"
    frame.loc[3:4, "site"] = "two"
    path = _csv(tmp_path, frame)
    ds = _load(path, site="site", drop=("patient_id",))
    assert ds.site("three").sizes() == {"train": 3, "val": 0, "test": 0}
    assert ds.site("two").sizes() == {"train": 2, "val": 0, "test": 0}
    run = fedcare.simulate(data=[path], site="site", label="y", drop=["patient_id"], rounds=2,
                           out=str(tmp_path / "run"))
    s = run.summary
    assert set(s["federated"]["sites"]) == set(s["local"]["sites"]) == {"A", "B"}
    assert s["site_sizes"]["two"]["train"] == 2
    assert any(w.startswith("site 'two' has 2 rows and none to test on") for w in s["warnings"])
    assert any(w.startswith("site 'three' has 3 rows and none to test on") for w in s["warnings"])
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert any(r["site"] == "two" and r["split"] == "train" and r["num_examples"] == 2 for r in rows)


def test_rows_without_a_site_are_dropped_and_counted(tmp_path: Path):
    frame = _frame().astype({"site": object})
    frame.loc[[5, 30], "site"] = ""
    ds = _load(_csv(tmp_path, frame), site="site", drop=("patient_id",))
    assert sum(sum(s.sizes().values()) for s in ds.sites) == 38
    assert ds.preprocessing["rows_dropped_missing_site"] == {"cohort.csv": 2}
    assert ds.preprocessing["warnings"] == ["2 rows of 'cohort.csv' have an empty site column 'site' and were dropped"]


def test_single_class_label(tmp_path: Path):
    frame = _frame()
    frame["y"] = 1
    with pytest.raises(DataError, match="label 'y' has a single value"):
        _load(_csv(tmp_path, frame), site="site", drop=("patient_id",))


def test_garbage_in_numeric_column_names_row(tmp_path: Path):
    frame = _frame()
    frame["age"] = frame["age"].astype(object)
    frame.loc[16, "age"] = "abc"
    path = _csv(tmp_path, frame)
    with pytest.raises(DataError, match=r"column 'age' is numeric but row 17 holds 'abc'; fix the value or pass --categorical age"):
        _load(path, site="site", drop=("patient_id",))
    with pytest.raises(DataError, match="more than 50.*--drop age"):  # forced categorical: 60+ ages is too many
        _load(_csv(tmp_path, _frame(200), "big.csv"), site="site", drop=("patient_id",), categorical=("age",))
    coded = frame.copy()
    coded["age"] = [str(v % 5) for v in _frame()["age"]]
    coded.loc[16, "age"] = "abc"
    ds = _load(_csv(tmp_path, coded, "ok.csv"), site="site", drop=("patient_id",), categorical=("age",))
    assert "age=(other)" in ds.feature_names and "age=abc" not in ds.feature_names  # one row: suppressed


def test_garbage_names_file_when_several(tmp_path: Path):
    frame = _frame().drop(columns=["site"])
    a = _csv(tmp_path, frame.iloc[:20], "a.csv")
    bad = frame.iloc[20:].copy()
    bad["age"] = bad["age"].astype(object)
    bad.iloc[3, bad.columns.get_loc("age")] = "n.a."
    b = _csv(tmp_path, bad, "b.csv")
    with pytest.raises(DataError, match=r"column 'age' in 'b.csv' is numeric but row 4 holds 'n.a.'"):
        _load((a, b), drop=("patient_id",))


def test_identifier_column_suggests_drop(tmp_path: Path):
    with pytest.raises(DataError, match="column 'patient_id' has up to 80 distinct.*--drop patient_id"):
        _load(_csv(tmp_path, _frame(80)), site="site")


def test_a_short_code_list_over_many_small_sites_is_not_taken_for_an_identifier(tmp_path: Path):
    # 60 small sites each withhold the levels they hold too rarely to name (up to 5 each, 300 in all
    # if no two shared one); the big site names all five, so the column is five levels, not an identifier
    rng = np.random.default_rng(1)
    small = [f"S{i:02d}" for i in range(60) for _ in range(6)]
    sites = ["BIG"] * 200 + small
    frame = pd.DataFrame({"site": sites, "code": rng.choice(list("abcde"), size=len(sites)),
                          "age": rng.integers(20, 90, size=len(sites)), "y": np.arange(len(sites)) % 2})
    ds = _load(_csv(tmp_path, frame), site="site", categorical=("code",))
    assert {f"code={v}" for v in "abcde"} <= set(ds.feature_names)


def test_numeric_identifier_is_used_with_a_warning_and_dropping_it_works(tmp_path: Path):
    frame = _frame(60)
    frame["record"] = np.random.default_rng(3).permutation(60) + 100000  # unique integers, in no order
    path = _csv(tmp_path, frame)
    warned = _load(path, site="site", drop=("patient_id",))
    assert "record" in warned.feature_names
    assert warned.preprocessing["warnings"] == [(
        "column 'record' holds a different whole number in every row, like an identifier, and is used as a "
        "number; if it is one, pass --drop record")]
    dropped = _load(path, site="site", drop=("patient_id", "record"))
    assert "record" not in dropped.feature_names and "warnings" not in dropped.preprocessing
    repeated = frame.assign(record=frame["age"] * 3)  # whole numbers that repeat: a measurement
    assert "warnings" not in _load(_csv(tmp_path, repeated, "rep.csv"), site="site",
                                   drop=("patient_id",)).preprocessing


def test_yyyymmdd_dates_are_refused(tmp_path: Path):
    frame = _frame(40)
    frame["admitted"] = [20190101 + (i % 12) * 100 + i % 28 for i in range(40)]
    with pytest.raises(DataError, match="column 'admitted' holds dates written YYYYMMDD.*--drop admitted"):
        _load(_csv(tmp_path, frame), site="site", drop=("patient_id",))


def test_no_site_and_no_partition(tmp_path: Path):
    path = _csv(tmp_path, _frame().drop(columns=["site"]))
    with pytest.raises(DataError, match="--site.*--partition"):
        _load(path, drop=("patient_id",))


def test_dirichlet_with_regression_label(tmp_path: Path):
    frame = pd.DataFrame({"x": np.arange(40.0), "y": np.linspace(0, 1, 40)})
    with pytest.raises(DataError, match="regression"):
        _load(_csv(tmp_path, frame), partition="dirichlet", num_sites=2)


def test_unknown_builtin_lists_names():
    with pytest.raises(DataError, match="unknown dataset 'heart'.*heart-disease"):
        load_dataset(DataSpec(dataset="heart"))


def test_config_errors(tmp_path: Path):
    path = _csv(tmp_path, _frame())
    with pytest.raises(ConfigError, match="--site.*several"):
        load_dataset(DataSpec(data=(path, path.replace("cohort", "other")), site="site", label="y"))
    with pytest.raises(ConfigError, match="--dataset or --data, not both"):
        load_dataset(DataSpec(dataset="heart-disease", data=(path,), label="y"))
    with pytest.raises(ConfigError, match="--label"):
        load_dataset(DataSpec(data=(path,), site="site"))
    with pytest.raises(ConfigError, match="test fraction"):
        load_dataset(DataSpec(dataset="heart-disease", test_fraction=1.0))
    with pytest.raises(ConfigError, match="--partition"):
        load_dataset(DataSpec(dataset="heart-disease", partition="iid"))
    with pytest.raises(ConfigError):
        load_dataset(DataSpec())


def test_files_with_different_columns(tmp_path: Path):
    frame = _frame().drop(columns=["site"])
    a = _csv(tmp_path, frame.iloc[:20], "a.csv")
    b = _csv(tmp_path, frame.iloc[20:].drop(columns=["sex"]), "b.csv")
    with pytest.raises(DataError, match="'b.csv' lacks column 'sex'"):
        _load((a, b), drop=("patient_id",))


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        _load(str(path), site="site")


def test_numbers_read_once_encode_as_text_cells_do(tmp_path: Path):
    """A one-file simulation parses its number columns at reading (Arrow): the same cells, split into
    one file per site (read as text), give the same arrays bit for bit; odd CSVs fall back to text."""
    from fedcare.data.readers import read_table, read_table_typed
    from fedcare.data.values import parse_numbers

    n = 60
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "site": np.where(np.arange(n) % 3 == 0, "A", "B"),
        "bp": [f" {v:.4g} " if i % 7 else "NA" for i, v in enumerate(rng.normal(120, 15, n))],  # spaces, a token
        "dose": [str(v) for v in rng.integers(0, 4, n)],  # declared categorical: stays text
        "odd": [("inf" if i == 5 else f"{v:.3g}") for i, v in enumerate(rng.normal(size=n))],  # not a number
        "sex": rng.choice(["F", "M"], n),
        "y": np.arange(n) % 2,
    })
    one = _csv(tmp_path, frame)
    typed, text = read_table_typed(Path(one), {"site", "y", "dose"}), read_table(Path(one))
    assert [str(t) for t in typed.dtypes] == ["object", "float64", "object", "object", "object", "object"]
    np.testing.assert_array_equal(typed["bp"].to_numpy(), parse_numbers(text["bp"]))
    assert typed.drop(columns="bp").equals(text.drop(columns="bp"))
    spec = {"site": "site", "categorical": ("dose",), "drop": ("odd",)}
    whole = _load(one, **spec)
    files = tuple(_csv(tmp_path, rows.drop(columns="site"), f"{s}.csv") for s, rows in frame.groupby("site"))
    apart = _load(files, categorical=("dose",), drop=("odd",))
    assert whole.feature_names == apart.feature_names and "bp__missing" in whole.feature_names
    for a, b in zip(whole.sites, apart.sites):
        for part in ("train", "test"):
            np.testing.assert_array_equal(site_x(a, part), site_x(b, part))
            np.testing.assert_array_equal(site_y(a, part), site_y(b, part))
    (tmp_path / "dup.csv").write_text("a,a,y\n1,2,0\n3,4,1\n")  # Arrow keeps both names: read as text
    assert read_table_typed(tmp_path / "dup.csv", {"y"}).equals(read_table(tmp_path / "dup.csv"))


def test_a_released_site_answers_finish_again_and_nothing_else(tmp_path: Path):
    from fedcare.data.prepare import SitePreparation, prepare
    from fedcare.data.raw import RawSite
    from fedcare.data.readers import read_table

    site = SitePreparation(RawSite("A", read_table(Path(_csv(tmp_path, _frame()))), "cohort.csv"), release_rows=True)
    asked: dict[str, dict] = {}

    def ask(phase: str, question: dict) -> dict:
        asked[phase] = question
        return {"A": site.answer(phase, question)}

    prepare(DataSpec(data=("cohort.csv",), label="y", drop=("patient_id", "site")), ["A"], ask)
    assert site.data is not None and site.answer("finish", asked["finish"]) == {"rows": site.row_counts}
    with pytest.raises(DataError, match="released its rows"):
        site.answer("schema", asked["schema"])
