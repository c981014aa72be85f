"""SCAFFOLD: the corrected local steps and cᵢ by hand, the server's c by hand, cᵢ stays at the site,
malformed control deltas are refused, and full runs on heart-disease."""

import numpy as np
import pytest

import fedcare
from fedcare.algorithms.pieces import RoundContext
from fedcare.algorithms.recipes import build_algorithm
from fedcare.algorithms.scaffold import ScaffoldControl, scaffold_control
from fedcare.core import ConfigError
from fedcare.core.messages import FitRequest
from fedcare.core.update import Update
from fedcare.federation.engine import EngineSettings, RoundEngine
from conftest import examples
from fedcare.learning import LocalSite, make_task
from fedcare.learning.models import LinearModel
from fedcare.transports.simulation import SimulationTransport


def _one_row_site(site_id="s", x=2.0, y=1.0):
    """Regression, one row (x = 2, y = 1 by default), model w·x + b, loss (w·x + b − y)²."""
    row = examples(tabular=np.array([[x]], np.float32), label=np.array([y], np.float32))
    none = examples(tabular=np.zeros((0, 1), np.float32), label=np.zeros(0, np.float32))
    return LocalSite(site_id, make_task("regression"), LinearModel(["tabular"], 1, 1),
                     {"train": row, "val": none, "test": row})


def _arrays(w, b):
    return {"weight": np.array([[w]], np.float32), "bias": np.array([b], np.float32)}


def _message(theta, c):
    return {**theta, "control/weight": c["weight"], "control/bias": c["bias"]}


def _request(round_, epochs):
    return FitRequest(round_, "local_epochs", epochs, 0.1, 1, "sgd", 0, scaffold=True)


def test_one_round_by_hand_then_the_stored_control_variate_is_used():
    site = _one_row_site()
    site.control = _arrays(0.5, -0.5)  # cᵢ
    c = _arrays(1.0, 0.5)
    update = site.fit(_message(_arrays(0.0, 0.0), c), _request(1, 2))  # K = 2 steps, lr 0.1
    # correction c − cᵢ = (0.5, 1.0); ∇ = (2r·x, 2r) with residual r = 2w + b − 1
    # step 1: r = −1, ∇ = (−4, −2), corrected (−3.5, −1.0): y1 = (0.35, 0.1)
    # step 2: r = −0.2, ∇ = (−0.8, −0.4), corrected (−0.3, 0.6): y2 = (0.38, 0.04)
    # Δy = θ − y2 = (−0.38, −0.04); Δy/(K·lr) = (−1.9, −0.2)
    # cᵢ⁺ = cᵢ − c + Δy/(K·lr) = (0.5 − 1 − 1.9, −0.5 − 0.5 − 0.2) = (−2.4, −1.2)
    #      (the mean uncorrected gradient ((−4, −2) + (−0.8, −0.4))/2, as option II intends)
    # Δcᵢ = cᵢ⁺ − cᵢ = (−2.9, −0.7)
    assert list(update.grad) == ["weight", "bias", "control/weight", "control/bias"]
    np.testing.assert_allclose(update.grad["weight"], [[-0.38]], rtol=1e-5)
    np.testing.assert_allclose(update.grad["bias"], [-0.04], rtol=1e-4)
    np.testing.assert_allclose(update.grad["control/weight"], [[-2.9]], rtol=1e-5)
    np.testing.assert_allclose(update.grad["control/bias"], [-0.7], rtol=1e-5)
    np.testing.assert_allclose(site.control["weight"], [[-2.4]], rtol=1e-5)
    np.testing.assert_allclose(site.control["bias"], [-1.2], rtol=1e-5)

    # round 2 starts from the stored cᵢ = (−2.4, −1.2): θ = 0, c = 0, K = 1
    # correction c − cᵢ = (2.4, 1.2); r = −1, ∇ = (−4, −2), corrected (−1.6, −0.8): y = (0.16, 0.08)
    # Δy = (−0.16, −0.08); Δcᵢ = Δy/(1·0.1) − c = (−1.6, −0.8); cᵢ⁺ = (−4.0, −2.0) (the raw gradient)
    update = site.fit(_message(_arrays(0.0, 0.0), _arrays(0.0, 0.0)), _request(2, 1))
    np.testing.assert_allclose(update.grad["weight"], [[-0.16]], rtol=1e-5)
    np.testing.assert_allclose(update.grad["control/weight"], [[-1.6]], rtol=1e-5)
    np.testing.assert_allclose(update.grad["control/bias"], [-0.8], rtol=1e-5)
    np.testing.assert_allclose(site.control["weight"], [[-4.0]], rtol=1e-5)
    np.testing.assert_allclose(site.control["bias"], [-2.0], rtol=1e-5)


def test_the_server_piece_updates_c_by_hand_and_strips_the_control_deltas():
    theta = _arrays(0.0, 0.0)
    piece = scaffold_control(num_sites=4)
    assert all(not v.any() for v in piece.init(theta).values())  # c = 0 at start
    state = {"weight": np.array([[1.0]], np.float32), "bias": np.array([2.0], np.float32)}
    assert set(piece.broadcast(state)) == {"control/weight", "control/bias"}
    updates = [Update("a", {**_arrays(0.1, 0.2), "control/weight": np.array([[2.0]], np.float32),
                            "control/bias": np.array([-1.0], np.float32)}, 10),
               Update("b", {**_arrays(0.3, 0.4), "control/weight": np.array([[4.0]], np.float32),
                            "control/bias": np.array([3.0], np.float32)}, 30)]
    ctx = RoundContext(theta, 1, np.random.default_rng(0))
    out, new = piece.apply(updates, state, ctx)
    # |S| = 2 of N = 4: c ← c + (2/4)·mean(Δc) = (1 + 0.5·3, 2 + 0.5·1) = (2.5, 2.5)
    np.testing.assert_allclose(new["weight"], [[2.5]])
    np.testing.assert_allclose(new["bias"], [2.5])
    assert [list(u.grad) for u in out] == [["weight", "bias"], ["weight", "bias"]]
    np.testing.assert_allclose(out[1].grad["bias"], [0.4])
    assert out[1].num_examples == 30

    # the whole chain: the weighted mean (by examples) of Δy, stepped with sgd(1.0)
    algo = build_algorithm("scaffold", lr=0.1, num_sites=4)
    states = algo.strategy.init(theta)
    outcome = algo.strategy.run(theta, updates, states, ctx)
    # θ ← 0 − 1.0·(10·(0.1, 0.2) + 30·(0.3, 0.4))/40 = −(0.25, 0.35); c ← 0 + (2/4)·mean = (1.5, 0.5)
    np.testing.assert_allclose(outcome.params["weight"], [[-0.25]], rtol=1e-6)
    np.testing.assert_allclose(outcome.params["bias"], [-0.35], rtol=1e-6)
    np.testing.assert_allclose(outcome.states[0]["weight"], [[1.5]])
    np.testing.assert_allclose(outcome.states[0]["bias"], [0.5])


def test_scaffold_needs_the_number_of_sites_and_plain_sgd():
    with pytest.raises(ConfigError, match="num_sites"):
        build_algorithm("scaffold", lr=0.1)
    with pytest.raises(ConfigError):
        ScaffoldControl(0)
    with pytest.raises(ConfigError, match="sgd"):
        _one_row_site().fit(_message(_arrays(0, 0), _arrays(0, 0)),
                            FitRequest(1, "local_epochs", 1, 0.1, 1, "adam", 0, scaffold=True))
    with pytest.raises(ConfigError, match="adam"):
        fedcare.simulate(algorithm="scaffold", optimizer="adam", rounds=1, baselines=False)


class _Recording:
    """A transport wrapper that keeps everything the coordinator receives."""

    def __init__(self, inner):
        self.inner, self.received, self.broadcasts = inner, [], []

    def site_ids(self):
        return self.inner.site_ids()

    @property
    def bytes_sent(self):
        return self.inner.bytes_sent

    @property
    def bytes_upload(self):
        return self.inner.bytes_upload

    def fit(self, params, requests, extras=None):
        self.broadcasts.append(dict(extras or {}))
        result = self.inner.fit(params, requests, extras)
        self.received.append(result.updates)
        return result

    def evaluate(self, params, site_ids, splits):
        return self.inner.evaluate(params, site_ids, splits)


def _engine(sites, rounds, transport=None):
    algo = build_algorithm("scaffold", lr=0.1, num_sites=len(sites))
    settings = EngineSettings(rounds=rounds, lr=0.1, batch_size=1, seed=0, metric="rmse", eval_splits=("test",))
    transport = transport or _Recording(SimulationTransport(sites))
    return RoundEngine(algo, transport, settings), transport


def test_site_control_variates_stay_at_the_sites_and_c_is_the_sum_of_the_deltas():
    sites = [_one_row_site("a", 2.0, 1.0), _one_row_site("b", -1.0, 3.0), _one_row_site("c", 0.5, -2.0)]
    engine, rec = _engine(sites, 3)
    history = []
    engine.on_round = history.append
    theta = _arrays(0.0, 0.0)
    engine.run(theta)
    # round 1 broadcasts c = 0; later rounds the c built from the deltas received so far
    c = {k: np.zeros_like(v) for k, v in theta.items()}
    for round_, (sent, updates) in enumerate(zip(rec.broadcasts, rec.received, strict=True), start=1):
        assert set(sent) == {"control/weight", "control/bias"}
        for k in theta:
            np.testing.assert_allclose(sent[f"control/{k}"], c[k], rtol=1e-6, atol=1e-7)
        for u in updates:  # what reaches the coordinator: Δy and Δcᵢ, nothing else
            assert list(u.grad) == ["weight", "bias", "control/weight", "control/bias"]
        for k in theta:
            c[k] = c[k] + sum(np.asarray(u.grad[f"control/{k}"], np.float64) for u in updates) / 3
    # each site's cᵢ is the sum of its own deltas and was never sent as such after round 1
    for site in sites:
        own = [u for updates in rec.received for u in updates if u.site_id == site.site_id]
        total = sum(np.asarray(u.grad["control/weight"], np.float64) for u in own)
        np.testing.assert_allclose(site.control["weight"], total, rtol=1e-5)
        assert not any(np.allclose(u.grad["control/weight"], site.control["weight"]) for u in own[1:])
    # the anomaly report compares the model part of each update with the aggregate
    assert set(history[0].anomalies) == {"a", "b", "c"} and "norm" in history[0].anomalies["a"]


class _Broken:
    """A site that answers with malformed control deltas."""

    def __init__(self, site, kind):
        self.site, self.site_id, self.kind = site, site.site_id, kind

    def fit(self, params, request):
        update = self.site.fit(params, request)
        grad = dict(update.grad)
        if self.kind == "nan":
            grad["control/weight"] = np.full((1, 1), np.nan, np.float32)
        elif self.kind == "shape":
            grad["control/weight"] = np.zeros((2, 1), np.float32)
        else:  # missing
            del grad["control/bias"]
        return Update(update.site_id, grad, update.num_examples, update.metrics)

    def evaluate(self, params, splits):
        return self.site.evaluate(params, splits)


@pytest.mark.parametrize("kind, reason", [("nan", "NaN"), ("shape", "shape"), ("missing", "lack")])
def test_malformed_control_deltas_are_refused_like_any_update(kind, reason):
    sites = [_one_row_site("a"), _Broken(_one_row_site("b", -1.0, 3.0), kind)]
    engine, rec = _engine(sites, 2)
    history = []
    engine.on_round = history.append
    engine.run(_arrays(0.0, 0.0))
    for record, updates in zip(history, rec.received, strict=True):
        assert [u.site_id for u in updates] == ["a"]
        assert record.anomalies["b"]["flagged"] and reason in record.anomalies["b"]["refused"]


def test_scaffold_learns_heart_disease(tmp_path):
    run = fedcare.simulate(algorithm="scaffold", rounds=10, baselines=False, out=str(tmp_path / "s"))
    assert run.summary["federated"]["mean"]["accuracy"] > 0.7
    half = fedcare.simulate(algorithm="scaffold", rounds=10, fraction=0.5, baselines=False, out=str(tmp_path / "h"))
    assert half.summary["rounds"] == 10
    assert all(len(rec.selected) == 2 for rec in half.history)
    assert half.summary["federated"]["mean"]["accuracy"] > 0.6


def test_scaffold_baselines_run_fedavg_on_one_site(tmp_path):
    run = fedcare.simulate(algorithm="scaffold", rounds=2, out=str(tmp_path / "b"))
    assert set(run.local_params) == set(run.summary["site_sizes"]) and run.pooled_params is not None
