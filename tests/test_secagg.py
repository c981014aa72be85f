"""Secure aggregation (Bonawitz et al. 2017, semi-honest): correctness under dropouts, the threshold,
masking hides the update, Shamir sharing, sealed share payloads, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedcare.algorithms.secagg import (
    DEFAULT_FRAC_BITS,
    PRIME,
    SecAggCoordinator,
    SecAggError,
    SecAggSite,
    decode_fixed_point,
    encode_fixed_point,
    secure_sum,
    seeded_randbytes,
    shamir_reconstruct,
    shamir_split,
    simulate,
)
from fedcare.core.errors import FedcareError

N, T = 5, 3
SITES = [f"hospital-{c}" for c in "abcde"]


def random_vectors(seed: int = 0, length: int = 2000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: rng.normal(0.0, 50.0, length) * rng.choice([1e-3, 1.0, 1e3], length) for s in SITES}


def bound(n_survivors: int) -> float:
    return n_survivors * 2.0 ** -(DEFAULT_FRAC_BITS + 1) + 1e-9  # + float64 slop of the plain sum


@pytest.mark.parametrize(
    "dropped",
    [set(), {"hospital-c"}, {"hospital-a", "hospital-e"}, {"hospital-b", "hospital-d"}],
    ids=["no-dropout", "one-dropout", "max-dropouts-ends", "max-dropouts-middle"],
)
def test_secure_sum_equals_plain_sum(dropped):
    vectors = random_vectors()
    assert len(dropped) <= N - T
    total = secure_sum(vectors, threshold=T, drop_after_masking=dropped, round=3, rng_seed=11)
    plain = sum(v for s, v in vectors.items() if s not in dropped)
    assert total.dtype == np.float64 and total.shape == plain.shape
    assert np.max(np.abs(total - plain)) <= bound(N - len(dropped))
    assert np.any(total < 0) and np.any(total > 0)


def test_secure_sum_with_os_randomness():
    vectors = random_vectors(seed=1, length=50)
    total = secure_sum(vectors, threshold=T, drop_after_masking={"hospital-a"})
    plain = sum(v for s, v in vectors.items() if s != "hospital-a")
    assert np.max(np.abs(total - plain)) <= bound(N - 1)


def test_too_many_dropouts_fail_clearly():
    vectors = random_vectors(length=10)
    with pytest.raises(SecAggError, match="fewer than the threshold 3") as info:
        secure_sum(vectors, threshold=T, drop_after_masking={"hospital-a", "hospital-b", "hospital-c"}, rng_seed=0)
    assert isinstance(info.value, FedcareError)


def test_too_few_unmask_responses_fail_clearly():
    vectors = random_vectors(length=10)
    coord = SecAggCoordinator(0, 10, T)
    sites = {s: SecAggSite(s, 0, randbytes=seeded_randbytes(5, i)) for i, s in enumerate(SITES)}
    for site in sites.values():
        coord.receive_keys(site.advertise())
    for site in sites.values():
        coord.receive_shares(site.share_keys(coord.roster()))
    for s, site in sites.items():
        site.receive_shares(coord.shares_for(s))
        coord.receive_masked(site.mask(vectors[s]))
    request = coord.unmask_request()
    responses = [sites[s].unmask_response(request) for s in request.survivors[:2]]
    with pytest.raises(SecAggError, match="answered the unmask request"):
        coord.unmask(responses)


def test_site_refuses_to_reveal_both_secrets_of_one_site():
    vectors = random_vectors(length=10)
    coord = SecAggCoordinator(0, 10, T)
    sites = {s: SecAggSite(s, 0, randbytes=seeded_randbytes(2, i)) for i, s in enumerate(SITES)}
    for site in sites.values():
        coord.receive_keys(site.advertise())
    for site in sites.values():
        coord.receive_shares(site.share_keys(coord.roster()))
    for s, site in sites.items():
        site.receive_shares(coord.shares_for(s))
        coord.receive_masked(site.mask(vectors[s]))
    honest = coord.unmask_request()
    curious = dataclasses.replace(honest, dropped=("hospital-b",))  # b is a survivor too
    with pytest.raises(SecAggError, match="both as survivors and as dropped"):
        sites["hospital-a"].unmask_response(curious)


def masked_words(value: float, seed: int, position: str = "hospital-c", length: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """The coordinator-side stored words of `position`'s update (all `value`), and its encoding."""
    rng = np.random.default_rng(seed)
    vectors = {s: rng.normal(0.0, 1.0, length) for s in SITES}
    vectors[position] = np.full(length, value)
    result = simulate(vectors, threshold=T, rng_seed=seed)
    return result.coordinator.masked_inputs[position], encode_fixed_point(vectors[position])


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic and its asymptotic p-value (no scipy needed)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size)))
    n_eff = a.size * b.size / (a.size + b.size)
    lam = (np.sqrt(n_eff) + 0.12 + 0.11 / np.sqrt(n_eff)) * d
    k = np.arange(1, 101)
    p = float(np.clip(2 * np.sum((-1.0) ** (k - 1) * np.exp(-2 * (k * lam) ** 2)), 0.0, 1.0))
    return d, p


def test_masked_update_reveals_nothing_about_the_update():
    zeros, q_zeros = masked_words(0.0, seed=101)
    big, q_big = masked_words(1000.0, seed=202)
    unit = lambda w: w.astype(np.float64) / 2.0**64  # noqa: E731
    for words in (zeros, big):
        assert abs(unit(words).mean() - 0.5) < 0.01  # σ ≈ 0.002
        bits = (words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
        assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.02)  # σ ≈ 0.0035 per bit
    _, p = ks_two_sample(unit(zeros), unit(big))
    assert p > 0.001
    # the masked words differ from the encoded update almost everywhere
    assert np.mean(zeros != q_zeros) > 0.999 and np.mean(big != q_big) > 0.999
    # and the test has power: the unmasked encodings are told apart at once
    _, p_plain = ks_two_sample(unit(q_zeros), unit(q_big))
    assert p_plain < 1e-6


def test_coordinator_holds_only_opaque_share_payloads():
    coord = SecAggCoordinator(0, 4, T)
    sites = {s: SecAggSite(s, 0, randbytes=seeded_randbytes(3, i)) for i, s in enumerate(SITES)}
    for site in sites.values():
        coord.receive_keys(site.advertise())
    for site in sites.values():
        coord.receive_shares(site.share_keys(coord.roster()))
    assert not hasattr(coord, "_held")  # shares live only at the sites, sealed in transit
    payload = coord.shares_for("hospital-b")[0]
    assert len(payload.ciphertext) == 4 + 2 * 66 + 16  # x, two shares, Poly1305 tag
    tampered = dataclasses.replace(payload, ciphertext=bytes([payload.ciphertext[0] ^ 1]) + payload.ciphertext[1:])
    others = [m for m in coord.shares_for("hospital-b") if m is not payload]
    with pytest.raises(SecAggError, match="failed authentication"):
        sites["hospital-b"].receive_shares([tampered, *others])


@pytest.mark.parametrize("secret", [0, 1, 2**256 - 1, PRIME - 1, 123456789])
def test_shamir_any_t_shares_reconstruct_and_t_minus_1_do_not(secret):
    import itertools

    n, t = 6, 4
    shares = shamir_split(secret, n, t, seeded_randbytes(7))
    for subset in itertools.combinations(shares, t):
        assert shamir_reconstruct(subset) == secret
    assert shamir_reconstruct(shares) == secret
    for subset in itertools.combinations(shares, t - 1):
        assert shamir_reconstruct(subset) != secret


def test_shamir_rejects_bad_input():
    with pytest.raises(SecAggError):
        shamir_split(PRIME, 3, 2)
    with pytest.raises(SecAggError):
        shamir_split(5, 3, 4)
    with pytest.raises(SecAggError):
        shamir_reconstruct([(1, 2), (1, 3)])


def test_same_seed_same_masked_vectors_and_different_seed_different():
    vectors = random_vectors(length=100)
    a = simulate(vectors, threshold=T, rng_seed=42).coordinator.masked_inputs
    b = simulate(vectors, threshold=T, rng_seed=42).coordinator.masked_inputs
    c = simulate(vectors, threshold=T, rng_seed=43).coordinator.masked_inputs
    assert all(np.array_equal(a[s], b[s]) for s in SITES)
    assert all(np.mean(a[s] != c[s]) > 0.99 for s in SITES)
    d = simulate(vectors, threshold=T, round=1, rng_seed=42).coordinator.masked_inputs
    assert all(np.mean(a[s] != d[s]) > 0.99 for s in SITES)  # the round is in the seed context


def test_fixed_point_round_trip_and_range():
    x = np.array([0.0, 1.5, -1.5, 2.0**-17, -123.456, 1e9])
    back = decode_fixed_point(encode_fixed_point(x))
    assert np.max(np.abs(back - x)) <= 2.0**-17
    with pytest.raises(SecAggError, match="fixed-point limit"):
        encode_fixed_point(np.array([2.0**47]))
    with pytest.raises(SecAggError, match="NaN"):
        encode_fixed_point(np.array([np.nan]))
    # sites refuse values that could make the sum of n = 5 updates overflow
    vectors = {s: np.full(3, 2.0**47 / 4) for s in SITES}
    with pytest.raises(SecAggError, match="fixed-point limit"):
        secure_sum(vectors, threshold=T, rng_seed=0)


def test_invalid_thresholds_and_shapes():
    vectors = random_vectors(length=5)
    with pytest.raises(SecAggError, match="threshold"):
        secure_sum(vectors, threshold=1, rng_seed=0)
    with pytest.raises(SecAggError, match="threshold"):
        secure_sum(vectors, threshold=N + 1, rng_seed=0)
    with pytest.raises(SecAggError, match="same length"):
        secure_sum({**vectors, "hospital-a": np.zeros(6)}, threshold=T, rng_seed=0)


def test_weighted_mean_via_an_extra_coordinate():
    rng = np.random.default_rng(9)
    updates = {s: rng.normal(size=20) for s in SITES}
    weights = {s: float(rng.integers(10, 500)) for s in SITES}
    packed = {s: np.append(weights[s] * updates[s], weights[s]) for s in SITES}
    total = secure_sum(packed, threshold=T, drop_after_masking={"hospital-d"}, rng_seed=4)
    mean = total[:-1] / total[-1]
    survivors = [s for s in SITES if s != "hospital-d"]
    expected = sum(weights[s] * updates[s] for s in survivors) / sum(weights[s] for s in survivors)
    assert np.allclose(mean, expected, atol=1e-6)
