"""Simulated attacks: only the attackers change, deterministically; robust rules resist them."""

import numpy as np
import pytest

from fedcare.algorithms import RoundContext, chain, sgd, weighted_mean
from fedcare.algorithms.attacks import attack, flip_labels
from fedcare.algorithms.robust import coordinate_median, krum
from fedcare.core import ConfigError, DataError, ParamsError, Update, validate_params

THETA = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.5], np.float32)}


def ctx(round_=1):
    return RoundContext(params=THETA, round=round_, rng=np.random.default_rng(0))


def upd(site, w, b, n=10):
    return Update(site, {"w": np.array(w, np.float32), "b": np.array([b], np.float32)}, n, {"train_loss": 0.5})


UPDATES = [upd("a", [1, 2], 3), upd("b", [4, 5], 6), upd("c", [-1, 0.5], 2)]


def test_sign_flip_negates_only_the_attackers():
    out, state = attack("sign-flip", ["b"]).apply(UPDATES, {}, ctx())
    assert out[0] is UPDATES[0] and out[2] is UPDATES[2]
    np.testing.assert_array_equal(out[1].grad["w"], [-4, -5])
    np.testing.assert_array_equal(out[1].grad["b"], [-6])
    assert (out[1].site_id, out[1].num_examples, out[1].metrics) == ("b", 10, {"train_loss": 0.5})
    assert out[1].grad["w"].dtype == np.float32
    np.testing.assert_array_equal(UPDATES[1].grad["w"], [4, 5])  # input not modified
    assert state == {}


def test_scale_multiplies_the_attackers():
    out, _ = attack("scale", ["a", "c"], scale=3.0).apply(UPDATES, {}, ctx())
    np.testing.assert_array_equal(out[0].grad["w"], [3, 6])
    np.testing.assert_array_equal(out[2].grad["w"], [-3, 1.5])
    np.testing.assert_array_equal(out[2].grad["b"], [6])
    assert out[1] is UPDATES[1]


def test_gaussian_replaces_with_seeded_noise():
    big = [Update("a", {"w": np.ones(4000, np.float32)}, 1), Update("x", {"w": np.ones(4000, np.float32)}, 1),
           Update("b", {"w": np.ones(4000, np.float32)}, 1)]
    piece = attack("gaussian", ["b", "a"], scale=2.0, seed=7)
    out, _ = piece.apply(big, {}, ctx(3))
    assert out[1] is big[1]
    for u in (out[0], out[2]):
        assert u.grad["w"].shape == (4000,) and u.grad["w"].dtype == np.float32
        assert abs(float(u.grad["w"].mean())) < 0.15        # N(0, 2²): mean ≈ 0 (sd of the mean 0.03)
        assert 1.8 < float(u.grad["w"].std()) < 2.2         # sd ≈ 2
    assert not np.array_equal(out[0].grad["w"], out[2].grad["w"])   # each attacker its own noise
    # same seed and round → same noise, whatever the order of the updates or attackers
    again, _ = attack("gaussian", ["a", "b"], scale=2.0, seed=7).apply(big[::-1], {}, ctx(3))
    np.testing.assert_array_equal(again[2].grad["w"], out[0].grad["w"])
    np.testing.assert_array_equal(again[0].grad["w"], out[2].grad["w"])
    # another round or another seed → other noise
    assert not np.array_equal(piece.apply(big, {}, ctx(4))[0][0].grad["w"], out[0].grad["w"])
    assert not np.array_equal(attack("gaussian", ["a", "b"], 2.0, seed=8).apply(big, {}, ctx(3))[0][0].grad["w"],
                              out[0].grad["w"])


@pytest.mark.parametrize("kind", ["sign-flip", "scale", "gaussian", "nan"])
def test_every_kind_is_deterministic_and_touches_only_attackers(kind):
    piece = attack(kind, ["c"], scale=5.0, seed=1)
    first, _ = piece.apply(UPDATES, {}, ctx(2))
    second, _ = piece.apply(UPDATES, {}, ctx(2))
    assert first[0] is UPDATES[0] and first[1] is UPDATES[1]
    assert not np.array_equal(first[2].grad["w"], UPDATES[2].grad["w"], equal_nan=True)
    for name in ("w", "b"):
        np.testing.assert_array_equal(first[2].grad[name], second[2].grad[name])  # NaN == NaN here


def test_attackers_that_do_not_answer_and_empty_lists_are_fine():
    out, _ = attack("sign-flip", ["zz"]).apply(UPDATES, {}, ctx())
    assert all(o is u for o, u in zip(out, UPDATES))
    out, _ = attack("sign-flip", []).apply(UPDATES, {}, ctx())
    assert all(o is u for o, u in zip(out, UPDATES))


def test_nan_is_refused_by_the_wire_check_and_by_robust_rules():
    out, _ = attack("nan", ["b"]).apply(UPDATES, {}, ctx())
    assert np.isnan(out[1].grad["w"]).all() and np.isnan(out[1].grad["b"]).all()
    validate_params(out[0].grad, THETA, "update")  # honest: fine
    with pytest.raises(ParamsError, match="update array 'w' holds NaN"):
        validate_params(out[1].grad, THETA, "update")
    with pytest.raises(ParamsError, match="site 'b' holds NaN"):
        coordinate_median().apply(out, {}, ctx())
    # what the wire path does — drop the refused update — leaves the honest median:
    # w0 {1, -1} → 0, w1 {2, 0.5} → 1.25, b {3, 2} → 2.5
    kept = [u for u in out if np.isfinite(u.grad["w"]).all()]
    agg, _ = coordinate_median().apply(kept, {}, ctx())
    np.testing.assert_allclose(agg["w"], [0, 1.25])
    np.testing.assert_allclose(agg["b"], [2.5])


# Four honest sites with mean w = [1, 1]: w0 (0.8+1.2+1.0+1.0)/4 = 1, w1 (1.2+0.8+0.9+1.1)/4 = 1.
# Site e is honest too ([1, 1]) but sign-flips and claims 100 examples (a count is self-reported).
HONEST = [upd("a", [0.8, 1.2], 0, 10), upd("b", [1.2, 0.8], 0, 10), upd("c", [1.0, 0.9], 0, 10),
          upd("d", [1.0, 1.1], 0, 10)]
ROUND = HONEST + [upd("e", [1.0, 1.0], 0, 100)]


def test_sign_flip_turns_the_weighted_mean_around_but_not_the_median():
    flip = attack("sign-flip", ["e"])
    # weighted mean: (10·(0.8+1.2+1.0+1.0) + 100·(−1)) / 140 = (40 − 100)/140 = −3/7 in both w coordinates
    mean_strategy = chain(flip, weighted_mean(), sgd(1.0))
    new, _ = mean_strategy.step(THETA, ROUND, mean_strategy.init(THETA), ctx())
    np.testing.assert_allclose(new["w"], [1 + 3 / 7, 2 + 3 / 7], rtol=1e-6)  # θ − G moves *up* the loss
    # median: w0 {0.8, 1.2, 1.0, 1.0, −1} → 1.0 ; w1 {1.2, 0.8, 0.9, 1.1, −1} → 0.9 — within 0.1 of [1, 1]
    median_strategy = chain(flip, coordinate_median(), sgd(1.0))
    new, _ = median_strategy.step(THETA, ROUND, median_strategy.init(THETA), ctx())
    np.testing.assert_allclose(new["w"], [1 - 1.0, 2 - 0.9], rtol=1e-6, atol=1e-6)


def test_chained_attacks_combine_and_krum_ignores_them():
    # e sends −10·[1, 1] = [−10, −10]; Krum (f = 1) picks an honest update, never e
    strategy = chain(attack("sign-flip", ["e"]), attack("scale", ["e"], 10.0), krum(1), sgd(1.0))
    rule = strategy.pieces[2]
    rewritten, _ = strategy.pieces[1].apply(strategy.pieces[0].apply(ROUND, {}, ctx())[0], {}, ctx())
    np.testing.assert_allclose(rewritten[4].grad["w"], [-10, -10])
    assert rule.decisions(rewritten, ctx())["e"] == 0.0
    new, _ = strategy.step(THETA, ROUND, strategy.init(THETA), ctx())
    assert np.all(new["w"] < THETA["w"])  # a descent step along an honest update


def test_bad_attacks_are_refused():
    with pytest.raises(ConfigError, match="flip_labels"):
        attack("label-flip", ["a"])
    with pytest.raises(ConfigError, match="unknown attack kind 'boom'"):
        attack("boom", ["a"])
    with pytest.raises(ConfigError, match=r"write \['site-a'\]"):
        attack("sign-flip", "site-a")
    with pytest.raises(ConfigError, match="attack scale"):
        attack("scale", ["a"], scale=0.0)
    with pytest.raises(ConfigError, match="attack seed"):
        attack("gaussian", ["a"], seed=-1)


def test_flip_labels():
    np.testing.assert_array_equal(flip_labels(np.array([0, 1, 1, 0], np.float32), "binary"), [1, 0, 0, 1])
    assert flip_labels(np.array([0, 1], np.float32), "binary").dtype == np.float32
    # K = 3: 0 ↔ 2, 1 stays ; K = 4: 0 ↔ 3, 1 ↔ 2
    np.testing.assert_array_equal(flip_labels(np.array([0, 1, 2]), "multiclass", 3), [2, 1, 0])
    flipped = flip_labels(np.array([0, 3, 1], np.int64), "multiclass", 4)
    np.testing.assert_array_equal(flipped, [3, 0, 2])
    assert flipped.dtype == np.int64
    with pytest.raises(ConfigError, match="not 'regression'"):
        flip_labels(np.array([1.5]), "regression")
    with pytest.raises(ConfigError, match="num_classes"):
        flip_labels(np.array([0, 1]), "multiclass")
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        flip_labels(np.array([0, 3]), "multiclass", 3)
    with pytest.raises(DataError, match="0 or 1"):
        flip_labels(np.array([0, 2], np.float32), "binary")
