"""Adaptive server optimizers (Reddi et al. 2021, Algorithm 2), checked against numbers worked out by hand.

G is a descent direction (Reddi's Δ is −G), so every step is −lr·m/(√v + τ). To keep the arithmetic
exact the hand-worked cases use β1 = 0.75, β2 = 0.5, τ = 1 (v₀ = τ² = 1) and lr = 0.6.
"""

import numpy as np
import pytest

from fedcare.algorithms import RoundContext, ServerOptimizer, chain, weighted_mean
from fedcare.algorithms.optimizers import adagrad, adam, yogi
from fedcare.core import ConfigError, Update

W32 = {"w": np.array([1.0, 2.0], np.float32)}


def ctx(params=W32):
    return RoundContext(params=params, round=1, rng=np.random.default_rng(0))


def g(a, b, dtype=np.float32):
    return {"w": np.array([a, b], dtype)}


def two_rounds(opt, g1, g2):
    """Steps and states after each of two rounds, checking the input state is never modified."""
    s0 = opt.init(W32)
    before = {k: v.copy() for k, v in s0.items()}
    step1, s1 = opt.apply(g1, s0, ctx())
    for k in before:
        np.testing.assert_array_equal(s0[k], before[k])
    step2, s2 = opt.apply(g2, s1, ctx())
    return step1, s1, step2, s2


def test_adam_two_rounds_by_hand():
    # m₀ = [0, 0], v₀ = [1, 1]
    # round 1, G = [1, −7]:  m₁ = 0.25·G = [0.25, −1.75]
    #   v₁ = 0.5·v₀ + 0.5·G² = 0.5·[1, 1] + 0.5·[1, 49] = [1, 25];  √v₁ + τ = [2, 6]
    #   step₁ = −0.6·[0.25/2, −1.75/6] = [−0.075, 0.175]
    # round 2, G = [7, 5]:  m₂ = 0.75·m₁ + 0.25·G = [0.1875 + 1.75, −1.3125 + 1.25] = [1.9375, −0.0625]
    #   v₂ = 0.5·[1, 25] + 0.5·[49, 25] = [25, 25];  √v₂ + τ = [6, 6]
    #   step₂ = −0.6·[1.9375/6, −0.0625/6] = [−0.19375, 0.00625]
    opt = adam(0.6, beta1=0.75, beta2=0.5, tau=1.0)
    step1, s1, step2, s2 = two_rounds(opt, g(1, -7), g(7, 5))
    np.testing.assert_allclose(s1["m/w"], [0.25, -1.75], rtol=1e-6)
    np.testing.assert_allclose(s1["v/w"], [1.0, 25.0], rtol=1e-6)
    np.testing.assert_allclose(step1["w"], [-0.075, 0.175], rtol=1e-6)
    np.testing.assert_allclose(s2["m/w"], [1.9375, -0.0625], rtol=1e-6)
    np.testing.assert_allclose(s2["v/w"], [25.0, 25.0], rtol=1e-6)
    np.testing.assert_allclose(step2["w"], [-0.19375, 0.00625], rtol=1e-6)


def test_yogi_two_rounds_by_hand():
    # m₀ = [0, 0], v₀ = [1, 1]
    # round 1, G = [4, −2], G² = [16, 4] > v₀: sign(v − G²) = −1, so v grows by 0.5·G²
    #   v₁ = [1 + 8, 1 + 2] = [9, 3]   (Adam would give [8.5, 2.5]);  m₁ = 0.25·G = [1, −0.5]
    #   step₁ = −0.6·[1/(3 + 1), −0.5/(√3 + 1)] = [−0.15, 0.15·(√3 − 1)] = [−0.15, 0.10980762]
    # round 2, G = [2, 1], G² = [4, 1] < v₁: sign = +1, so v shrinks by 0.5·G²
    #   v₂ = [9 − 2, 3 − 0.5] = [7, 2.5]   (Adam: [6.5, 2]);  m₂ = 0.75·[1, −0.5] + 0.25·[2, 1] = [1.25, −0.125]
    #   step₂ = −0.6·[1.25/(√7 + 1), −0.125/(√2.5 + 1)] = −0.6·[1.25/3.6457513, −0.125/2.5811388]
    #         = [−0.20571891, 0.02905694]
    opt = yogi(0.6, beta1=0.75, beta2=0.5, tau=1.0)
    step1, s1, step2, s2 = two_rounds(opt, g(4, -2), g(2, 1))
    np.testing.assert_allclose(s1["m/w"], [1.0, -0.5], rtol=1e-6)
    np.testing.assert_allclose(s1["v/w"], [9.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(step1["w"], [-0.15, 0.10980762], rtol=1e-6)
    np.testing.assert_allclose(s2["m/w"], [1.25, -0.125], rtol=1e-6)
    np.testing.assert_allclose(s2["v/w"], [7.0, 2.5], rtol=1e-6)
    np.testing.assert_allclose(step2["w"], [-0.20571891, 0.02905694], rtol=1e-6)


def test_adagrad_two_rounds_by_hand():
    # τ = 3: v₀ = [9, 9], m = G (beta1 = 0)
    # round 1, G = [4, 0]:   v₁ = v₀ + G² = [25, 9];  √v₁ + τ = [8, 6];  step₁ = −0.6·[4/8, 0/6] = [−0.3, 0]
    # round 2, G = [12, 4]:  v₂ = [25 + 144, 9 + 16] = [169, 25];  √v₂ + τ = [16, 8]
    #   step₂ = −0.6·[12/16, 4/8] = [−0.45, −0.3]
    opt = adagrad(0.6, tau=3.0)
    step1, s1, step2, s2 = two_rounds(opt, g(4, 0), g(12, 4))
    np.testing.assert_allclose(s1["m/w"], [4.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(s1["v/w"], [25.0, 9.0], rtol=1e-6)
    np.testing.assert_allclose(step1["w"], [-0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(s2["m/w"], [12.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(s2["v/w"], [169.0, 25.0], rtol=1e-6)
    np.testing.assert_allclose(step2["w"], [-0.45, -0.3], rtol=1e-6)


def test_adagrad_with_momentum_by_hand():
    # Reddi's FedAdagrad keeps m: same G and v as above, beta1 = 0.5
    #   m₁ = 0.5·[4, 0] = [2, 0];               step₁ = −0.6·[2/8, 0/6] = [−0.15, 0]
    #   m₂ = 0.5·[2, 0] + 0.5·[12, 4] = [7, 2];  step₂ = −0.6·[7/16, 2/8] = [−0.2625, −0.15]
    opt = adagrad(0.6, tau=3.0, beta1=0.5)
    step1, s1, step2, s2 = two_rounds(opt, g(4, 0), g(12, 4))
    np.testing.assert_allclose(s1["m/w"], [2.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(step1["w"], [-0.15, 0.0], rtol=1e-6)
    np.testing.assert_allclose(s2["m/w"], [7.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(s2["v/w"], [169.0, 25.0], rtol=1e-6)
    np.testing.assert_allclose(step2["w"], [-0.2625, -0.15], rtol=1e-6)


def test_yogi_v_moves_additively_toward_g2_where_adam_moves_proportionally():
    # β2 = 0.5, G = [3, 3], G² = [9, 9], from v = [1, 5] (both below G²):
    #   Yogi: v + 0.5·G² = [1 + 4.5, 5 + 4.5] = [5.5, 9.5]  — the same +4.5 whatever v was
    #   Adam: v + 0.5·(G² − v) = [1 + 4, 5 + 2] = [5, 7]    — half the remaining gap
    state = {"m/w": np.zeros(2, np.float32), "v/w": np.array([1.0, 5.0], np.float32)}
    _, sy = yogi(0.1, beta2=0.5).apply(g(3, 3), state, ctx())
    _, sa = adam(0.1, beta2=0.5).apply(g(3, 3), state, ctx())
    np.testing.assert_allclose(sy["v/w"], [5.5, 9.5], rtol=1e-6)
    np.testing.assert_allclose(sa["v/w"], [5.0, 7.0], rtol=1e-6)
    np.testing.assert_allclose(sy["v/w"] - state["v/w"], [4.5, 4.5], rtol=1e-6)
    # and where G² = v nothing moves: sign(0) = 0
    _, same = yogi(0.1, beta2=0.5).apply(g(1, 1), {"m/w": np.zeros(2), "v/w": np.ones(2)}, ctx())
    np.testing.assert_array_equal(same["v/w"], [1.0, 1.0])


@pytest.mark.parametrize("make", [adam, yogi, adagrad])
def test_initial_state_is_plain_named_arrays(make):
    # m₀ = 0, v₀ = τ² = 1e-6 with the default τ = 1e-3, one of each per param, in the params' dtype
    params = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.5], np.float64)}
    state = make(0.1).init(params)
    assert sorted(state) == ["m/b", "m/w", "v/b", "v/w"]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["m/w"].dtype == state["v/w"].dtype == np.float32
    assert state["m/b"].dtype == state["v/b"].dtype == np.float64
    np.testing.assert_array_equal(state["m/w"], [0.0, 0.0])
    np.testing.assert_allclose(state["v/w"], [1e-6, 1e-6], rtol=1e-6)
    np.testing.assert_allclose(state["v/b"], [1e-6], rtol=1e-12)


def test_defaults_are_reddis():
    assert (adam(0.1).beta1, adam(0.1).beta2, adam(0.1).tau) == (0.9, 0.99, 1e-3)
    assert (yogi(0.1).beta1, yogi(0.1).beta2, yogi(0.1).tau) == (0.9, 0.99, 1e-3)
    assert (adagrad(0.1).beta1, adagrad(0.1).tau) == (0.0, 1e-3)
    for opt in (adam(0.1), yogi(0.1), adagrad(0.1)):
        assert isinstance(opt, ServerOptimizer) and opt.stage == "optimize"


@pytest.mark.parametrize("make", [adam, yogi, adagrad])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(make, dtype):
    params = {"w": np.array([1.0, 2.0], dtype)}
    opt = make(0.1)
    state = opt.init(params)
    for grad in (g(0.3, -0.7, dtype), g(-1.5, 0.2, dtype)):
        step, state = opt.apply(grad, state, ctx(params))
        assert step["w"].dtype == dtype
        assert state["m/w"].dtype == state["v/w"].dtype == dtype
        assert np.all(np.isfinite(step["w"]))


@pytest.mark.parametrize("make", [adam, yogi, adagrad])
def test_bad_hyperparameters_are_refused_by_name(make):
    for lr in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="lr"):
            make(lr)
    for tau in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="tau"):
            make(0.1, tau=tau)
    for beta in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="beta1"):
            make(0.1, beta1=beta)
    if make is not adagrad:
        for beta in (-0.1, 1.0, float("nan")):
            with pytest.raises(ConfigError, match="beta2"):
                make(0.1, beta2=beta)
    make(0.1, beta1=0.0, tau=1e-9)  # the edges that are allowed


# Sites send θ − θ_local; uniform mean G = ([0.5, −1] + [1.5, −3])/2 = [1, −2], b: (0.25 + 0.75)/2 = 0.5.
# First step with the defaults (τ = 1e-3, v₀ = 1e-6), per coordinate:
#   Adam:    m = 0.1·G, v = 0.99e-6 + 0.01·G²: G = 1 → v = 0.01000099, √v = 0.10000495, step = −0.01/0.10100495
#            = −0.09900505; G = −2 → √0.04000099 = 0.20000247, step = 0.02/0.20100247 = 0.09950126;
#            G = 0.5 → √0.00250099 = 0.05000990, step = −0.005/0.05100990 = −0.09802019
#   Yogi:    v = 1e-6 + 0.01·G² (G² > v₀): √0.010001 = 0.10000500 → −0.09900500; √0.040001 → 0.09950125;
#            √0.002501 = 0.05001000 → −0.09801999
#   Adagrad: m = G, v = 1e-6 + G²: −0.1/1.0010005 = −0.09990005; 0.2/2.0010002 = 0.09995001;
#            −0.05/0.5010010 = −0.09980020
# all ≈ −lr·sign(G) = ∓0.1: the adaptive step does not depend on the scale of G.
FIRST_STEP = {adam: ([-0.09900505, 0.09950126], -0.09802019),
              yogi: ([-0.09900500, 0.09950125], -0.09801999),
              adagrad: ([-0.09990005, 0.09995001], -0.09980020)}


@pytest.mark.parametrize("make", [adam, yogi, adagrad])
def test_composes_with_weighted_mean(make):
    theta = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.5], np.float32)}
    updates = [Update("a", {"w": np.array([0.5, -1.0], np.float32), "b": np.array([0.25], np.float32)}, 10),
               Update("b", {"w": np.array([1.5, -3.0], np.float32), "b": np.array([0.75], np.float32)}, 30)]
    strategy = chain(weighted_mean("uniform"), make(0.1))
    states = strategy.init(theta)
    new, states = strategy.step(theta, updates, states, ctx(theta))
    step_w, step_b = FIRST_STEP[make]
    np.testing.assert_allclose(new["w"], theta["w"] + np.array(step_w), rtol=1e-6)
    np.testing.assert_allclose(new["b"], [0.5 + step_b], rtol=1e-6)
    assert new["w"].dtype == new["b"].dtype == np.float32
    # the state threads through a second round, which keeps going downhill
    newer, states = strategy.step(new, updates, states, ctx(new))
    assert newer["w"][0] < new["w"][0] and newer["w"][1] > new["w"][1] and newer["b"][0] < new["b"][0]
    assert sorted(states[-1]) == ["m/b", "m/w", "v/b", "v/w"]
