"""Robust aggregation rules, checked against numbers worked out by hand.

Params are ordered w (2 values) then b (1 value), so every update flattens to [w0, w1, b].
"""

import math

import numpy as np
import pytest

from fedcare.algorithms import RoundContext, chain, sgd, weighted_mean
from fedcare.algorithms.robust import (
    CenteredClip,
    centered_clip,
    coordinate_median,
    krum,
    median_of_rows,
    norm_bound,
    report_products,
    trimmed_mean,
    update_report,
)
from fedcare.core import ConfigError, ParamsError, Update

THETA = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.5], np.float32)}


def ctx(round_=1, params=THETA):
    return RoundContext(params=params, round=round_, rng=np.random.default_rng(0))


def upd(site, w, b, n=10):
    return Update(site, {"w": np.array(w, np.float32), "b": np.array([b], np.float32)}, n)


# Krum set: w0 = 0, 1, 3, 5 for four honest-ish sites, and e far away in w0 and b.
KRUM_SET = [upd("a", [0, 0], 0), upd("b", [1, 0], 0), upd("c", [3, 0], 0), upd("d", [5, 0], 0),
            upd("e", [100, 0], 100)]


# ---------------------------------------------------------------- coordinate median

def test_median_odd_count():
    # w0 {1,2,9} → 2 ; w1 {5,4,1} → 4 ; b {0,9,3} → 3
    ups = [upd("a", [1, 5], 0), upd("b", [2, 4], 9), upd("c", [9, 1], 3)]
    out, state = coordinate_median().apply(ups, {}, ctx())
    np.testing.assert_allclose(out["w"], [2, 4])
    np.testing.assert_allclose(out["b"], [3])
    assert out["w"].dtype == np.float32 and out["b"].dtype == np.float32
    assert state == {}
    # the median value was: w0 site b, w1 site b, b site c → shares a 0, b 2/3, c 1/3
    dec = coordinate_median().decisions(ups, ctx())
    assert dec == pytest.approx({"a": 0.0, "b": 2 / 3, "c": 1 / 3})


def test_median_even_count_averages_the_middle_two():
    # w0 {1,2,9,4} → (2+4)/2 = 3 ; w1 {5,4,1,0} → (1+4)/2 = 2.5 ; b {0,9,3,6} → (3+6)/2 = 4.5
    ups = [upd("a", [1, 5], 0), upd("b", [2, 4], 9), upd("c", [9, 1], 3), upd("d", [4, 0], 6)]
    out, _ = coordinate_median().apply(ups, {}, ctx())
    np.testing.assert_allclose(out["w"], [3, 2.5])
    np.testing.assert_allclose(out["b"], [4.5])
    # middle two: w0 b,d ; w1 c,b ; b c,d → a 0, b 2/3, c 2/3, d 2/3 (sum 2 for an even count)
    dec = coordinate_median().decisions(ups, ctx())
    assert dec == pytest.approx({"a": 0.0, "b": 2 / 3, "c": 2 / 3, "d": 2 / 3})


def test_median_keeps_float64_params_float64():
    params = {"w": np.zeros(2, np.float64)}
    ups = [Update(s, {"w": np.array(v, np.float64)}, 1) for s, v in [("a", [1.0, 2.0]), ("b", [3.0, 4.0])]]
    out, _ = coordinate_median().apply(ups, {}, ctx(params=params))
    assert out["w"].dtype == np.float64
    np.testing.assert_allclose(out["w"], [2.0, 3.0])


# ---------------------------------------------------------------- trimmed mean

def test_trimmed_mean_drops_the_extremes():
    # β = 0.2, n = 5 → k = 1 dropped at each end
    # w0 [1,2,3,4,100]   → mean(2,3,4) = 3
    # w1 [-100,0,1,2,3]  → mean(0,1,2) = 1
    # b  [7,5,6,8,4]     → drop 4 (e) and 8 (d) → mean(5,6,7) = 6
    ups = [upd("a", [1, -100], 7), upd("b", [2, 0], 5), upd("c", [3, 1], 6), upd("d", [4, 2], 8),
           upd("e", [100, 3], 4)]
    out, _ = trimmed_mean(0.2).apply(ups, {}, ctx())
    np.testing.assert_allclose(out["w"], [3, 1])
    np.testing.assert_allclose(out["b"], [6])
    # kept: w0 b,c,d ; w1 b,c,d ; b a,b,c → a 1/3, b 1, c 1, d 2/3, e 0 (sum n − 2k = 3)
    dec = trimmed_mean(0.2).decisions(ups, ctx())
    assert dec == pytest.approx({"a": 1 / 3, "b": 1.0, "c": 1.0, "d": 2 / 3, "e": 0.0})


def test_trimmed_mean_beta_zero_is_the_plain_mean_and_floor_is_exact():
    # β = 0 keeps everything: w0 (1+2+3+4+100)/5 = 22
    ups = [upd(s, [v, 0], 0) for s, v in zip("abcde", [1, 2, 3, 4, 100])]
    out, _ = trimmed_mean(0.0).apply(ups, {}, ctx())
    np.testing.assert_allclose(out["w"], [22, 0])
    # 0.29·100 = 28.999999999999996 in floating point; the intended ⌊β·n⌋ is 29
    assert trimmed_mean(0.29).trimmed(100) == 29
    # β < 0.5 always leaves at least one value: n = 2, β = 0.49 → k = 0
    assert trimmed_mean(0.49).trimmed(2) == 0


def test_trimmed_mean_needs_an_update():
    with pytest.raises(ValueError, match="trimmed_mean needs at least one update"):
        trimmed_mean(0.1).apply([], {}, ctx())


# ---------------------------------------------------------------- krum

def test_krum_picks_the_honest_update_with_the_closest_neighbours():
    # n = 5, f = 1 → score = sum of the 2 smallest squared distances to the others
    # a (0): to b 1, c 9  → 10       b (1): to a 1, c 4   → 5
    # c (3): to b 4, d 4  → 8        d (5): to c 4, b 16  → 20
    # e (100, b=100): ≥ 95² + 100² → huge
    out, _ = krum(1).apply(KRUM_SET, {}, ctx())
    np.testing.assert_allclose(out["w"], [1, 0])
    np.testing.assert_allclose(out["b"], [0])
    np.testing.assert_allclose(krum(1).scores(np.array([[0.0], [1], [3], [5], [100]])),
                               [10, 5, 8, 20, 95**2 + 97**2])
    assert krum(1).decisions(KRUM_SET, ctx()) == {"a": 0.0, "b": 1.0, "c": 0.0, "d": 0.0, "e": 0.0}


def test_multi_krum_averages_the_three_clustered_updates():
    # lowest scores: b 5, c 8, a 10 → w0 = (0+1+3)/3 = 4/3
    out, _ = krum(1, m=3).apply(KRUM_SET, {}, ctx())
    np.testing.assert_allclose(out["w"], [4 / 3, 0], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [0])
    dec = krum(1, m=3).decisions(KRUM_SET, ctx())
    assert dec == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3, "d": 0.0, "e": 0.0})


def test_krum_lowers_f_when_too_few_updates_arrive():
    # n = 4 cannot tolerate f = 1 (needs n > 4): f drops to 0 for the round, m = n − 0 = 4 by default
    rule = krum(1, m=None)
    assert rule.tolerated(4) == 0 and rule.tolerated(5) == 1 and rule.tolerated(2) == 0
    out, _ = rule.apply(KRUM_SET[:4], {}, ctx())
    mean4 = np.mean([u.grad["w"] for u in KRUM_SET[:4]], axis=0)
    np.testing.assert_allclose(out["w"], mean4, rtol=1e-6)
    with pytest.raises(ConfigError, match="krum m=5 must be at most n − f = 4"):
        krum(1, m=5).apply(KRUM_SET, {}, ctx())


# ---------------------------------------------------------------- norm bound

NORM_SET = [upd("a", [0, 0], 2), upd("b", [3, 4], 0), upd("c", [30, 40], 0, n=7)]  # norms 2, 5, 50


def test_norm_bound_scales_a_big_update_down_to_the_median_norm():
    # median norm 5: a (2) and b (5) untouched; c (50) scaled by 5/50 = 0.1 → [3, 4]
    out, state = norm_bound().apply(NORM_SET, {}, ctx())
    assert out[0] is NORM_SET[0] and out[1] is NORM_SET[1]
    np.testing.assert_allclose(out[2].grad["w"], [3, 4], rtol=1e-6)
    assert out[2].grad["w"].dtype == np.float32
    assert (out[2].site_id, out[2].num_examples) == ("c", 7)
    np.testing.assert_allclose(NORM_SET[2].grad["w"], [30, 40])  # input not modified
    assert state == {}
    assert norm_bound().decisions(NORM_SET, ctx()) == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.1})
    # multiple 2 → bound 10 → c scaled by 0.2 → [6, 8]
    out2, _ = norm_bound(2.0).apply(NORM_SET, {}, ctx())
    np.testing.assert_allclose(out2[2].grad["w"], [6, 8], rtol=1e-6)
    assert norm_bound(2.0).decisions(NORM_SET, ctx())["c"] == pytest.approx(0.2)


# ---------------------------------------------------------------- centered clip

# four honest sites at w = [1, 0] and one at [1000, 0]; tau = 1
CLIP_SET = [upd(s, [1, 0], 0) for s in "abcd"] + [upd("e", [1000, 0], 0)]


def test_centered_clip_stays_near_the_honest_mean_and_keeps_state():
    rule = centered_clip(1.0, iterations=3)
    state = rule.init(THETA)
    assert set(state) == {"v/w", "v/b"} and all(not v.any() for v in state.values())
    # round 1, v = 0:
    #  it1: honest diffs 1 (unclipped), e diff 1000 → clipped to 1 → v = (4·1 + 1)/5 = 1
    #  it2: honest diffs 0, e → 1                                  → v = 1 + 1/5 = 1.2
    #  it3: honest diffs −0.2, e → 1 → v = 1.2 + (−0.8 + 1)/5      → v = 1.24
    # (the plain mean would be (4 + 1000)/5 = 200.8)
    out, state = rule.apply(CLIP_SET, state, ctx(1))
    np.testing.assert_allclose(out["w"], [1.24, 0], rtol=1e-6)
    np.testing.assert_allclose(state["v/w"], [1.24, 0], rtol=1e-6)
    # clip factors from v = 0: honest 1 every time; e: 1/1000, 1/999, 1/998.8
    dec = rule.decisions(CLIP_SET, ctx(1))
    assert dec["a"] == 1.0
    assert dec["e"] == pytest.approx((1 / 1000 + 1 / 999 + 1 / 998.8) / 3)
    # round 2 starts from 1.24: each iteration v += (4(1 − v) + 1)/5, i.e. v → 1.25
    #  1.24 → 1.248 → 1.2496 → 1.24992 (from zeros it would give 1.24 again)
    out2, state2 = rule.apply(CLIP_SET, state, ctx(2))
    np.testing.assert_allclose(out2["w"], [1.24992, 0], rtol=1e-5)
    np.testing.assert_allclose(state2["v/w"], [1.24992, 0], rtol=1e-5)
    assert state2["v/w"].dtype == np.float32


def test_centered_clip_refuses_a_state_from_other_params():
    with pytest.raises(ParamsError, match="centered_clip state lacks 'v/b'"):
        CenteredClip(1.0).apply(CLIP_SET, {"v/w": np.zeros(2, np.float32)}, ctx())


# ---------------------------------------------------------------- report

def test_update_report_norms_and_cosines():
    aggregate = {"w": np.array([1, 0], np.float32), "b": np.array([0], np.float32)}
    ups = [upd("a", [3, 4], 0), upd("b", [0, 0], 2), upd("c", [-2, 0], 0), upd("z", [0, 0], 0)]
    # a: norm 5, cos 3/5 ; b: norm 2, orthogonal → 0 ; c: norm 2, opposite → −1 ; z: zero → cos 0
    report = update_report(ups, aggregate)
    assert report == {"a": pytest.approx({"norm": 5.0, "cosine": 0.6}),
                      "b": pytest.approx({"norm": 2.0, "cosine": 0.0}),
                      "c": pytest.approx({"norm": 2.0, "cosine": -1.0}),
                      "z": {"norm": 0.0, "cosine": 0.0}}
    zero = {"w": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}
    assert update_report(ups[:1], zero) == {"a": pytest.approx({"norm": 5.0, "cosine": 0.0})}



@pytest.mark.parametrize("n", [1, 3, 4])
def test_report_products_in_one_pass_are_the_float64_products(n):
    """Arrays larger than one chunk of the pass, and smaller, and empty: every norm and product is
    the float64 one of the whole flattened vectors, the consensus that of np.median."""
    rng = np.random.default_rng(n)
    shapes = {"big": (300, 700), "small": (5,), "empty": (0,)}
    ups = [Update(f"s{i}", {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}, 1)
           for i in range(n)]
    aggregate = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    flat = lambda p: np.concatenate([np.asarray(p[k], np.float64).ravel() for k in shapes])  # noqa: E731
    g, a = np.stack([flat(u.grad) for u in ups]), flat(aggregate)
    c = np.median(g, axis=0)
    sums = report_products(ups, aggregate, consensus=True)
    assert sums.sites == [u.site_id for u in ups]
    np.testing.assert_allclose(sums.norms, np.linalg.norm(g, axis=1), rtol=1e-12)
    np.testing.assert_allclose(sums.with_aggregate, g @ a, rtol=1e-9)
    np.testing.assert_allclose(sums.aggregate_norm, np.linalg.norm(a), rtol=1e-12)
    np.testing.assert_allclose(sums.with_consensus, g @ c, rtol=1e-9)
    np.testing.assert_allclose(sums.consensus_norm, np.linalg.norm(c), rtol=1e-12)
    assert report_products(ups, aggregate).with_consensus is None

# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("make, match", [
    (lambda: trimmed_mean(0.5), "trimmed_mean beta"),
    (lambda: trimmed_mean(-0.1), "trimmed_mean beta"),
    (lambda: trimmed_mean(float("nan")), "trimmed_mean beta"),
    (lambda: krum(-1), "krum f"),
    (lambda: krum(1.5), "krum f"),
    (lambda: krum(1, m=0), "krum m"),
    (lambda: norm_bound(0.0), "norm_bound multiple"),
    (lambda: norm_bound(float("inf")), "norm_bound multiple"),
    (lambda: centered_clip(0.0), "centered_clip tau"),
    (lambda: centered_clip(1.0, iterations=0), "centered_clip iterations"),
])
def test_bad_parameters_are_refused(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("rule", [coordinate_median(), trimmed_mean(0.2), krum(1), centered_clip(1.0)])
def test_rules_refuse_non_finite_and_duplicate_updates(rule):
    bad = KRUM_SET[:4] + [upd("e", [float("nan"), 0], 0)]
    with pytest.raises(ParamsError, match="site 'e' holds NaN or infinite values"):
        rule.apply(bad, rule.init(THETA), ctx())
    with pytest.raises(ParamsError, match="two updates from site 'a'"):
        rule.apply(KRUM_SET + [KRUM_SET[0]], rule.init(THETA), ctx())


def test_rules_refuse_updates_that_do_not_match_the_params():
    wrong = [Update("a", {"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}, 1)]
    with pytest.raises(ParamsError, match="site 'a' array 'w' has shape"):
        coordinate_median().apply(wrong, {}, ctx())
    missing = [Update("a", {"w": np.zeros(2, np.float32)}, 1)]
    with pytest.raises(ParamsError, match="site 'a' lacks array 'b'"):
        coordinate_median().apply(missing, {}, ctx())


# ---------------------------------------------------------------- composition

S = 10 / math.sqrt(2)  # e's update (100, 0, 100) clipped to norm 10 is (S, 0, S)


@pytest.mark.parametrize("pieces, g_w0, g_b", [
    # median of w0 {0,1,3,5,100} = 3, of b {0,0,0,0,100} = 0
    ((coordinate_median(),), 3.0, 0.0),
    # drop 0 and 100 → mean(1,3,5) = 3; b drops one 0 and the 100 → 0
    ((trimmed_mean(0.2),), 3.0, 0.0),
    ((krum(1),), 1.0, 0.0),
    ((krum(1, m=3),), 4 / 3, 0.0),
    # one iteration from v = 0, tau = 10: a..d unclipped (norms ≤ 5), e → (S, 0, S)
    # w0 = (0+1+3+5+S)/5, b = S/5
    ((centered_clip(10.0, iterations=1),), (9 + S) / 5, S / 5),
    # norms 0,1,3,5,100√2 → median 3: d scaled to 3, e by 3/(100√2) → (3/√2, 0, 3/√2); uniform mean
    ((norm_bound(), weighted_mean("uniform")), (7 + 3 / math.sqrt(2)) / 5, 3 / math.sqrt(2) / 5),
])
def test_every_rule_runs_one_strategy_step(pieces, g_w0, g_b):
    strategy = chain(*pieces, sgd(1.0))
    states = strategy.init(THETA)
    new, new_states = strategy.step(THETA, KRUM_SET, states, ctx())
    # θ ← θ − G with θ = w [1, 2], b [0.5]; G_w1 = 0
    np.testing.assert_allclose(new["w"], [1 - g_w0, 2], rtol=1e-5)
    np.testing.assert_allclose(new["b"], [0.5 - g_b], rtol=1e-5, atol=1e-6)
    assert new["w"].dtype == np.float32 and len(new_states) == len(pieces) + 1


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 13, 32, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_of_rows_is_numpys_median_bit_for_bit(n, dtype):
    rng = np.random.default_rng(n)
    rows = [rng.standard_normal(1000).astype(dtype) for _ in range(n)]
    rows[0][:100] = rows[-1][:100]  # ties
    before = [r.copy() for r in rows]
    expected = np.median(np.stack(rows).astype(np.float64), axis=0)
    got = median_of_rows(rows)
    assert got.dtype == np.float64 and np.array_equal(got, expected)
    assert all(np.array_equal(r, b) for r, b in zip(rows, before))  # the caller's arrays are not sorted in place
