"""Federated average treatment effects: the arm target, AIPW from per-site sums, the pooled
equality, per-site estimates and heterogeneity, refusals, and the real CGD trial end to end."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, write_csv

import fedcare
import fedcare.interfaces.api
from fedcare.algorithms import effects as fx
from fedcare.core.config import resolve_config
from fedcare.core.errors import ConfigError, DataError
from fedcare.data import array, load_dataset
from fedcare.federation.effects import FOLDS, OUTCOME_RIDGE
from fedcare.transports.effects import treatment_block


def trial_frame(sites: int = 5, rows: int = 80, seed: int = 0, arms=("A", "B", "C"), confounded: bool = False,
                binary: bool = False) -> pd.DataFrame:
    """A multi-site trial: two numbers and a category, an arm, an outcome whose effect grows with x1."""
    rng = np.random.default_rng(seed)
    n = sites * rows
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    group = rng.choice(["u", "v", "w"], n)
    if confounded:  # a higher x1 makes the treated arms likelier
        logits = np.stack([np.zeros(n)] + [0.8 * x1 + 0.2 * k for k in range(1, len(arms))], axis=1)
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        t = np.array([rng.choice(len(arms), p=pi) for pi in p])
    else:
        t = rng.integers(0, len(arms), n)
    effect = np.array([0.0, 1.0, -0.5][:len(arms)])[t] * (1 + 0.5 * x1)
    y = 2.0 + x1 - 0.5 * x2 + (group == "u") * 0.7 + effect + rng.normal(scale=0.5, size=n)
    if binary:
        y = (y > 2.0).astype(int)
    return pd.DataFrame({"hospital": np.repeat([f"H{i}" for i in range(sites)], rows), "x1": x1.round(4),
                         "x2": x2.round(4), "group": group, "arm": np.array(arms)[t], "y": y.round(4)})


def dataset_of(path: Path, **options):
    cfg = resolve_config(dict(data=[str(path)], site="hospital", label="y", treatment="arm", **options))
    return cfg, load_dataset(cfg.data)


def pooled_rows(dataset, splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every site's rows of these splits in one place: inputs side by side, label, arm."""
    parts = [sd.splits[s] for sd in dataset.sites for s in splits if sd.sizes()[s]]
    x = np.vstack([np.hstack([array(p, n).reshape(len(p), -1) for n in dataset.shape.inputs]) for p in parts])
    return (x, np.concatenate([array(p, "label") for p in parts]).astype(float),
            np.concatenate([array(p, "treatment") for p in parts]))


def independent_aipw(dataset, known: list[float] | None, propensity_models=None) -> dict[str, float]:
    """The same estimator written out on the pooled rows, without the federated sums: ridge as least
    squares on augmented rows, the scores row by row."""
    folds = []
    for splits in FOLDS:
        x, y, t = pooled_rows(dataset, splits)
        folds.append((x, y, t))
    num_arms = len(dataset.preprocessing["treatment"]["arms"])
    psi = []
    for k, (x, y, t) in enumerate(folds):
        fx_, fy, ft = folds[1 - k]
        design = np.hstack([np.ones((len(fx_), 1)), fx_])
        coef = []
        for a in range(num_arms):
            rows = np.vstack([design[ft == a], math.sqrt(OUTCOME_RIDGE) * np.eye(design.shape[1])[1:]])
            target = np.concatenate([fy[ft == a], np.zeros(design.shape[1] - 1)])
            coef.append(np.linalg.lstsq(rows, target, rcond=None)[0])
        mu = np.hstack([np.ones((len(x), 1)), x]) @ np.array(coef).T
        e = np.tile(known, (len(x), 1)) if known else propensity_models[1 - k](x)
        for i in range(len(x)):
            row = []
            for a in range(1, num_arms):
                row.append(mu[i, a] - mu[i, 0] + (t[i] == a) * (y[i] - mu[i, a]) / e[i, a]
                           - (t[i] == 0) * (y[i] - mu[i, 0]) / e[i, 0])
            psi.append(row)
    psi = np.array(psi)
    arms = dataset.preprocessing["treatment"]["arms"]
    return {arm: (psi[:, j].mean(), psi[:, j].std(ddof=1) / math.sqrt(len(psi))) for j, arm in enumerate(arms[1:])}


def test_arm_target_is_encoded_alike_at_every_site(tmp_path):
    frame = trial_frame()
    _, ds = dataset_of(write_csv(tmp_path / "t.csv", frame))
    t = ds.preprocessing["treatment"]
    assert t["arms"] == ["A", "B", "C"] and t["control"] == "A" and t["control_from"] == "first in sorted order"
    assert "arm" not in " ".join(ds.feature_names)  # the arm is a target, never a feature
    for sd in ds.sites:
        codes = np.concatenate([array(sd.splits[s], "treatment") for s in ("train", "val", "test")])
        want = frame[frame.hospital == sd.site_id]["arm"].value_counts()
        assert {t["arms"][a]: int(n) for a, n in zip(*np.unique(codes, return_counts=True))} == want.to_dict()
        assert t["site_counts"][sd.site_id] == want.sort_index().to_dict()


def test_federated_aipw_equals_pooled_and_the_estimator_written_out(tmp_path):
    cfg, ds = dataset_of(write_csv(tmp_path / "t.csv", trial_frame()), propensity=0.3)
    block = treatment_block(ds, cfg.data)
    want = independent_aipw(ds, [0.4, 0.3, 0.3])
    for arm in ("B", "C"):
        e = block["effects"][arm]
        assert e["ate"]["estimate"] == pytest.approx(e["pooled"]["estimate"], abs=1e-12)
        assert e["ate"]["se"] == pytest.approx(e["pooled"]["se"], rel=1e-10)
        assert e["ate"]["estimate"] == pytest.approx(want[arm][0], abs=1e-10)
        assert e["ate"]["se"] == pytest.approx(want[arm][1], rel=1e-9)
        low, high = e["ate"]["ci95"]
        assert high - low == pytest.approx(2 * 1.959964 * e["ate"]["se"], rel=1e-6)
    # the simulated effects: B adds 1 (x1 has mean 0), C takes 0.5
    assert block["effects"]["B"]["ate"]["ci95"][0] < 1.0 < block["effects"]["B"]["ate"]["ci95"][1]
    assert block["effects"]["C"]["ate"]["ci95"][0] < -0.5 < block["effects"]["C"]["ate"]["ci95"][1]


def test_learned_propensity_matches_scikit_learn_and_corrects_confounding(tmp_path):
    from sklearn.linear_model import LogisticRegression

    frame = trial_frame(arms=("A", "B"), confounded=True, rows=150)
    cfg, ds = dataset_of(write_csv(tmp_path / "t.csv", frame))
    block = treatment_block(ds, cfg.data)
    models = []
    for splits in FOLDS:  # scikit-learn's penalised logistic regression (C = 1/λ, intercept free) per fold
        x, _, t = pooled_rows(ds, splits)
        lr = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(x, t)
        models.append(lambda z, lr=lr: np.clip(lr.predict_proba(z), fx.PROPENSITY_CLIP, 1 - fx.PROPENSITY_CLIP))
    want = independent_aipw(ds, None, models)
    got = block["effects"]["B"]
    assert got["ate"]["estimate"] == pytest.approx(want["B"][0], abs=1e-6)
    assert got["ate"]["estimate"] == pytest.approx(got["pooled"]["estimate"], abs=1e-10)
    assert "propensity learned" in got["ate"]["method"]
    assert got["ate"]["ci95"][0] < 1.0 < got["ate"]["ci95"][1]
    naive = frame[frame.arm == "B"].y.mean() - frame[frame.arm == "A"].y.mean()
    assert naive > 1.2  # the confounded difference in means is biased; the doubly robust estimate is not
    assert abs(got["ate"]["estimate"] - 1.0) < abs(naive - 1.0) / 2


def test_hand_computed_scores_interval_and_heterogeneity():
    y, t = np.array([1.0, 0.0, 1.0, 1.0]), np.array([1, 0, 0, 1])
    mu = np.array([[0.2, 0.6]] * 4)
    e = np.full((4, 2), 0.5)
    psi = fx.aipw_scores(y, t, mu, e)[:, 0]
    # 0.4 + (1 − 0.6)/0.5 = 1.2; 0.4 − (0 − 0.2)/0.5 = 0.8; 0.4 − (1 − 0.2)/0.5 = −1.2; 1.2
    assert psi == pytest.approx([1.2, 0.8, -1.2, 1.2])
    s = fx.score_sums(psi[:, None], t, 2)
    est = fx.mean_estimate(float(s["n"]), float(s["sum"][0]), float(s["sumsq"][0]))
    assert est.estimate == pytest.approx(0.5)
    assert est.se == pytest.approx(math.sqrt(((0.7 ** 2) * 2 + 0.3 ** 2 + 1.7 ** 2) / 3 / 4))
    het = fx.heterogeneity([fx.Estimate(0.1, 0.1), fx.Estimate(0.3, 0.1)])
    # fixed effect 0.2; Q = 100·0.01 + 100·0.01 = 2 on 1 df; I² = (2 − 1)/2
    assert het["q"] == pytest.approx(2.0) and het["df"] == 1 and het["i2"] == pytest.approx(0.5)
    assert het["p_value"] == pytest.approx(0.157299207, rel=1e-6)


def test_heterogeneity_across_sites_is_found_when_sites_differ(tmp_path):
    frame = trial_frame(arms=("A", "B"), rows=120)
    shift = frame.hospital.map({"H0": 3.0, "H1": -3.0}).fillna(0.0)
    frame["y"] = frame.y + (frame.arm == "B") * shift  # two hospitals where the arm does the opposite
    cfg, ds = dataset_of(write_csv(tmp_path / "t.csv", frame), propensity=0.5)
    het = treatment_block(ds, cfg.data)["effects"]["B"]["heterogeneity"]
    assert het["p_value"] < 1e-6 and het["i2"] > 0.9 and het["sites"] == 5
    cfg, ds = dataset_of(write_csv(tmp_path / "u.csv", trial_frame(arms=("A", "B"), rows=120)), propensity=0.5)
    assert treatment_block(ds, cfg.data)["effects"]["B"]["heterogeneity"]["p_value"] > 0.01


def test_a_site_missing_an_arm_takes_part_and_the_summary_says_so(tmp_path):
    frame = trial_frame(rows=60)
    frame = frame[~((frame.hospital == "H2") & (frame.arm == "C"))]
    cfg, ds = dataset_of(write_csv(tmp_path / "t.csv", frame), control="B", propensity=0.3)
    block = treatment_block(ds, cfg.data)
    assert block["control"] == "B" and block["control_from"] == "--control" and block["arms"] == ["B", "A", "C"]
    assert block["missing_arms"] == {"H2": ["C"]}
    site = block["effects"]["C"]["sites"]["H2"]
    assert site["estimate"] is None and "arm 'C'" in site["note"] and site["rows"]["C"] == 0
    assert block["effects"]["A"]["sites"]["H2"]["estimate"] is not None
    assert block["effects"]["C"]["ate"]["n"] == len(frame)  # its rows still count
    assert block["effects"]["C"]["heterogeneity"]["sites"] == 4


@pytest.mark.parametrize("options, message", [
    ({"control": "D"}, "--control 'D' is not an arm of 'arm'; its arms are: A, B, C"),
    ({"propensity": 1.5}, "--propensity must be between 0 and 1"),
    ({"propensity": 0.5}, "leaves no patient for the control"),
])
def test_bad_treatment_options_are_refused_in_one_line(tmp_path, options, message):
    path = write_csv(tmp_path / "t.csv", trial_frame())
    with pytest.raises((ConfigError, DataError)) as err:
        cfg, ds = dataset_of(path, **options)
        treatment_block(ds, cfg.data)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("privacy", [{"dp_epsilon": 1.0}, {"site_dp_epsilon": 1.0}, {"secure_aggregation": True}])
def test_privacy_the_effects_cannot_honour_is_refused(privacy):
    # the effect sums leave each site in clear, so a reported ε or masking would be a false promise
    with pytest.raises(ConfigError) as err:
        resolve_config({"data": ["x.csv"], "site": "h", "label": "y", "treatment": "arm", **privacy})
    assert f"treatment effects do not run with {next(iter(privacy))}" in str(err.value)
    assert "\n" not in str(err.value)
    assert resolve_config({"data": ["x.csv"], "site": "h", "label": "y", **privacy})  # alone, each is fine


def test_a_propensity_that_cannot_apply_is_refused_before_training(tmp_path):
    path = write_csv(tmp_path / "t.csv", trial_frame())
    with pytest.raises(ConfigError, match="leaves no patient for the control"):
        fedcare.simulate(data=[str(path)], site="hospital", label="y", treatment="arm", propensity=0.5,
                         out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # refused before the run folder, so before any training


def test_options_that_cannot_apply_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="--control needs --treatment"):
        resolve_config({"data": ["x.csv"], "label": "y", "control": "A"})
    with pytest.raises(ConfigError, match="built-in dataset 'heart-disease' has no arm"):
        resolve_config({"dataset": "heart-disease", "treatment": "sex"})
    frame = trial_frame()
    frame["y"] = np.digitize(frame.y, [1.5, 2.5])
    cfg, ds = dataset_of(write_csv(tmp_path / "t.csv", frame), task="multiclass")
    with pytest.raises(ConfigError, match="binary or continuous"):
        treatment_block(ds, cfg.data)
    one = trial_frame(arms=("A", "B"))
    one["arm"] = "A"
    with pytest.raises(DataError, match="has one arm"):
        dataset_of(write_csv(tmp_path / "one.csv", one))


def test_the_cgd_trial_without_survset_is_refused_in_one_line(monkeypatch):
    import sys

    from fedcare.data.trials import CGD_NEEDS, cgd_frame

    monkeypatch.setitem(sys.modules, "SurvSet", None)  # makes `import SurvSet...` fail
    monkeypatch.setitem(sys.modules, "SurvSet.data", None)
    with pytest.raises(DataError) as exc:
        cgd_frame()
    assert str(exc.value) == CGD_NEEDS and "pip install" in CGD_NEEDS


def test_the_cgd_trial_end_to_end_beside_the_published_figure(tmp_path):
    pytest.importorskip("SurvSet")
    from fedcare.data.trials import cgd_frame, published_risk_difference

    path = write_csv(tmp_path / "cgd.csv", cgd_frame())
    proc = run_cli("simulate", "--data", str(path), "--site", "center", "--label", "infection", "--treatment",
                   "treat", "--propensity", "0.5", "--rounds", "3", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "effect against control 'placebo'" in proc.stdout and "heterogeneity" in proc.stdout
    assert "pass --outcome-better lower if a higher value is harm" in " ".join(proc.stdout.split())
    block = json.loads((tmp_path / "run" / "summary.json").read_text())["treatment"]
    assert block["control"] == "placebo" and block["arms"] == ["placebo", "rIFN-g"]
    ate = block["effects"]["rIFN-g"]["ate"]
    assert ate["n"] == 128 and len(block["effects"]["rIFN-g"]["sites"]) == 13
    low, high = ate["ci95"]
    assert low < published_risk_difference() < high < 0  # fewer infections, as published
    assert ate["estimate"] == pytest.approx(block["effects"]["rIFN-g"]["pooled"]["estimate"], abs=1e-12)
    report = (tmp_path / "run" / "report.html").read_text()
    assert "treatment effects against 'placebo'" in report and "Harvard Medical Sch" in report
    assert "individual effects on held-out rows" in report and "<script" not in report
    assert "Q 8.60, df 9, p 0.475, I² 0%" in report  # the terminal's wording, from the same function


def test_intervals_read_alike_in_the_terminal_and_the_report():
    from fedcare.interfaces.report import heterogeneity_text, interval

    assert interval({"estimate": -0.2279, "ci95": [-0.3913, -0.0645]}) == "-0.228 [-0.391, -0.065]"
    assert interval({"estimate": 0.5, "ci95": None}) == "+0.500"  # one row: a value without an interval
    assert interval({"estimate": None}) == interval(None) == "—"
    assert heterogeneity_text({"q": None}) == "—"
    assert heterogeneity_text({"q": 2.0, "df": 1, "p_value": 0.1573, "i2": 0.5}) == "Q 2.00, df 1, p 0.157, I² 50%"


def test_the_network_coordinator_refuses_what_it_cannot_estimate(tmp_path):
    from fedcare.transports.network.coordinator import Coordinator, ServiceSettings

    cfg = resolve_config({"data": ["x.csv"], "site": "hospital", "label": "y", "treatment": "arm"})
    with pytest.raises(ConfigError, match="by fedcare simulate only"):
        Coordinator(cfg, ServiceSettings(tmp_path, ("a", "b")))
    assert not any(tmp_path.iterdir())  # nothing written


def test_recommend_applies_the_runs_preprocessing_and_the_federated_models(tmp_path):
    frame = trial_frame(rows=150)
    path = write_csv(tmp_path / "t.csv", frame)
    run = fedcare.simulate(data=[str(path)], site="hospital", label="y", treatment="arm", propensity=0.3,
                           learner="none", rounds=2, baselines=False, out=str(tmp_path / "run"))
    patients = frame.drop(columns=["y", "arm", "hospital"]).head(200)
    recs = run.recommend(patients)
    assert list(recs.columns) == ["outcome:A", "outcome:B", "outcome:C", "effect:B", "low:B", "high:B", "effect:C",
                                  "low:C", "high:C", "recommended", "interval_excludes_0"]
    # the same rows as the run encoded them, scored with ridge fitted on every row written out
    _cfg, ds = dataset_of(path, propensity=0.3)
    x, y, t = pooled_rows(ds, ("train", "val", "test"))
    design = np.hstack([np.ones((len(x), 1)), x])
    coef = []
    for a in range(3):
        rows = np.vstack([design[t == a], math.sqrt(OUTCOME_RIDGE) * np.eye(design.shape[1])[1:]])
        coef.append(np.linalg.lstsq(rows, np.concatenate([y[t == a], np.zeros(design.shape[1] - 1)]), rcond=None)[0])
    encoded = recommend_inputs(run.path, patients)
    # each patient is a training row, so its encoding must be one of the rows the run encoded
    nearest = np.abs(encoded[:, None, :] - x[None, :, :]).max(axis=2).min(axis=1)
    assert nearest.max() < 1e-5
    want = np.hstack([np.ones((len(encoded), 1)), encoded]) @ np.array(coef).T
    assert recs["outcome:A"].to_numpy() == pytest.approx(want[:, 0], abs=1e-8)
    assert recs["effect:C"].to_numpy() == pytest.approx(want[:, 2] - want[:, 0], abs=1e-8)
    true_b = 1.0 * (1 + 0.5 * patients["x1"].to_numpy())
    covered = ((recs["low:B"] < true_b) & (true_b < recs["high:B"])).mean()
    assert 0.85 < covered <= 1.0
    assert (recs["recommended"] == "B").mean() > 0.9  # B helps nearly everyone; C harms
    from fedcare.federation.recommender import Recommender

    lower = Recommender.load(run.path)
    assert dataclasses.replace(lower, better="lower").recommend(patients)["recommended"].eq("C").mean() > 0.9


def test_a_damaged_recommender_is_refused_in_one_line(tmp_path):
    from fedcare.core.errors import FedcareError
    from fedcare.core.serialization import save_params
    from fedcare.federation.recommender import FILE, Recommender

    save_params(tmp_path / FILE, {"coef": np.zeros((2, 3))}, {"other": 1})  # safetensors, but no recommender
    with pytest.raises(ConfigError, match="is not a recommender this fedcare version reads"):
        Recommender.load(tmp_path)
    (tmp_path / FILE).write_bytes(b"garbage")
    with pytest.raises(FedcareError) as err:
        Recommender.load(tmp_path)
    assert "\n" not in str(err.value)


def recommend_inputs(run_dir: Path, patients: pd.DataFrame) -> np.ndarray:
    from fedcare.data.newrows import encode_rows
    from fedcare.federation.recommender import Recommender

    return encode_rows(patients, Recommender.load(run_dir).encoding)["tabular"].astype(float)


def test_recommend_refuses_bad_patients_and_runs_without_arms(tmp_path, cohort_csv):
    path = write_csv(tmp_path / "t.csv", trial_frame(rows=40))
    out = tmp_path / "run"
    fedcare.simulate(data=[str(path)], site="hospital", label="y", treatment="arm", propensity=0.3, learner="none",
                     rounds=1, baselines=False, out=str(out))
    bad = pd.DataFrame({"x1": ["0.5", "lots"], "x2": [1, 2], "group": ["u", "v"]})
    with pytest.raises(DataError, match="row 2 of the patients' table has 'lots' in the numeric column 'x1'"):
        fedcare.interfaces.api.recommend(out, bad)
    with pytest.raises(DataError, match="lacks column 'group'"):
        fedcare.interfaces.api.recommend(out, bad.drop(columns=["group"]))
    patients = write_csv(tmp_path / "p.csv", pd.DataFrame({"x1": [0.1, ""], "x2": [0, 1], "group": ["w", "new"]}))
    proc = run_cli("recommend", str(out), "--data", str(patients), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = pd.read_csv(out / "recommendations.csv")
    assert len(written) == 2 and set(written["recommended"]) <= {"A", "B", "C"}  # missing and unseen values encoded
    plain = fedcare.simulate(data=[str(cohort_csv)], site="hospital", label="y", drop=["patient_id"], rounds=1,
                             baselines=False, out=str(tmp_path / "plain"))
    proc = run_cli("recommend", str(plain.path), "--data", str(patients), cwd=tmp_path)
    assert proc.returncode == 2 and "holds no recommender" in proc.stderr


def test_what_a_site_sends_about_effects_does_not_grow_with_its_rows(tmp_path):
    """Sums and counts only: the answers of a site with 4x the patients have the same shape."""
    from fedcare.federation.effects import EffectSite

    def answers(rows: int) -> list:
        _, ds = dataset_of(write_csv(tmp_path / f"t{rows}.csv", trial_frame(sites=2, rows=rows)))
        site = EffectSite(ds.sites[0], tuple(ds.shape.inputs), 3)
        dim = sum(s.shape[0] for s in ds.shape.inputs.values()) + 1
        got = [site.answer("outcomes", {}),
               site.answer("propensity", {"coef": [np.zeros((2, dim)).tolist()] * 2}),
               site.answer("scores", {"outcome": [np.zeros((3, dim)).tolist()] * 2, "known": [0.4, 0.3, 0.3]})]
        return [leaf_shapes(a) for a in got]

    def leaf_shapes(obj) -> object:
        if isinstance(obj, dict):
            return {k: leaf_shapes(v) for k, v in obj.items()}
        if isinstance(obj, list) and obj and isinstance(obj[0], dict):
            return [leaf_shapes(v) for v in obj]
        return np.shape(obj)

    assert answers(40) == answers(160)
    with pytest.raises(DataError, match="unknown treatment question"):
        EffectSite(dataset_of(tmp_path / "t40.csv")[1].sites[0], ("tabular",), 3).answer("rows", {})
