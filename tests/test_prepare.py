"""Preparing over the network (site answers, coordinator questions) must equal the simulation, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import HEART_SITES, cohort_frame, named, site_x
from fedcare.core.errors import DataError
from fedcare.data import DataSpec, FederatedDataset, load_dataset
from fedcare.data.prepare import PreparedDataset, SitePreparation, ask_in_process, prepare

PHASE_KEYS = {  # every key an answer may hold: the module docstring's list, enforced (an input's
    # own questions, such as tabular.stats, by their last part)
    "columns": {"columns", "source", "dropped_on_read"},
    "schema": {"rows", "dropped", "columns", "label", "events"},
    "categories": {"columns"},
    "locate": {"found"},
    "split": {"rows"},
    "stats": {"stats"},
    "counts": {"counts"},
    "finish": {"rows"},
}


def json_ask(sites: list[SitePreparation], log: list | None = None):
    """The network's view: questions and answers cross as JSON text (strict: no NaN or infinity)."""
    inner = ask_in_process(sites)

    def ask(phase: str, question: dict) -> dict:
        sent = json.loads(json.dumps(question, allow_nan=False))
        answers = json.loads(json.dumps(inner(phase, sent), allow_nan=False))
        if log is not None:
            log.append((phase, sent, answers))
        return answers

    return ask


def assert_same(prepared: PreparedDataset, sites: list[SitePreparation], expected: FederatedDataset,
                own_files: bool = False) -> None:
    """`own_files`: the sites read their own files and keep their names: the coordinator knows none,
    so the entries that a simulation keys by file name are keyed by site id."""
    assert prepared.shape == expected.shape
    assert prepared.shape.feature_names == expected.feature_names
    want = dict(expected.preprocessing)
    if own_files:
        assert prepared.name == "own-data"
        dropped = next(k for k in want if k.startswith("rows_dropped"))
        want |= {"files": [], dropped: {s.site_id: n for s, n in zip(sites, want[dropped].values())}}
    else:
        assert prepared.name == expected.name
    assert json.dumps(prepared.preprocessing) == json.dumps(want)  # same content, same order
    assert [s.site_id for s in sites] == [s.site_id for s in expected.sites]
    for site, want in zip(sites, expected.sites):
        assert site.data is not None
        for split in ("train", "val", "test"):
            got, ref = named(site.data, split), named(want, split)
            assert list(got) == list(ref), (site.site_id, split)
            for part in ref:
                assert got[part].dtype == ref[part].dtype and got[part].shape == ref[part].shape, (site.site_id, part)
                assert got[part].tobytes() == ref[part].tobytes(), (site.site_id, split, part)
        assert site.row_counts == expected.preprocessing["site_rows"][site.site_id]


# ----- equivalence with the simulation ---------------------------------------------------------


@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_heart_disease_over_the_network_equals_simulation(val_fraction):
    spec = DataSpec(dataset="heart-disease", val_fraction=val_fraction)
    sites = [SitePreparation.from_builtin("heart-disease", s) for s in HEART_SITES]
    log: list = []
    prepared = prepare(spec, HEART_SITES, json_ask(sites, log))
    assert_same(prepared, sites, load_dataset(spec))
    assert [phase for phase, _, _ in log] == ["columns", "schema", "tabular.categories", "split", "tabular.stats",
                                              "finish"]
    assert log[1][1]["label"] is None  # the built-in label encoding is fixed: no label values asked
    stored = json.loads(json.dumps(prepared.to_json()))  # a coordinator keeps it as JSON
    assert PreparedDataset.from_json(stored) == prepared


def _write_sites(tmp_path: Path, frame: pd.DataFrame, column: str) -> list[str]:
    paths = []
    for site_id, rows in frame.groupby(column, sort=False):
        path = tmp_path / f"{site_id}.csv"
        rows.drop(columns=[column]).to_csv(path, index=False)
        paths.append(str(path))
    return paths


def _survival_frame(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 90
    frame = pd.DataFrame({
        "hospital": np.repeat(["north", "south", "east"], n // 3),
        "age": rng.integers(30, 80, size=n).astype(object),
        "stage": rng.choice(["I", "II", "III"], size=n).astype(object),
        "months": np.round(rng.uniform(0.5, 60, size=n), 2).astype(object),
        "died": rng.choice(["no", "yes"], size=n).astype(object),
    })
    frame.loc[[3, 47], "months"] = ""  # rows dropped for a missing target, counted per file
    frame.loc[[5], "died"] = "?"
    frame.loc[[8, 40, 70], "age"] = ""  # numeric column with missing values: the median is searched
    frame.loc[[11, 61], "stage"] = "NA"  # categorical column with missing values: imputed with the mode
    return frame


CASES = {
    "binary": (lambda: cohort_frame("binary", sites=3, seed=4), dict(label="y", drop=("patient_id",))),
    "multiclass": (lambda: cohort_frame("multiclass", sites=3, seed=5),
                   dict(label="y", drop=("patient_id",), val_fraction=0.2, split_seed=7)),
    "regression": (lambda: cohort_frame("regression", sites=3, seed=6),
                   dict(label="y", drop=("patient_id",), categorical=("sex",), test_fraction=0.25)),
    "survival": (_survival_frame, dict(time="months", event="died")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_site_files_over_the_network_equal_simulation(tmp_path, case):
    make, options = CASES[case]
    frame = make()
    if case != "survival":
        frame = frame.astype(object)
        frame.loc[[7, 100], "sex"] = ""  # a missing category too
        frame.loc[[12], "y"] = ""  # a row without a label
    paths = _write_sites(tmp_path, frame, "hospital")
    spec = DataSpec(data=tuple(paths), **options)
    expected = load_dataset(spec)
    sites = [SitePreparation.from_file(p, Path(p).stem) for p in paths]
    log: list = []
    prepared = prepare(DataSpec(**options), [s.site_id for s in sites], json_ask(sites, log))  # no paths needed
    assert_same(prepared, sites, expected, own_files=True)
    assert ".csv" not in json.dumps(log)  # no site's file name reaches the coordinator
    assert any(m.endswith("__missing") for m in prepared.shape.feature_names)
    counts = sum(phase == "tabular.counts" for phase, _, _ in log)
    assert 0 < counts <= 60  # every column's median search shares the round trips


def test_ovarian_over_the_network_equals_simulation():
    pytest.importorskip("SurvSet")
    spec = DataSpec(dataset="ovarian-genomics")
    expected = load_dataset(spec)
    ids = [s.site_id for s in expected.sites]
    sites = [SitePreparation.from_builtin("ovarian-genomics", s) for s in ids]
    assert_same(prepare(spec, ids, json_ask(sites)), sites, expected)


def test_result_does_not_depend_on_answer_order(tmp_path):
    paths = _write_sites(tmp_path, cohort_frame("binary", sites=3, seed=8), "hospital")
    spec = DataSpec(label="y", drop=("patient_id",))
    forward = [SitePreparation.from_file(p, Path(p).stem) for p in paths]
    backward = [SitePreparation.from_file(p, Path(p).stem) for p in paths]
    ids = [s.site_id for s in forward]
    a = prepare(spec, ids, json_ask(forward))
    b = prepare(spec, ids, json_ask(backward[::-1]))  # sites answer, and the answers arrive, reversed
    assert json.dumps(a.preprocessing) == json.dumps(b.preprocessing)
    for x, y in zip(forward, backward):
        assert site_x(x.data, "train").tobytes() == site_x(y.data, "train").tobytes()


# ----- what leaves a site -----------------------------------------------------------------------


def _leaves(value, out: list) -> list:
    if isinstance(value, dict):
        for k, v in value.items():
            out.append(k)
            _leaves(v, out)
    elif isinstance(value, list):
        for v in value:
            _leaves(v, out)
    else:
        out.append(value)
    return out


def test_only_aggregates_leave_a_site(tmp_path):
    rng = np.random.default_rng(11)
    n = 60
    frame = pd.DataFrame({
        "hospital": np.repeat(["a", "b"], n // 2),
        "bp": rng.uniform(100, 160, n).round(3),  # measurements: must never be sent
        "weight": rng.uniform(50, 110, n).round(3).astype(object),
        "smoker": rng.choice(["yes", "no"], n),
        "y": rng.uniform(1, 50, n).round(3),  # a regression outcome: must never be sent either
    })
    frame.loc[[2, 33], "weight"] = ""
    paths = _write_sites(tmp_path, frame, "hospital")
    sites = [SitePreparation.from_file(p, Path(p).stem) for p in paths]
    log: list = []
    prepared = prepare(DataSpec(label="y"), ["a", "b"], json_ask(sites, log))
    assert prepared.shape.task == "regression"
    cells = {float(v) for c in ("bp", "weight", "y") for v in frame[c] if v != ""}
    for phase, _, answers in log:
        for site, answer in answers.items():
            assert set(answer) <= PHASE_KEYS[phase.rpartition(".")[2]], (phase, set(answer))
            for leaf in _leaves(answer, []):
                assert leaf is None or isinstance(leaf, (str, int, float, bool))
                if isinstance(leaf, float):
                    assert leaf not in cells, (phase, site, leaf)
                if isinstance(leaf, str):
                    assert leaf not in {str(c) for c in cells}, (phase, site, leaf)
    schema = next(a for phase, _, a in log if phase == "schema")
    assert all(a["label"]["values"] is None for a in schema.values())  # regression: values withheld
    categories = next(a for phase, _, a in log if phase == "tabular.categories")
    assert set(categories["a"]["columns"]) == {"smoker"}  # distinct values only for categorical columns


def test_label_values_sent_only_when_they_can_be_classes():
    from fedcare.data.labels import label_summary

    assert label_summary(["1", "0", "1.0"], None)["values"] == ["0", "1"]
    assert label_summary([str(v) for v in range(12)], None)["values"] is not None  # could be 12 classes
    assert label_summary([str(v) for v in range(30)], None)["values"] is None  # too many for classes
    assert label_summary(["1.5", "2.25", "3.0"], None)["values"] is None  # fractions: a regression
    assert label_summary(["1.5", "2.25", "3.0"], "regression")["values"] is None
    assert label_summary([str(v) for v in range(30)], "multiclass")["values"] is not None  # declared classes
    assert label_summary(["mild", "severe"], "regression")["first_text"] == "mild"


# ----- errors -------------------------------------------------------------------------------------


def _two_files(tmp_path: Path, frame: pd.DataFrame | None = None) -> list[SitePreparation]:
    frame = cohort_frame("binary", sites=2, seed=2) if frame is None else frame
    return [SitePreparation.from_file(p, Path(p).stem) for p in _write_sites(tmp_path, frame, "hospital")]


def test_partition_is_refused():
    with pytest.raises(DataError, match="--partition.*only in simulation"):
        prepare(DataSpec(label="y", partition="iid"), ["a"], lambda phase, q: {})


def test_site_with_different_columns_is_named(tmp_path):
    frame = cohort_frame("binary", sites=2, seed=2)
    first = tmp_path / "H1.csv"
    frame[frame.hospital == "H1"].drop(columns=["hospital"]).to_csv(first, index=False)
    second = tmp_path / "H2.csv"
    frame[frame.hospital == "H2"].drop(columns=["hospital", "bp"]).to_csv(second, index=False)
    sites = [SitePreparation.from_file(first, "H1", share_name=True), SitePreparation.from_file(second, "H2", share_name=True)]
    with pytest.raises(DataError, match="site 'H2': 'H2.csv' lacks column 'bp' compared with 'H1.csv' of site 'H1'"):
        prepare(DataSpec(label="y"), ["H1", "H2"], json_ask(sites))
    private = [SitePreparation.from_file(first, "H1"), SitePreparation.from_file(second, "H2")]  # an agent's
    with pytest.raises(DataError, match="^site 'H2' lacks column 'bp' compared with site 'H1'; all sites need"):
        prepare(DataSpec(label="y"), ["H1", "H2"], json_ask(private))


def test_bad_value_is_located_by_its_site(tmp_path):
    frame = cohort_frame("binary", sites=2, seed=2).astype(object)
    frame.loc[70, "bp"] = "12O.5"  # a typo at H2: its 11th data row
    sites = _two_files(tmp_path, frame)
    log: list = []
    with pytest.raises(DataError, match=r"column 'bp' in 'H2.csv' is numeric but row 11 holds '12O.5'"):
        prepare(DataSpec(label="y", drop=("patient_id",)), ["H1", "H2"], json_ask(sites, log))
    assert log[-1][0] == "tabular.categories"  # the error is raised while answering 'locate', by the site


def test_missing_or_malformed_answer_names_the_site(tmp_path):
    sites = _two_files(tmp_path)
    spec = DataSpec(label="y", drop=("patient_id",))
    inner = json_ask(sites)

    def silent(phase, question):
        answers = inner(phase, question)
        answers.pop("H2") if phase == "tabular.stats" else None
        return answers

    with pytest.raises(DataError, match="site 'H2' sent no answer to the 'tabular.stats' question"):
        prepare(spec, ["H1", "H2"], silent)

    def garbled(phase, question):
        answers = inner(phase, question)
        if phase == "schema":
            answers["H1"]["rows"] = -3
        return answers

    with pytest.raises(DataError, match="the 'schema' answer of site 'H1' is malformed"):
        prepare(spec, ["H1", "H2"], garbled)


def test_site_checks_its_questions(tmp_path):
    site = _two_files(tmp_path)[0]
    with pytest.raises(DataError, match="holds its own file 'H1.csv' but the coordinator prepares the built-in"):
        site.answer("columns", {"dataset": "heart-disease"})
    with pytest.raises(DataError, match="got 'split' before 'schema'"):
        site.answer("split", {"encoding": {"kind": "label", "column": "y", "task": "binary", "classes": ["0", "1"],
                                           "mapping": {"0": 0, "1": 1}},
                              "test_fraction": 0.34, "val_fraction": 0.0, "split_seed": 43})
    with pytest.raises(DataError, match="got 'tabular.stats' before 'schema'"):
        site.answer("tabular.stats", {"types": {"order": [], "numeric": [], "categorical": []}})
    with pytest.raises(DataError, match="unknown question 'rows'"):
        site.answer("rows", {})
    with pytest.raises(DataError, match="'schema' question to site 'H1' is malformed"):
        site.answer("schema", {"targets": "y"})
    with pytest.raises(DataError, match="dataset 'heart-disease' has no site 'H1'; its sites are: cleveland"):
        SitePreparation.from_builtin("heart-disease", "H1")


def test_tiny_site_and_duplicate_ids(tmp_path):
    frame = cohort_frame("binary", sites=2, seed=2)
    frame = pd.concat([frame[frame.hospital == "H1"], frame[frame.hospital == "H2"].head(3)])
    sites = _two_files(tmp_path, frame)
    prepared = prepare(DataSpec(label="y", drop=("patient_id",)), ["H1", "H2"], json_ask(sites))
    assert prepared.preprocessing["site_rows"]["H2"] == {"train": 3, "val": 0, "test": 0}  # trains, not evaluated
    with pytest.raises(DataError, match="site id 'H1' appears twice"):
        prepare(DataSpec(label="y"), ["H1", "H1"], json_ask(sites))


def test_a_site_answers_one_split_and_only_for_its_targets(tmp_path):
    site = _two_files(tmp_path)[0]
    site.answer("columns", {"dataset": None})
    features = ["age", "bp", "sex"]
    site.answer("schema", {"targets": ["y"], "features": features, "label": None, "survival": None,
                           "inputs": {"tabular": {"kind": "tabular", "columns": features}}})
    encoding = {"kind": "label", "column": "y", "task": "binary", "classes": ["0", "1"], "mapping": {"0": 0, "1": 1}}
    split = {"encoding": encoding, "test_fraction": 0.34, "val_fraction": 0.0, "split_seed": 43}
    first = site.answer("split", split)
    assert site.answer("split", split) == first  # the same question again (a restarted coordinator): the same answer
    with pytest.raises(DataError, match="asked to split its rows again with other settings"):
        site.answer("split", {**split, "split_seed": 44})
    with pytest.raises(DataError, match="encoding names other columns than the schema's targets"):
        site.answer("split", {**split, "encoding": {**encoding, "column": "age"}})


def test_an_omics_site_never_sends_its_values(tmp_path):
    frame = cohort_frame("binary", sites=2, seed=2).drop(columns=["patient_id", "sex"])
    site = _two_files(tmp_path, frame)[0]
    site.answer("columns", {"dataset": None})
    site.answer("schema", {"targets": ["y"], "features": ["age", "bp"], "label": None, "survival": None,
                           "inputs": {"omics": {"kind": "omics", "columns": ["age", "bp"]}}})
    with pytest.raises(DataError, match="asked 'omics.categories' for the values of its omics columns"):
        site.answer("omics.categories", {"columns": ["bp"]})
    encoding = {"kind": "label", "column": "y", "task": "binary", "classes": ["0", "1"], "mapping": {"0": 0, "1": 1}}
    site.answer("split", {"encoding": encoding, "test_fraction": 0.34, "val_fraction": 0.0, "split_seed": 43})
    with pytest.raises(DataError, match="asked 'omics.stats' for the values"):
        site.answer("omics.stats", {"types": {"order": ["age", "bp"], "numeric": ["age"], "categorical": ["bp"]}})
    stats = site.answer("omics.stats", {"types": {"order": ["age", "bp"], "numeric": ["age", "bp"], "categorical": []}})
    assert set(stats["stats"]["numeric"]) == {"age", "bp"} and stats["stats"]["categorical"] == {}
