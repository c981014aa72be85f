"""Individual effects: T-, S- and DR-learners on the federated training, their held-out evaluation
(policy value, Qini, uplift AUC) and the summary block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_csv

import fedcare
from fedcare.algorithms.uplift import _qini, policy_gain, policy_values, qini, value_scores
from fedcare.core.config import resolve_config
from fedcare.core.errors import ConfigError
from fedcare.data import array, load_dataset
from fedcare.transports.cate import Learners, recommend

FAST = {"rounds": 30, "lr": 0.1, "local_epochs": 2}


def hetero_frame(sites: int = 4, rows: int = 150, seed: int = 0) -> pd.DataFrame:
    """Effect 2·x1: half the patients gain from arm B, half lose; arms randomised 1:1."""
    rng = np.random.default_rng(seed)
    n = sites * rows
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    t = rng.integers(0, 2, n)
    y = 1.0 + x2 + t * 2.0 * x1 + rng.normal(scale=0.3, size=n)
    return pd.DataFrame({"hospital": np.repeat([f"H{i}" for i in range(sites)], rows), "x1": x1.round(4),
                         "x2": x2.round(4), "arm": np.where(t == 1, "B", "A"), "y": y.round(4)})


@pytest.fixture(scope="module")
def learners(tmp_path_factory):
    path = write_csv(tmp_path_factory.mktemp("cate") / "t.csv", hetero_frame())
    cfg = resolve_config(dict(data=[str(path)], site="hospital", label="y", treatment="arm", propensity=0.5, **FAST))
    ds = load_dataset(cfg.data)
    truth = {sd.site_id: 2.0 * array(sd.splits["test"], "tabular")[:, 0] for sd in ds.sites}  # x1 standardised
    return Learners(cfg, ds), truth


@pytest.mark.parametrize("learner", ["t", "dr"])
@pytest.mark.parametrize("mode", ["federated", "pooled"])
def test_linear_learners_recover_the_effect_that_varies(learners, learner, mode):
    model, truth = learners
    pred = model.effects(learner, mode)
    for site, tau in truth.items():
        corr = np.corrcoef(pred[site][:, 0], tau)[0, 1]
        assert corr > 0.95, (site, corr)  # x1 is standardised, so the slope is 2·sd(x1), near 2


def test_s_learner_with_a_linear_model_cannot_see_heterogeneity_but_an_mlp_can(learners, tmp_path):
    model, truth = learners
    flat = model.effects("s", "federated")
    assert all(np.ptp(flat[s]) < 1e-5 for s in truth)  # arm and x enter additively: one effect for all
    cfg = model.cfg.replace(model="mlp", hidden=[16], rounds=40)
    mlp = Learners(cfg, model.dataset).effects("s", "federated")
    assert np.mean([np.corrcoef(mlp[s][:, 0], truth[s])[0, 1] for s in truth]) > 0.8


def test_recommended_policy_beats_treating_all_or_none(learners):
    model, _ = learners
    from fedcare.transports.cate import evaluation

    result = evaluation(model, model.effects("t", "federated"), higher_is_better=True)
    pv = result["all_sites"]["policy_value"]
    assert pv["policy"]["estimate"] > pv["treat_none"]["estimate"] + 0.5
    assert pv["policy"]["estimate"] > pv["treat_all"]["B"]["estimate"] + 0.5
    assert 0.3 < pv["recommended_share"]["B"] < 0.7
    q = result["all_sites"]["uplift"]["B"]
    assert q["qini"] > 0 and q["qini_ci95"][0] > 0 and q["uplift_auc"] > 0
    assert set(result["sites"]) == set(model.ids)
    gains = {s: v["policy_gain"]["estimate"] for s, v in result["sites"].items()}
    assert result["worst_site"] == {"site_id": min(gains, key=gains.get), "policy_gain": min(gains.values())}
    assert result["all_sites"]["policy_gain"]["estimate"] > 0.5
    assert result["all_sites"]["policy_gain"]["ci95"][0] > 0  # paired: the gain is clear, not only the point
    lower = evaluation(model, model.effects("t", "federated"), higher_is_better=False)["all_sites"]
    assert lower["policy_value"]["policy"]["estimate"] < pv["treat_none"]["estimate"] - 0.5  # it aims low


def test_local_learners_whose_training_diverges_have_no_model_and_no_crash(tmp_path):
    path = write_csv(tmp_path / "t.csv", hetero_frame(rows=60))
    cfg = resolve_config(dict(data=[str(path)], site="hospital", label="y", treatment="arm", propensity=0.5,
                              rounds=3, lr=1e12, local_epochs=2))  # a step this large makes every local model non-finite
    diverged = Learners(cfg, load_dataset(cfg.data))
    for learner in ("t", "s", "dr"):
        assert set(diverged.effects(learner, "local").values()) == {None}, learner
    from fedcare.interfaces.htmltreatment import treatment_html
    from fedcare.interfaces.report import cate_table
    from fedcare.transports.cate import evaluation

    judged = evaluation(diverged, diverged.effects("t", "local"), higher_is_better=True)
    assert judged["all_sites"] is None and judged["worst_site"]["site_id"] is None
    assert all("no model" in v["note"] for v in judged["sites"].values())
    cate = {"better": "higher", "learners": {"t": {"local": judged}}}
    assert cate_table(cate).row_count == 1
    assert "no model at any site" in treatment_html({"treatment": {"control": "A", "control_from": "x", "outcome": "y",
                                                                   "effects": {}, "cate": cate}})


def test_personalized_learners_give_each_site_its_own_model(learners):
    model, truth = learners
    personal = Learners(model.cfg.replace(personalization="finetune", finetune_epochs=3), model.dataset)
    pred = personal.effects("t", "federated")
    shared = model.effects("t", "federated")
    assert any(not np.allclose(pred[s], shared[s]) for s in truth)


def test_hand_computed_qini_uplift_and_policy_value():
    benefit = np.array([4.0, 3.0, 2.0, 1.0])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    treated = np.array([True, False, True, False])
    q, auc = _qini(benefit, y, treated)
    # cumulative Qini 1, 1, 1, 0 against a random line of 0: (1 + 1 + 1) / 4 / 4; uplift 0, 1, ½, 0
    assert q == pytest.approx(3 / 16) and auc == pytest.approx(1.5 / 4)
    assert qini(benefit, y[:3], treated[:3]) is None  # one control row: no curve
    gamma = value_scores(np.array([1.0, 0.0]), np.array([1, 0]), np.array([[0.5, 0.5], [0.5, 0.5]]),
                         np.full((2, 2), 0.5))
    assert gamma.tolist() == [[0.5, 1.5], [-0.5, 0.5]]
    pv = policy_values(gamma, np.array([1, 0]), ("A", "B"))
    assert pv["policy"]["estimate"] == pytest.approx(0.5) and pv["treat_all"]["B"]["estimate"] == pytest.approx(1.0)
    # paired gain over always-B: differences 0 and −1, mean −0.5, sd √0.5, se 0.5
    gain = policy_gain(gamma, np.array([1, 0]), 1, 1.0)
    assert gain["estimate"] == pytest.approx(-0.5)
    assert gain["ci95"] == pytest.approx([-0.5 - 1.959964 * 0.5, -0.5 + 1.959964 * 0.5])
    assert policy_gain(gamma, np.array([1, 0]), 1, -1.0)["estimate"] == pytest.approx(0.5)
    assert recommend(np.array([[0.2], [-0.1]]), True).tolist() == [1, 0]
    assert recommend(np.array([[0.2], [-0.1]]), False).tolist() == [0, 1]


def test_summary_has_the_cate_block_per_learner_model_and_site(tmp_path):
    path = write_csv(tmp_path / "t.csv", hetero_frame(sites=3, rows=60))
    run = fedcare.simulate(data=[str(path)], site="hospital", label="y", treatment="arm", propensity=0.5,
                           learner=["t"], out=str(tmp_path / "run"), rounds=5)
    cate = run.summary["treatment"]["cate"]
    assert cate["better"] == "higher" and list(cate["learners"]) == ["t"]
    assert set(cate["learners"]["t"]) == {"federated", "local", "pooled"}
    assert set(cate["learners"]["t"]["federated"]["sites"]) == {"H0", "H1", "H2"}
    none = fedcare.simulate(data=[str(path)], site="hospital", label="y", treatment="arm", learner="none",
                            out=str(tmp_path / "run2"), rounds=2, baselines=False)
    assert "cate" not in none.summary["treatment"]
    with pytest.raises(ConfigError, match="unknown learner 'x'"):
        resolve_config({"data": [str(path)], "label": "y", "treatment": "arm", "learner": ["x"]})


def test_a_treatment_run_is_deterministic_and_reruns_from_its_config(tmp_path):
    from conftest import summary_without_wall

    path = write_csv(tmp_path / "t.csv", hetero_frame(sites=3, rows=50))
    settings = {"data": [str(path)], "site": "hospital", "label": "y", "treatment": "arm", "learner": ["t", "dr"],
                "rounds": 3, "baselines": False, "outcome_better": "lower"}
    first = fedcare.simulate(out=str(tmp_path / "a"), **settings)
    fedcare.simulate(out=str(tmp_path / "b"), **settings)
    again = fedcare.simulate(str(first.path / "config.yaml"), out=str(tmp_path / "c"))
    assert summary_without_wall(tmp_path / "a") == summary_without_wall(tmp_path / "b")
    assert again.summary["treatment"] == first.summary["treatment"]
    assert again.config.effects.outcome_better == "lower" and again.config.effects.learners == ("t", "dr")


def test_the_average_effect_with_the_learned_federated_models_agrees_with_the_closed_form(learners):
    from fedcare.transports.effects import treatment_block

    model, _ = learners
    closed = treatment_block(model.dataset, model.cfg.data)["effects"]["B"]["ate"]
    learned = model.ate("federated")["B"]
    assert "DR-learner's federated outcome models" in learned["method"] and learned["n"] == closed["n"]
    assert abs(learned["estimate"] - closed["estimate"]) < closed["se"]
    truth = 2.0 * hetero_frame().x1.mean()  # the fixture's rows: the effect is 2·x1
    assert learned["ci95"][0] < truth < learned["ci95"][1]
