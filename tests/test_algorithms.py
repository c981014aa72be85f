"""The algorithms' math, checked against numbers worked out by hand."""

import numpy as np
import pytest

from fedcare.algorithms import RoundContext, chain, sgd, weighted_mean
from fedcare.algorithms.recipes import build_algorithm
from fedcare.core import ConfigError, Update

THETA = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.5], np.float32)}


def ctx(params=THETA):
    return RoundContext(params=params, round=1, rng=np.random.default_rng(0))


def upd(site, w, b, n):
    return Update(site, {"w": np.array(w, np.float32), "b": np.array([b], np.float32)}, n)


def test_fedsgd_uniform_weights_is_plain_mean_of_gradients():
    # G = (g1 + g2)/2 = ([1,0] + [3,2])/2 = [2,1]; b: (1+3)/2 = 2 ; θ − 0.1·G
    algo = build_algorithm("fedsgd", lr=0.1, weighting="uniform")
    new, _ = algo.strategy.step(THETA, [upd("a", [1, 0], 1, 10), upd("b", [3, 2], 3, 30)],
                                algo.strategy.init(THETA), ctx())
    np.testing.assert_allclose(new["w"], [1.0 - 0.2, 2.0 - 0.1], rtol=1e-6)
    np.testing.assert_allclose(new["b"], [0.5 - 0.2], rtol=1e-6)
    assert algo.site_mode == "gradient"


def test_fedsgd_weighted_by_examples_times_quality():
    # α ∝ n·q: a: 10·1 = 10, b: 30·(1/3) = 10 → equal weights again; G_w = [2, 1]
    algo = build_algorithm("fedsgd", lr=1.0, weighting="examples", site_weights={"b": 1 / 3})
    new, _ = algo.strategy.step(THETA, [upd("a", [1, 0], 1, 10), upd("b", [3, 2], 3, 30)],
                                algo.strategy.init(THETA), ctx())
    np.testing.assert_allclose(new["w"], [-1.0, 1.0], rtol=1e-6)


def test_fedsgd_examples_weighting():
    # α = 10/40, 30/40: G_w = 0.25·[1,0] + 0.75·[3,2] = [2.5, 1.5]
    algo = build_algorithm("fedsgd", lr=0.5)
    new, _ = algo.strategy.step(THETA, [upd("a", [1, 0], 1, 10), upd("b", [3, 2], 3, 30)],
                                algo.strategy.init(THETA), ctx())
    np.testing.assert_allclose(new["w"], [1.0 - 1.25, 2.0 - 0.75], rtol=1e-6)
    np.testing.assert_allclose(new["b"], [0.5 - 0.5 * 2.5], rtol=1e-6)


def test_fedavg_server_lr_one_gives_weighted_mean_of_local_models():
    # local models θ1 = [0, 0], θ2 = [4, 4]; sites send θ − θi; n = 1 and 3 → mean model [3, 3]
    local1, local2 = np.array([0.0, 0.0]), np.array([4.0, 4.0])
    u1 = Update("a", {"w": (THETA["w"] - local1).astype(np.float32), "b": np.zeros(1, np.float32)}, 1)
    u2 = Update("b", {"w": (THETA["w"] - local2).astype(np.float32), "b": np.zeros(1, np.float32)}, 3)
    algo = build_algorithm("fedavg", lr=0.01, server_lr=1.0)
    new, _ = algo.strategy.step(THETA, [u1, u2], algo.strategy.init(THETA), ctx())
    np.testing.assert_allclose(new["w"], [3.0, 3.0], rtol=1e-6)
    assert algo.site_mode == "local_epochs"


def test_fedavg_server_lr_scales_the_step():
    # mean delta toward the local models is [2, 1]; server lr 0.5 moves half way
    algo = build_algorithm("fedavg", lr=0.01, server_lr=0.5)
    u = Update("a", {"w": np.array([-2.0, -1.0], np.float32), "b": np.zeros(1, np.float32)}, 5)
    new, _ = algo.strategy.step(THETA, [u], algo.strategy.init(THETA), ctx())
    np.testing.assert_allclose(new["w"], [2.0, 2.5], rtol=1e-6)


def test_server_momentum_accumulates():
    # m1 = G = [1, 1]; m2 = 0.9·m1 + G = [1.9, 1.9]; θ = θ0 − (m1 + m2)
    opt = sgd(1.0, momentum=0.9)
    state = opt.init(THETA)
    g = {"w": np.ones(2, np.float32), "b": np.ones(1, np.float32)}
    s1, state = opt.apply(g, state, ctx())
    s2, state = opt.apply(g, state, ctx())
    np.testing.assert_allclose(s1["w"], [-1.0, -1.0])
    np.testing.assert_allclose(s2["w"], [-1.9, -1.9], rtol=1e-6)


def test_weighted_mean_streams_from_a_generator():
    mean = weighted_mean("uniform")
    out, _ = mean.apply((upd(s, [i, i], i, 1) for i, s in enumerate("abcd")), {}, ctx())
    np.testing.assert_allclose(out["w"], [1.5, 1.5])


def test_chain_rejects_wrong_order_and_missing_pieces():
    with pytest.raises(ConfigError, match="end with exactly one server optimizer"):
        chain(weighted_mean())
    with pytest.raises(ConfigError, match="exactly one aggregator"):
        chain(sgd(1.0))
    with pytest.raises(ConfigError, match="not a strategy piece"):
        chain(object(), weighted_mean(), sgd())


def test_bad_weights_and_algorithm_names_are_refused():
    with pytest.raises(ConfigError, match="site weight for 'x'"):
        weighted_mean("examples", {"x": -1.0})
    with pytest.raises(ConfigError, match="unknown algorithm 'fedfoo'"):
        build_algorithm("fedfoo", lr=0.1)
    with pytest.raises(ConfigError, match="server learning rate"):
        sgd(0.0)
