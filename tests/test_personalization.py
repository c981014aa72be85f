"""Personalization: what each site keeps never leaves it, survives rounds, and ends as its own model."""

import numpy as np
import pytest

import fedcare
from fedcare.core import ConfigError
from fedcare.core.messages import FitRequest
from fedcare.core.serialization import load_params
from conftest import examples
from fedcare.learning import LocalSite, make_task
from fedcare.core.config import ModelSpec
from fedcare.data import InputShape
from fedcare.learning.models import LinearModel, build_model, get_params, initial_model


def test_fedper_head_never_reaches_the_coordinator_and_each_site_keeps_its_own(tmp_path):
    run = fedcare.simulate(model="mlp", hidden=[8], personalization="fedper", rounds=4, baselines=False,
                           out=str(tmp_path / "p"))
    inputs = {"tabular": InputShape("tabular", (15,))}
    start = get_params(initial_model(lambda i, t: build_model(ModelSpec(model="mlp", hidden=(8,)), i, t), inputs,
                                     make_task("binary"), 0))
    # the head's update is always zero, so the global head is still the initial one
    np.testing.assert_array_equal(run.global_params["2.weight"], start["2.weight"])
    assert not np.array_equal(run.global_params["0.weight"], start["0.weight"])  # the body is shared
    heads = [run.site_params[s]["2.weight"] for s in run.site_params]
    assert all(not np.array_equal(heads[0], h) for h in heads[1:])
    for site, params in run.site_params.items():  # written to sites/<site_id>.safetensors
        saved, meta = load_params(run.path / "sites" / f"{site}.safetensors", params)
        np.testing.assert_array_equal(saved["2.weight"], params["2.weight"])
        assert meta["site_id"] == site
    block = run.summary["personalized"]
    assert set(block["sites"]) == set(run.site_params) and "accuracy" in block["mean"]


def test_fedbn_keeps_batch_norm_statistics_at_the_site(tmp_path):
    run = fedcare.simulate(model="mlp", hidden=[8], batch_norm=True, personalization="fedbn", rounds=3,
                           baselines=False, out=str(tmp_path / "bn"))
    np.testing.assert_array_equal(run.global_params["1.running_mean"], np.zeros(8, np.float32))
    means = [run.site_params[s]["1.running_mean"] for s in run.site_params]
    assert all(np.abs(m).sum() > 0 for m in means) and not np.array_equal(means[0], means[1])


def test_fedbn_needs_a_batch_norm_model():
    with pytest.raises(ConfigError, match="batch_norm"):
        fedcare.simulate(personalization="fedbn", rounds=1)


@pytest.mark.parametrize("mode", ["fedper", "fedrep"])
def test_fedper_and_fedrep_refuse_a_model_that_is_all_head(mode):
    """The linear model is its head alone: keeping the head local would share nothing."""
    with pytest.raises(ConfigError, match=f"personalization {mode} .* shares the rest.*use model mlp"):
        fedcare.simulate(personalization=mode, model="linear", rounds=1, baselines=False)


def _one_row_site():
    """Regression, one row x = 2, y = 1, model w·x + b: hand-computable SGD steps."""
    model = LinearModel(["tabular"], 1, 1)
    row = examples(tabular=np.array([[2.0]], np.float32), label=np.array([1.0], np.float32))
    none = examples(tabular=np.zeros((0, 1), np.float32), label=np.zeros(0, np.float32))
    return LocalSite("s", make_task("regression"), model, {"train": row, "val": none, "test": row})


def test_ditto_one_round_by_hand():
    site = _one_row_site()
    req = FitRequest(1, "local_epochs", 1, 0.1, 1, "sgd", 0, 0.0, "ditto", 0.5)
    theta1 = {"weight": np.array([[0.0]], np.float32), "bias": np.array([0.0], np.float32)}
    site.fit(theta1, req)
    # round 1: v starts at θ1 = 0, so the pull is 0: loss (2w + b − 1)², grad w = 2·(−1)·2 = −4, b = −2
    # v1 = 0 − 0.1·(−4, −2) = (0.4, 0.2)
    np.testing.assert_allclose(site.ditto["weight"], [[0.4]], rtol=1e-6)
    np.testing.assert_allclose(site.ditto["bias"], [0.2], rtol=1e-6)
    theta2 = {"weight": np.array([[1.0]], np.float32), "bias": np.array([0.0], np.float32)}
    site.fit(theta2, FitRequest(2, "local_epochs", 1, 0.1, 1, "sgd", 0, 0.0, "ditto", 0.5))
    # round 2: residual 2·0.4 + 0.2 − 1 = 0; pull λ(v − θ2) = 0.5·(0.4 − 1, 0.2 − 0) = (−0.3, 0.1)
    # v2 = v1 − 0.1·(−0.3, 0.1) = (0.43, 0.19): the personal model moved towards θ2, and kept its own fit
    np.testing.assert_allclose(site.ditto["weight"], [[0.43]], rtol=1e-5)
    np.testing.assert_allclose(site.ditto["bias"], [0.19], rtol=1e-5)
    personal = site.personal_params(theta2, req)
    np.testing.assert_allclose(personal["weight"], [[0.43]], rtol=1e-5)


def test_finetune_trains_the_final_global_model_locally():
    site = _one_row_site()
    theta = {"weight": np.array([[0.0]], np.float32), "bias": np.array([0.0], np.float32)}
    req = FitRequest(9, "local_epochs", 1, 0.1, 1, "sgd", 0, 0.0, "finetune", 0.1)
    tuned = site.personal_params(theta, req)
    np.testing.assert_allclose(tuned["weight"], [[0.4]], rtol=1e-6)  # one SGD step from 0, as above
