"""Site-level differential privacy: clipping, DP-FedAvg's noised mean, adaptive clipping, accounting.

Params are ordered w (2 values) then b (1 value), so every update flattens to [w0, w1, b]; norms
and means below are worked out by hand.
"""

import math

import numpy as np
import pytest

dp_accounting = pytest.importorskip("dp_accounting")

from fedcare.algorithms import RoundContext, chain, sgd  # noqa: E402
from fedcare.algorithms.accounting import (  # noqa: E402
    Budget,
    SiteLevelAccountant,
    epsilon,
    noise_multiplier_for,
    rounds_affordable,
)
from fedcare.algorithms.privacy import (  # noqa: E402
    adaptive_clip,
    clip_norm_of,
    clip_updates,
    dp_fedavg,
    effective_noise_multiplier,
    sum_noise_multiplier_for,
    update_norm,
)
from fedcare.core import ConfigError, ParamsError, Update  # noqa: E402

THETA = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.5], np.float32)}
ONE = {"w": np.array([0.0], np.float64)}  # a one-coordinate model for the noise statistics


def ctx(round_=1, params=THETA, seed=0):
    return RoundContext(params=params, round=round_, rng=np.random.default_rng([seed, round_]))


def upd(site, w, b, n=10):
    return Update(site, {"w": np.array(w, np.float32), "b": np.array([b], np.float32)}, n)


def flat(p):
    return np.concatenate([np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64)])


def rdp_reference(sigma, q, steps, delta):
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
    return acc.get_epsilon(delta)


# ---------------------------------------------------------------- fixed clipping

# a: [3, 4, 0] norm 5; b: [0, 1, 0] norm 1; c: [0, 0, -2.5] norm 2.5 (exactly C)
CLIP_SET = [upd("a", [3, 4], 0), upd("b", [0, 1], 0), upd("c", [0, 0], -2.5)]


def test_clip_updates_clips_to_exactly_c_and_leaves_small_ones():
    piece = clip_updates(2.5)
    out, state = piece.apply(CLIP_SET, piece.init(THETA), ctx())
    assert state == {}
    np.testing.assert_allclose(flat(out[0].grad), [1.5, 2.0, 0.0], rtol=1e-6)  # 2.5/5 = 0.5
    assert update_norm(out[0]) == pytest.approx(2.5, rel=1e-6)
    assert out[1] is CLIP_SET[1] and out[2] is CLIP_SET[2]  # within the bound: untouched
    assert out[0].grad["w"].dtype == np.float32 and out[0].num_examples == 10
    assert piece.decisions(CLIP_SET, ctx()) == {"a": 0.5, "b": 1.0, "c": 1.0}


def test_clip_updates_refuses_non_finite_duplicates_and_bad_c():
    with pytest.raises(ParamsError, match="'x'"):
        clip_updates(1.0).apply([upd("x", [math.nan, 0], 0)], {}, ctx())
    with pytest.raises(ParamsError, match="two updates"):
        clip_updates(1.0).apply([upd("a", [1, 0], 0), upd("a", [0, 1], 0)], {}, ctx())
    for bad in (0, -1.0, math.inf, math.nan, True):
        with pytest.raises(ConfigError):
            clip_updates(bad)


# ---------------------------------------------------------------- DP-FedAvg

# C = 1: a [3, 4, 0] → [0.6, 0.8, 0]; b [0, 0, 0.5] untouched; c [0, -2, 0] → [0, -1, 0].
DP_SET = [upd("a", [3, 4], 0, n=1000), upd("b", [0, 0], 0.5, n=1), upd("c", [0, -2], 0, n=5)]
DP_MEAN = [0.6 / 3, (0.8 - 1.0) / 3, 0.5 / 3]  # uniform: num_examples ignored


def test_dp_fedavg_without_noise_is_the_uniform_mean_of_clipped_updates():
    piece = dp_fedavg(clip_norm=1.0, noise_multiplier=0.0)
    agg, state = piece.apply(DP_SET, piece.init(THETA), ctx())
    np.testing.assert_allclose(flat(agg), DP_MEAN, rtol=1e-6)
    assert agg["w"].dtype == np.float32 and agg["b"].dtype == np.float32
    assert state == {}
    assert piece.decisions(DP_SET, ctx()) == {"a": 0.2, "b": 1.0, "c": 0.5}


def test_dp_fedavg_fixed_denominator():
    piece = dp_fedavg(1.0, 0.0, expected_sites=4)
    agg, _ = piece.apply(DP_SET, {}, ctx())
    np.testing.assert_allclose(flat(agg), [0.6 / 4, -0.2 / 4, 0.5 / 4], rtol=1e-6)


def test_dp_fedavg_accepts_a_stream_and_runs_in_a_chain():
    piece = dp_fedavg(1.0, 0.0)
    agg, _ = piece.apply(iter(DP_SET), {}, ctx())
    np.testing.assert_allclose(flat(agg), DP_MEAN, rtol=1e-6)
    strategy = chain(dp_fedavg(1.0, 0.0), sgd(1.0))
    outcome = strategy.run(THETA, list(DP_SET), strategy.init(THETA), ctx())
    np.testing.assert_allclose(flat(outcome.params), flat(THETA) - np.array(DP_MEAN), rtol=1e-6)  # descends
    assert outcome.decisions["DPFedAvg"] == {"a": 0.2, "b": 1.0, "c": 0.5}


def noise_draws(piece, rounds, seed=0):
    """The aggregate of three zero updates (so pure noise) on the one-coordinate model, per round."""
    zeros = [Update(s, {"w": np.zeros(1)}, 1) for s in ("a", "b", "c")]
    state = piece.init(ONE)
    out = np.empty(rounds)
    for r in range(rounds):
        agg, state = piece.apply(zeros, state, ctx(r + 1, ONE, seed))
        out[r] = agg["w"][0]
    return out


def test_dp_fedavg_noise_has_std_sigma_c_over_n():
    sigma, c, n = 1.5, 2.0, 3  # noise on the mean: σ·C/n = 1.0
    draws = noise_draws(dp_fedavg(c, sigma), 2000)
    assert draws.std(ddof=1) == pytest.approx(sigma * c / n, rel=0.05)
    assert abs(draws.mean()) < 4 * sigma * c / n / math.sqrt(2000)
    fixed = noise_draws(dp_fedavg(c, sigma, expected_sites=6), 2000)  # D = 6: std 0.5
    assert fixed.std(ddof=1) == pytest.approx(sigma * c / 6, rel=0.05)


def test_dp_fedavg_noise_is_reproducible_per_seed():
    piece = dp_fedavg(1.0, 1.0)
    np.testing.assert_array_equal(noise_draws(piece, 20, seed=7), noise_draws(piece, 20, seed=7))
    assert not np.array_equal(noise_draws(piece, 20, seed=7), noise_draws(piece, 20, seed=8))


def test_dp_fedavg_noise_is_on_top_of_the_clipped_mean():
    piece = dp_fedavg(1.0, 0.5)
    a, _ = piece.apply(DP_SET, {}, ctx(3, seed=1))
    rng = np.random.default_rng([1, 3])
    expected = np.array(DP_MEAN) + np.concatenate([rng.normal(0, 0.5, 2), rng.normal(0, 0.5, 1)]) / 3
    np.testing.assert_allclose(flat(a), expected, rtol=1e-5, atol=1e-6)


def test_dp_fedavg_checks():
    with pytest.raises(ConfigError, match="noise_multiplier_count"):
        dp_fedavg(1.0, 1.0, adaptive=True)  # the exact clipped count would leak
    for kwargs in ({"clip_norm": 0, "noise_multiplier": 1}, {"clip_norm": 1, "noise_multiplier": -1},
                   {"clip_norm": 1, "noise_multiplier": 1, "expected_sites": 0},
                   {"clip_norm": 1, "noise_multiplier": 0, "adaptive": True, "target_quantile": 1.5}):
        with pytest.raises(ConfigError):
            dp_fedavg(**kwargs)
    with pytest.raises(ValueError):
        dp_fedavg(1.0, 1.0).apply([], {}, ctx())
    with pytest.raises(ParamsError, match="'x'"):
        dp_fedavg(1.0, 1.0).apply([upd("x", [0, math.inf], 0)], {}, ctx())
    with pytest.raises(ParamsError, match="two updates"):
        dp_fedavg(1.0, 1.0).apply([upd("a", [1, 0], 0), upd("a", [1, 0], 0)], {}, ctx())


# ---------------------------------------------------------------- adaptive clipping


def run_adaptive(piece, norms, rounds):
    """Clip norms seen each round (all equal to the C of that round or below) and C after each."""
    updates = [upd(f"s{i}", [n, 0], 0) for i, n in enumerate(norms)]
    state = piece.init(THETA)
    cs = [clip_norm_of(state)]
    for r in range(rounds):
        factors = piece.decisions(updates, ctx(r + 1), state)
        out, state = piece.apply(updates, state, ctx(r + 1))
        for u, o, n in zip(updates, out, norms):
            assert update_norm(o) == pytest.approx(min(n, cs[-1]), rel=1e-6)  # clipped with the current C
            assert factors[u.site_id] == pytest.approx(min(1.0, cs[-1] / n))
        cs.append(clip_norm_of(state))
    return cs


def test_adaptive_clip_grows_when_every_norm_is_above_c():
    cs = run_adaptive(adaptive_clip(initial=1.0, target_quantile=0.5, lr=0.2), [4.0, 4.0, 4.0], 5)
    assert all(b > a for a, b in zip(cs, cs[1:]))
    # b̄ = 0 each round: C ← C·exp(0.2 · 0.5)
    np.testing.assert_allclose(cs, [math.exp(0.1 * r) for r in range(6)], rtol=1e-12)


def test_adaptive_clip_shrinks_when_every_norm_is_below_c():
    cs = run_adaptive(adaptive_clip(initial=1.0, target_quantile=0.5, lr=0.2), [0.1, 0.1, 0.1], 5)
    assert all(b < a for a, b in zip(cs, cs[1:]))
    np.testing.assert_allclose(cs, [math.exp(-0.1 * r) for r in range(6)], rtol=1e-12)


def test_adaptive_clip_settles_at_the_target_quantile():
    norms = [1.0, 2.0, 3.0, 4.0, 5.0]  # median 3
    cs = run_adaptive(adaptive_clip(initial=0.5, target_quantile=0.5, lr=0.2), norms, 100)
    assert all(2.5 < c < 3.5 for c in cs[-20:])
    cs = run_adaptive(adaptive_clip(initial=10.0, target_quantile=0.8, lr=0.2), norms, 100)
    assert all(4.0 <= c < 5.0 for c in cs[-20:])  # b̄ = 0.8 = γ from the 4th norm to the 5th: C stays


def test_dp_fedavg_adaptive_follows_the_same_rule_and_noises_the_count():
    updates = [upd(s, [4, 0], 0) for s in ("a", "b", "c")]
    piece = dp_fedavg(1.0, 0.0, adaptive=True, target_quantile=0.5, lr=0.2)
    state = piece.init(THETA)
    assert clip_norm_of(state) == 1.0
    agg, state = piece.apply(updates, state, ctx())
    np.testing.assert_allclose(flat(agg), [1.0, 0.0, 0.0], rtol=1e-6)  # clipped to C = 1, then averaged
    assert clip_norm_of(state) == pytest.approx(math.exp(0.1))
    assert piece.decisions(updates, ctx(), state) == pytest.approx({s: math.exp(0.1) / 4 for s in "abc"})
    noisy = dp_fedavg(1.0, 1.0, adaptive=True, noise_multiplier_count=0.5)
    s1 = noisy.apply(updates, noisy.init(THETA), ctx(seed=3))[1]
    s2 = noisy.apply(updates, noisy.init(THETA), ctx(seed=3))[1]
    assert clip_norm_of(s1) == clip_norm_of(s2) != pytest.approx(math.exp(0.1))


def test_effective_noise_multiplier_round_trip():
    z = effective_noise_multiplier(1.2, 5.0)
    assert z == pytest.approx((1.2 ** -2 + 10.0 ** -2) ** -0.5)
    assert z < 1.2
    assert sum_noise_multiplier_for(z, 5.0) == pytest.approx(1.2)
    assert effective_noise_multiplier(1.2, 0.0) == 1.2
    with pytest.raises(ConfigError):
        sum_noise_multiplier_for(1.0, 0.4)


# ---------------------------------------------------------------- accounting


@pytest.mark.parametrize("sigma,q,steps,delta", [(1.1, 0.01, 1000, 1e-5), (0.8, 0.3, 50, 1e-6),
                                                 (2.0, 0.5, 10, 1e-5), (1.0, 0.05, 1, 1e-5)])
def test_epsilon_matches_dp_accounting_rdp(sigma, q, steps, delta):
    assert epsilon(sigma, q, steps, delta) == pytest.approx(rdp_reference(sigma, q, steps, delta), rel=1e-12)


def test_epsilon_with_pld_and_edge_cases():
    acc = dp_accounting.pld.PLDAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.5)), 20))
    assert epsilon(1.5, 0.1, 20, 1e-5, accountant="pld") == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    assert epsilon(1.5, 0.1, 20, 1e-5, accountant="pld") < epsilon(1.5, 0.1, 20, 1e-5)  # PLD is tighter
    assert epsilon(1.0, 0.2, 0, 1e-5) == 0.0
    assert epsilon(1.0, 0.0, 10, 1e-5) == 0.0
    assert epsilon(0.0, 0.2, 10, 1e-5) == math.inf
    # q = 1 is the plain Gaussian mechanism
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(2.0), 10)
    assert epsilon(2.0, 1.0, 10, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    for bad in ((1.0, 1.5, 10, 1e-5), (1.0, 0.1, -1, 1e-5), (1.0, 0.1, 10, 0.0), (-1.0, 0.1, 10, 1e-5),
                (1.0, 0.1, 2.5, 1e-5)):
        with pytest.raises(ConfigError):
            epsilon(*bad)
    with pytest.raises(ConfigError):
        epsilon(1.0, 0.1, 10, 1e-5, accountant="moments")


@pytest.mark.parametrize("target,delta,q,steps", [(1.0, 1e-5, 0.01, 1000), (8.0, 1e-5, 0.3, 50),
                                                  (3.0, 1e-6, 1.0, 20), (0.5, 1e-5, 0.2, 100)])
def test_noise_multiplier_for_reaches_the_target_from_below(target, delta, q, steps):
    sigma = noise_multiplier_for(target, delta, q, steps)
    eps = epsilon(sigma, q, steps, delta)
    assert eps <= target
    assert eps >= 0.99 * target
    assert rdp_reference(sigma, q, steps, delta) == pytest.approx(eps, rel=1e-12) if q < 1 else True


def test_noise_multiplier_for_edge_cases():
    assert noise_multiplier_for(1.0, 1e-5, 0.1, 0) == 0.0
    with pytest.raises(ConfigError):
        noise_multiplier_for(0.0, 1e-5, 0.1, 10)


@pytest.mark.parametrize("sigma,q,delta,eps_max", [(1.1, 0.3, 1e-5, 8.0), (1.0, 0.05, 1e-5, 2.0),
                                                   (0.7, 1.0, 1e-5, 10.0)])
def test_rounds_affordable_never_exceeds_the_budget(sigma, q, delta, eps_max):
    steps = rounds_affordable(sigma, q, delta, eps_max)
    assert steps >= 1
    assert epsilon(sigma, q, steps, delta) <= eps_max < epsilon(sigma, q, steps + 1, delta)
    budget = Budget(sigma, q, delta, eps_max)
    assert budget.rounds_affordable() == steps
    assert budget.allows(steps) and not budget.allows(steps + 1)
    assert budget.remaining(steps) == 0 and budget.remaining(0) == steps


def test_rounds_affordable_edge_cases():
    assert rounds_affordable(0.3, 1.0, 1e-5, 0.01) == 0  # not even one round fits
    assert rounds_affordable(1.0, 0.0, 1e-5, 1.0, limit=1000) == 1000  # nothing is ever spent
    assert rounds_affordable(1.0, 0.1, 1e-5, 1e6, limit=7) == 7


def test_site_level_accountant():
    q = SiteLevelAccountant.sampling_rate_for(3, 10)
    assert q == 0.3
    acc = SiteLevelAccountant.calibrated(4.0, 1e-5, q, rounds=40)
    assert 0.99 * 4.0 <= acc.epsilon(40) <= 4.0
    assert acc.rounds_affordable(4.0) >= 40
    assert acc.epsilon(40) == pytest.approx(rdp_reference(acc.noise_multiplier, q, 40, 1e-5), rel=1e-12)
    with pytest.raises(ConfigError):
        SiteLevelAccountant.sampling_rate_for(11, 10)
