"""Validation against econml's pooled doubly robust learner (the optional `causal-test` extra): the
federated AIPW effect and interval and the federated linear DR-learner agree with LinearDRLearner
on the same rows. Not bit for bit: econml fits one outcome model with the arm as a feature and
draws its own cross-fitting folds, so the estimates agree within their standard error."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_csv
from test_treatment import dataset_of, pooled_rows, trial_frame

from fedcare.transports.cate import Learners
from fedcare.transports.effects import treatment_block

econml = pytest.importorskip("econml.dr")


def keep_columns(ds) -> list[int]:
    """The encoded columns without the last one-hot category, so econml's final OLS is identified."""
    names = ds.feature_names
    return [i for i, n in enumerate(names) if n != [m for m in names if m.startswith("group=")][-1]]


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    frame = trial_frame(arms=("A", "B"), confounded=True, rows=200, seed=3)
    cfg, ds = dataset_of(write_csv(tmp_path_factory.mktemp("econml") / "t.csv", frame), rounds=40, lr=0.1,
                         local_epochs=2)
    x, y, t = pooled_rows(ds, ("train", "val", "test"))
    x = x[:, keep_columns(ds)]
    from sklearn.linear_model import LogisticRegression, Ridge

    reference = econml.LinearDRLearner(model_regression=Ridge(alpha=1.0), model_propensity=LogisticRegression(C=1.0),
                                       cv=2, random_state=0).fit(y, t, X=x)
    return cfg, ds, x, reference


def test_federated_aipw_agrees_with_econml(trial):
    cfg, ds, x, reference = trial
    ate = treatment_block(ds, cfg.data)["effects"]["B"]["ate"]
    theirs = float(reference.ate(x))
    low, high = (float(v) for v in reference.ate_interval(x, alpha=0.05))
    assert abs(ate["estimate"] - theirs) < ate["se"], (ate, theirs)
    assert 0.7 < (ate["ci95"][1] - ate["ci95"][0]) / (high - low) < 1.4


def test_federated_linear_dr_learner_agrees_with_econml(trial):
    cfg, ds, _, reference = trial
    ours = Learners(cfg, ds).effects("dr", "federated")
    for sd in ds.sites:
        x_test = pooled_rows(type(ds)(ds.name, ds.shape, (sd,), ds.preprocessing), ("test",))[0]
        theirs = reference.effect(x_test[:, keep_columns(ds)])
        assert np.corrcoef(ours[sd.site_id][:, 0], theirs)[0, 1] > 0.9
        assert np.abs(ours[sd.site_id][:, 0] - theirs).mean() < 0.25
