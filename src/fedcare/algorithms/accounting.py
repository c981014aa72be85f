"""Privacy accounting for the sampled Gaussian mechanism, with Google's `dp_accounting` library.

Both kinds of differential privacy in fedcare release, at every step, a clipped sum plus Gaussian
noise of standard deviation σ·C on a Poisson-sampled subset:

    site-level (DP-FedAvg, fedcare.algorithms.privacy):
        q = the fraction of sites selected per round, steps = rounds
    record-level (DP-SGD at a site, fedcare.learning.dpsgd):
        q = batch_size / rows of the site, steps = epochs · rows / batch_size (over all rounds)

Composing `steps` times the event PoissonSampledDpEvent(q, GaussianDpEvent(σ)) and converting to
(ε, δ) gives the privacy spent; the neighbouring relation is add-or-remove one site (one patient).
The RDP accountant (Mironov, 2017) is the default: fast, slightly pessimistic. The PLD accountant
("pld") is tighter (smaller ε for the same σ) but roughly 100× slower; use one accountant for both
calibrating and reporting.

Poisson sampling is what `epsilon`, `Budget` and `SiteLevelAccountant` assume: right for DP-SGD at
a site, only an approximation for the round engine, which selects a FIXED number k of the N sites
each round without replacement. Site-level DP in a run is therefore accounted by
`FixedSizeSiteAccountant`: dp_accounting's SampledWithoutReplacementDpEvent(N, k, Gaussian) under
the replace-one relation (the relation that event is proven for), no sampling when k = N.

dp_accounting is imported on first use, so this module imports without it.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fedcare.core.errors import ConfigError

Accountant = Literal["rdp", "pld"]

#: rounds_affordable stops counting here (with little noise or sampling, budgets are effectively unbounded).
MAX_STEPS = 10 ** 9

# Bisection of noise_multiplier_for stops when ε is within this relative distance below the target.
_REL_TOL = 1e-4


def _dp():
    try:
        import dp_accounting
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("differential-privacy accounting needs the 'dp-accounting' package: "
                          "pip install dp-accounting") from exc
    return dp_accounting


def _real(value: object, what: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "[") + f"{low}", f"{high}" + (")" if high_open else "]")
        raise ConfigError(f"{what} must be a number in {lo}, {hi}, not {value!r}")
    return float(value)


def _steps(value: object, what: str = "steps") -> int:
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0):
        raise ConfigError(f"{what} must be an integer >= 0, not {value!r}")
    return int(value)


def _check(noise_multiplier: float, sampling_rate: float, delta: float) -> tuple[float, float, float]:
    sigma = _real(noise_multiplier, "noise_multiplier", 0.0, math.inf, high_open=True)
    q = _real(sampling_rate, "sampling_rate", 0.0, 1.0)
    d = _real(delta, "delta", 0.0, 1.0, low_open=True, high_open=True)
    return sigma, q, d


def _make_accountant(accountant: Accountant):
    dp = _dp()
    if accountant == "rdp":
        return dp.rdp.RdpAccountant()
    if accountant == "pld":
        return dp.pld.PLDAccountant()
    raise ConfigError(f"accountant must be 'rdp' or 'pld', not {accountant!r}")


def dp_event(noise_multiplier: float, sampling_rate: float, steps: int):
    """The dp_accounting event of `steps` Poisson-sampled Gaussian releases (σ, q)."""
    dp = _dp()
    sigma, q, _ = _check(noise_multiplier, sampling_rate, 0.5)
    gaussian = dp.GaussianDpEvent(sigma)
    one = gaussian if q == 1.0 else dp.PoissonSampledDpEvent(q, gaussian)
    return dp.SelfComposedDpEvent(one, _steps(steps))


def epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
            accountant: Accountant = "rdp") -> float:
    """ε spent after `steps` releases of the sampled Gaussian mechanism (noise multiplier σ,
    Poisson sampling rate q) at the given δ. 0.0 for no steps or q = 0; inf for σ = 0 otherwise."""
    sigma, q, d = _check(noise_multiplier, sampling_rate, delta)
    steps = _steps(steps)
    if steps == 0 or q == 0.0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    acc = _make_accountant(accountant)
    acc.compose(dp_event(sigma, q, steps))
    return float(acc.get_epsilon(d))


def noise_multiplier_for(target_epsilon: float, delta: float, sampling_rate: float, steps: int,
                         accountant: Accountant = "rdp") -> float:
    """The smallest noise multiplier σ (to a relative ε tolerance of 1e-4) whose ε after `steps`
    releases at rate q is at most `target_epsilon`: ε(σ) ≤ target and ε(σ) ≥ (1 − 1e-4)·target.

    Bisection on σ (ε decreases as σ grows). q = 0 or steps = 0 spends nothing: returns 0.0."""
    target = _real(target_epsilon, "target_epsilon", 0.0, math.inf, low_open=True, high_open=True)
    _, q, d = _check(0.0, sampling_rate, delta)
    steps = _steps(steps)
    if steps == 0 or q == 0.0:
        return 0.0
    return _smallest_sigma(lambda sigma: epsilon(sigma, q, steps, d, accountant), target,
                           f"ε={target} at δ={d} over {steps} steps of rate {q}")


def _smallest_sigma(eps: Callable[[float], float], target: float, what: str) -> float:
    """Bisection for the smallest σ with eps(σ) ≤ target, to a relative ε tolerance of 1e-4
    (ε decreases as σ grows; eps(0) is infinite)."""
    lo, hi = 0.0, 1.0  # ε(lo) > target (inf at 0), ε(hi) ≤ target once bracketed
    while eps(hi) > target:
        lo, hi = hi, hi * 2.0
        if hi > 1e8:
            raise ConfigError(f"no noise multiplier below 1e8 reaches {what}; raise the budget or lower the steps")
    if lo == 0.0:  # bracket from below too: halve until ε goes above the target
        lo = hi / 2.0
        while eps(lo) <= target:
            hi, lo = lo, lo / 2.0
            if lo < 1e-6:
                return hi
    eps_hi = eps(hi)
    for _ in range(200):
        if eps_hi >= target * (1.0 - _REL_TOL) or (hi - lo) <= 1e-12 * hi:
            break
        mid = 0.5 * (lo + hi)
        eps_mid = eps(mid)
        if eps_mid <= target:
            hi, eps_hi = mid, eps_mid
        else:
            lo = mid
    return float(hi)


def rounds_affordable(noise_multiplier: float, sampling_rate: float, delta: float, epsilon_max: float,
                      accountant: Accountant = "rdp", limit: int = MAX_STEPS) -> int:
    """The largest number of steps whose ε stays within `epsilon_max`: ε(steps) ≤ ε_max < ε(steps + 1).
    Capped at `limit` (returned when even that many steps fit, e.g. q = 0)."""
    sigma, q, d = _check(noise_multiplier, sampling_rate, delta)
    budget = _real(epsilon_max, "epsilon_max", 0.0, math.inf, high_open=True)
    limit = _steps(limit, "limit")

    def fits(steps: int) -> bool:
        return epsilon(sigma, q, steps, d, accountant) <= budget

    return _largest_steps(fits, limit)


def _largest_steps(fits: Callable[[int], bool], limit: int) -> int:
    """The largest steps ≤ limit with fits(steps), for a fits that turns false once and stays so."""
    if limit == 0 or not fits(1):
        return 0
    lo, hi = 1, 2  # fits(lo); hi not yet known. Search upward (the slow PLD never sees huge counts
    while True:    # unless the budget really affords them).
        if hi >= limit:
            if fits(limit):
                return limit
            hi = limit
            break
        if not fits(hi):
            break
        lo, hi = hi, hi * 2
    # fits(lo) and not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Budget:
    """A privacy budget (ε_max at δ) for a mechanism of noise multiplier σ and sampling rate q: how
    much `steps` releases spend and how many fit. Immutable; the caller counts the steps taken."""

    noise_multiplier: float
    sampling_rate: float
    delta: float
    epsilon_max: float
    accountant: Accountant = "rdp"

    def __post_init__(self) -> None:
        _check(self.noise_multiplier, self.sampling_rate, self.delta)
        _real(self.epsilon_max, "epsilon_max", 0.0, math.inf, high_open=True)
        if self.accountant not in ("rdp", "pld"):
            raise ConfigError(f"accountant must be 'rdp' or 'pld', not {self.accountant!r}")

    def spent(self, steps: int) -> float:
        """ε after `steps` releases."""
        return epsilon(self.noise_multiplier, self.sampling_rate, steps, self.delta, self.accountant)

    def allows(self, steps: int) -> bool:
        """Whether `steps` releases stay within the budget."""
        return self.spent(steps) <= self.epsilon_max

    def rounds_affordable(self, limit: int = MAX_STEPS) -> int:
        """The largest number of steps within the budget (see rounds_affordable)."""
        return rounds_affordable(self.noise_multiplier, self.sampling_rate, self.delta, self.epsilon_max,
                                 self.accountant, limit)

    def remaining(self, steps: int) -> int:
        """Steps still affordable after `steps` were taken (0 when the budget is spent)."""
        return max(0, self.rounds_affordable() - _steps(steps))


@dataclass(frozen=True)
class SiteLevelAccountant:
    """Site-level DP for DP-FedAvg with POISSON sampling of sites at rate q = sites_per_round /
    total_sites, one noised mean per round (the steps are rounds). The round engine selects a fixed
    number of sites instead: a run uses FixedSizeSiteAccountant. Give it the noise multiplier
    the accountant should see: σ, or effective_noise_multiplier(σ, σ_b) under adaptive clipping."""

    noise_multiplier: float
    sampling_rate: float
    delta: float
    accountant: Accountant = "rdp"

    def __post_init__(self) -> None:
        _check(self.noise_multiplier, self.sampling_rate, self.delta)

    @staticmethod
    def sampling_rate_for(sites_per_round: int, total_sites: int) -> float:
        """q = sites selected per round / sites in the federation."""
        k, n = _steps(sites_per_round, "sites_per_round"), _steps(total_sites, "total_sites")
        if n == 0 or k > n:
            raise ConfigError(f"cannot select {k} of {n} sites per round")
        return k / n

    @classmethod
    def calibrated(cls, target_epsilon: float, delta: float, sampling_rate: float, rounds: int,
                   accountant: Accountant = "rdp") -> SiteLevelAccountant:
        """The accountant whose σ makes `rounds` rounds spend (just under) target_epsilon."""
        sigma = noise_multiplier_for(target_epsilon, delta, sampling_rate, rounds, accountant)
        return cls(sigma, sampling_rate, delta, accountant)

    def epsilon(self, rounds: int) -> float:
        """ε spent by the first `rounds` rounds."""
        return epsilon(self.noise_multiplier, self.sampling_rate, rounds, self.delta, self.accountant)

    def budget(self, epsilon_max: float) -> Budget:
        return Budget(self.noise_multiplier, self.sampling_rate, self.delta, epsilon_max, self.accountant)

    def rounds_affordable(self, epsilon_max: float) -> int:
        return self.budget(epsilon_max).rounds_affordable()


# ----------------------------------------------------------------------------------------------
# Site-level DP as the round engine runs it: a fixed number of sites per round, without replacement

#: Under the replace-one relation one site's clipped update (norm ≤ C) can move the sum by 2C.
REPLACE_ONE_SENSITIVITY = 2.0


def _site_counts(num_sites: object, sites_per_round: object) -> tuple[int, int]:
    n, k = _steps(num_sites, "num_sites"), _steps(sites_per_round, "sites_per_round")
    if not 1 <= k <= n:
        raise ConfigError(f"cannot select {k} of {n} sites per round")
    return n, k


def fixed_size_dp_event(noise_multiplier: float, num_sites: int, sites_per_round: int, rounds: int):
    """The dp_accounting event of `rounds` Gaussian releases, each on `sites_per_round` of
    `num_sites` sites drawn uniformly without replacement (exactly what engine.select_sites does;
    k = N is no sampling). `noise_multiplier` is dp_accounting's: the noise standard deviation over
    the replace-one sensitivity of the released sum."""
    dp = _dp()
    sigma = _real(noise_multiplier, "noise_multiplier", 0.0, math.inf, high_open=True)
    n, k = _site_counts(num_sites, sites_per_round)
    gaussian = dp.GaussianDpEvent(sigma)
    one = gaussian if k == n else dp.SampledWithoutReplacementDpEvent(n, k, gaussian)
    return dp.SelfComposedDpEvent(one, _steps(rounds, "rounds"))


def fixed_size_epsilon(noise_multiplier: float, num_sites: int, sites_per_round: int, rounds: int,
                       delta: float) -> float:
    """ε of fixed_size_dp_event at δ, from dp_accounting's RDP accountant under the replace-one
    neighbouring relation (the only relation it accounts sampling without replacement under; its
    PLD accountant does not support that event). Equal to composing the event and asking that
    accountant, but the one-round RDP curve (slow to compute for sampling without replacement,
    about 0.7 s) is computed once per (σ, N, k) and scaled by the rounds, as composition does."""
    dp = _dp()
    sigma = _real(noise_multiplier, "noise_multiplier", 0.0, math.inf, high_open=True)
    d = _real(delta, "delta", 0.0, 1.0, low_open=True, high_open=True)
    n, k = _site_counts(num_sites, sites_per_round)
    steps = _steps(rounds, "rounds")
    if steps == 0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    one = _one_round_accountant(sigma, n, k)
    orders, rdp = getattr(one, "_orders", None), getattr(one, "_rdp", None)
    if orders is None or rdp is None:  # another dp_accounting layout: compose the whole event
        acc = _replace_one_accountant()
        acc.compose(fixed_size_dp_event(sigma, n, k, steps))
        return float(acc.get_epsilon(d))
    return float(dp.rdp.compute_epsilon(orders, steps * rdp, d)[0])


def _replace_one_accountant():
    dp = _dp()
    return dp.rdp.RdpAccountant(neighboring_relation=dp.NeighboringRelation.REPLACE_ONE)


@functools.lru_cache(maxsize=256)
def _one_round_accountant(sigma: float, num_sites: int, sites_per_round: int):
    acc = _replace_one_accountant()
    acc.compose(fixed_size_dp_event(sigma, num_sites, sites_per_round, 1))
    return acc


@dataclass(frozen=True)
class FixedSizeSiteAccountant:
    """Site-level DP (DP-FedAvg) accounted the way the engine selects sites: each round k of the N
    sites, uniformly without replacement, and one release of Σ clip(Δᵢ, C) + N(0, (σC)²).

    `noise_multiplier` is σ, the noise on the sum in units of C (under adaptive clipping, the
    effective_noise_multiplier of the sum and the noised count). The guarantee is for the
    replace-one relation (one hospital's data swapped for any other's; N is public), whose
    sensitivity is 2C, so dp_accounting is given σ/2. With k = N there is no sampling.
    """

    noise_multiplier: float
    num_sites: int
    sites_per_round: int
    delta: float

    def __post_init__(self) -> None:
        _real(self.noise_multiplier, "noise_multiplier", 0.0, math.inf, low_open=True, high_open=True)
        _site_counts(self.num_sites, self.sites_per_round)
        _real(self.delta, "delta", 0.0, 1.0, low_open=True, high_open=True)

    @property
    def accountant_multiplier(self) -> float:
        """What dp_accounting sees: σ over the replace-one sensitivity (2, in units of C)."""
        return self.noise_multiplier / REPLACE_ONE_SENSITIVITY

    def event(self, rounds: int):
        return fixed_size_dp_event(self.accountant_multiplier, self.num_sites, self.sites_per_round, rounds)

    def epsilon(self, rounds: int) -> float:
        """ε spent by the first `rounds` rounds."""
        return fixed_size_epsilon(self.accountant_multiplier, self.num_sites, self.sites_per_round, rounds,
                                  self.delta)

    def rounds_affordable(self, epsilon_max: float, limit: int = MAX_STEPS) -> int:
        """The most rounds whose ε stays within epsilon_max (capped at `limit`)."""
        budget = _real(epsilon_max, "epsilon_max", 0.0, math.inf, high_open=True)
        return _largest_steps(lambda r: self.epsilon(r) <= budget, _steps(limit, "limit"))

    @classmethod
    def calibrated(cls, target_epsilon: float, delta: float, num_sites: int, sites_per_round: int,
                   rounds: int) -> FixedSizeSiteAccountant:
        """The accountant whose σ makes `rounds` rounds spend (just under) target_epsilon."""
        target = _real(target_epsilon, "target_epsilon", 0.0, math.inf, low_open=True, high_open=True)
        d = _real(delta, "delta", 0.0, 1.0, low_open=True, high_open=True)
        n, k = _site_counts(num_sites, sites_per_round)
        steps = _steps(rounds, "rounds")
        if steps == 0:
            raise ConfigError("site-level DP needs at least one round to calibrate its noise")
        z = _smallest_sigma(lambda s: fixed_size_epsilon(s, n, k, steps, d), target,
                            f"site-level ε={target} at δ={d} over {steps} rounds of {k} of {n} sites")
        return cls(z * REPLACE_ONE_SENSITIVITY, n, k, d)

    def describe(self) -> str:
        """How the ε was computed, for summary.json."""
        sampling = "every site each round" if self.sites_per_round == self.num_sites else \
            f"{self.sites_per_round} of {self.num_sites} sites per round, sampled without replacement"
        return f"dp_accounting RDP, replace-one, {sampling}"
