"""Site-level differential privacy for the coordinator: clipping and DP-FedAvg.

DP-FedAvg (McMahan et al., ICLR 2018, "Learning Differentially Private Recurrent Language Models")
protects the *participation of a whole site*: whatever one hospital sends in a round (all of its
patients at once), the released aggregate changes by a bounded amount, hidden by Gaussian noise.
Each round:

    1. clip every site's update to global L2 norm ≤ C          (bounds one site's influence)
    2. average UNIFORMLY with a fixed denominator D             (num_examples is ignored: a site's
                                                                 reported count is itself private)
    3. add N(0, (σ·C/D)²) to every coordinate of the mean       (Gaussian mechanism on the sum:
                                                                 N(0, (σ·C)²), divided by D)

The (ε, δ) spent over the rounds comes from fedcare.algorithms.accounting, given σ, the fraction of
sites sampled per round and the number of rounds.

Where the noise is added matters. The pieces here run AT THE COORDINATOR: it sees every clipped
update and their un-noised sum before adding the noise, so the guarantee holds against whoever
sees the released models (other sites, the published model, a later attacker), not against the
coordinator itself. Hiding the individual updates and the sum from the coordinator is the job of
secure aggregation (built separately).

Adaptive clipping (Andrew et al., NeurIPS 2021, "Differentially Private Learning with Adaptive
Clipping"): instead of a hand-set C, follow the γ-quantile of the update norms with the geometric
update C ← C·exp(−η(b̄ − γ)), where b̄ is the (optionally noised) fraction of updates whose norm
was ≤ C this round. C lives in the piece state as "clip_norm" (a 1-element float64 array).

Pieces:
    clip_updates(C)            "updates" piece: fixed clipping to norm ≤ C.
    adaptive_clip(...)         "updates" piece: clipping to the adaptive C in state.
    dp_fedavg(C, σ, ...)       "aggregate_updates" piece: clip + uniform fixed-denominator mean +
                               Gaussian noise, in one piece (so C and the denominator that set the
                               noise are exactly the ones used). Use with sgd(1.0):
                               chain(dp_fedavg(1.0, 1.1), sgd(1.0)).
    calibrate_site_dp(...)     σ (and σ_b) for a run's budget, rounds and site selection, with the
                               accountant (FixedSizeSiteAccountant: k of N sites, no replacement).
    site_level_dp(agg, ...)    wraps the aggregator that releases the noised mean (dp_fedavg, or
                               secagg.secure_mean when the sites add the noise) with that accountant
                               and the budget: counts rounds, refuses one that would overspend,
                               reports ε, C and σ per round (Strategy.round_metrics).

Every piece has `decisions(updates, ctx, state=None) -> {site_id: clip factor}` (1.0 = untouched),
like NormBound; pass the state that went into `apply` for the adaptive ones. Noise is drawn from
ctx.rng only, so a run is deterministic per seed. Updates holding NaN or infinite values and two
updates from one site in a round are refused (ParamsError). Pure numpy, no I/O.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedcare.algorithms.accounting import FixedSizeSiteAccountant
from fedcare.algorithms.pieces import RoundContext, StageName, State
from fedcare.core.errors import ConfigError, FedcareError, ParamsError
from fedcare.core.params import Params
from fedcare.core.update import Update

CLIP_KEY = "clip_norm"


# ----------------------------------------------------------------------------------------------
# Checks and small helpers


def _positive(value: object, what: str) -> float:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{what} must be a finite number > 0, not {value!r}")
    return float(value)


def _non_negative(value: object, what: str) -> float:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{what} must be a finite number >= 0, not {value!r}")
    return float(value)


def _check_adaptive(target_quantile: object, lr: object, count_noise: object, rule: str) -> None:
    if not (isinstance(target_quantile, numbers.Real) and not isinstance(target_quantile, bool)
            and 0.0 <= target_quantile <= 1.0):
        raise ConfigError(f"{rule} target_quantile must be a number in [0, 1], not {target_quantile!r}")
    _non_negative(lr, f"{rule} lr")
    _non_negative(count_noise, f"{rule} noise_multiplier_count")


def update_norm(update: Update) -> float:
    """Global L2 norm of an update over all its arrays (float64); ParamsError if not finite."""
    total = 0.0
    for v in update.grad.values():
        a = np.asarray(v, np.float64)
        total += float(np.dot(a.ravel(), a.ravel()))
    norm = math.sqrt(total)
    if not math.isfinite(norm):
        raise ParamsError(f"update from site '{update.site_id}' holds NaN or infinite values; "
                          "differentially private clipping refuses it (the wire check drops such updates)")
    return norm


def clip_factor(norm: float, clip_norm: float) -> float:
    """min(1, C / norm): the factor that brings a norm down to at most C (1.0 for norm ≤ C)."""
    return 1.0 if norm <= clip_norm else clip_norm / norm


def _scaled(update: Update, factor: float) -> Update:
    if factor == 1.0:
        return update
    grad = {k: (np.asarray(v, np.float64) * factor).astype(np.asarray(v).dtype) for k, v in update.grad.items()}
    return Update(update.site_id, grad, update.num_examples, dict(update.metrics))


def _unique(updates: Iterable[Update], rule: str) -> Iterable[Update]:
    """Yield the updates, refusing a second one from the same site (it would double its influence)."""
    seen: set[str] = set()
    for update in updates:
        if update.site_id in seen:
            raise ParamsError(f"{rule} got two updates from site '{update.site_id}' in one round; "
                              "one site's influence must stay bounded by the clip norm")
        seen.add(update.site_id)
        yield update


def _state_clip(state: State | None, default: float, rule: str) -> float:
    if not state:
        return default
    if CLIP_KEY not in state:
        raise ParamsError(f"{rule} state lacks '{CLIP_KEY}'; start from {rule}(...).init(params)")
    arr = np.asarray(state[CLIP_KEY], np.float64).ravel()
    if arr.size != 1 or not math.isfinite(float(arr[0])) or float(arr[0]) <= 0:
        raise ParamsError(f"{rule} state '{CLIP_KEY}' must hold one finite number > 0, not {arr.tolist()}")
    return float(arr[0])


def _clip_state(clip_norm: float) -> State:
    return {CLIP_KEY: np.array([clip_norm], np.float64)}


def geometric_clip_update(clip_norm: float, below_fraction: float, target_quantile: float, lr: float) -> float:
    """Andrew et al.'s geometric step: C·exp(−lr·(b̄ − γ)). b̄ above γ (too many updates under C)
    shrinks C; below γ grows it. b̄ may lie outside [0, 1] once noised; it is used as is."""
    return float(clip_norm * math.exp(-lr * (below_fraction - target_quantile)))


def _noisy_below_fraction(norms: Sequence[float], clip_norm: float, denominator: float,
                          count_noise: float, rng: np.random.Generator) -> float:
    """b̄ = (#{norm ≤ C} + N(0, σ_b²)) / denominator. With σ_b = 0 no random number is drawn."""
    count = float(sum(1 for n in norms if n <= clip_norm))
    if count_noise > 0:
        count += float(rng.normal(0.0, count_noise))
    return count / denominator


def effective_noise_multiplier(noise_multiplier: float, noise_multiplier_count: float) -> float:
    """The single noise multiplier to give the accountant when adaptive clipping releases a noised
    count beside the noised sum (Andrew et al., 2021, Thm. 1): z = (σ⁻² + (2σ_b)⁻²)^(−1/2).
    The clip-indicator count has sensitivity 1 (add/remove one site), i.e. 1/2 after centering, so it
    acts as a Gaussian mechanism of multiplier 2σ_b. σ_b = 0 means the count is released un-noised
    (not private): then the piece is only DP when adaptive clipping is off, and this returns σ
    (the caller must not enable adaptive clipping with σ_b = 0 and claim DP)."""
    sigma = _non_negative(noise_multiplier, "noise_multiplier")
    count = _non_negative(noise_multiplier_count, "noise_multiplier_count")
    if sigma == 0:
        return 0.0
    if count == 0:
        return sigma
    return float((sigma ** -2 + (2.0 * count) ** -2) ** -0.5)


def sum_noise_multiplier_for(effective: float, noise_multiplier_count: float) -> float:
    """The inverse of effective_noise_multiplier: the σ for the update sum that, together with a
    count noised by σ_b, gives the accountant's multiplier z: σ = (z⁻² − (2σ_b)⁻²)^(−1/2). Needs
    2σ_b > z (the count's noise alone must be weaker than the total)."""
    z = _positive(effective, "noise multiplier")
    count = _positive(noise_multiplier_count, "noise_multiplier_count")
    rest = z ** -2 - (2.0 * count) ** -2
    if rest <= 0:
        raise ConfigError(f"noise_multiplier_count={count} is too small for a total noise multiplier of {z}; "
                          f"it must exceed {z / 2}")
    return float(rest ** -0.5)


# ----------------------------------------------------------------------------------------------
# Fixed clipping


@dataclass(frozen=True)
class ClipUpdates:
    """Scale every update whose global L2 norm exceeds `clip_norm` down to exactly that norm
    (direction kept; updates within the bound are untouched). An "updates" piece, so it composes
    with any aggregator. On its own it bounds each site's influence but adds no noise: it is not
    differential privacy; dp_fedavg is."""

    clip_norm: float
    stage: ClassVar[StageName] = "updates"

    def __post_init__(self) -> None:
        _positive(self.clip_norm, "clip_updates clip_norm")

    def init(self, params: Params) -> State:
        return {}

    def apply(self, updates: Sequence[Update], state: State, ctx: RoundContext) -> tuple[list[Update], State]:
        out = [_scaled(u, clip_factor(update_norm(u), self.clip_norm)) for u in _unique(updates, "clip_updates")]
        return out, state

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """The clip factor applied to each site's update (1.0 = untouched)."""
        return {u.site_id: clip_factor(update_norm(u), self.clip_norm) for u in updates}


def clip_updates(clip_norm: float) -> ClipUpdates:
    return ClipUpdates(clip_norm)


# ----------------------------------------------------------------------------------------------
# Adaptive clipping


@dataclass(frozen=True)
class AdaptiveClip:
    """Clip every update to the current C (state "clip_norm", starting at `initial`), then move C
    toward the `target_quantile` of this round's update norms: C ← C·exp(−lr·(b̄ − γ)), b̄ the
    fraction of updates with norm ≤ C (before the step), noised by N(0, σ_b²) on the count when
    noise_multiplier_count = σ_b > 0 (needed for DP, Andrew et al. 2021). The next round clips with
    the new C. The count noise is drawn from ctx.rng.

    As an "updates" piece it knows only the updates it got, so b̄'s denominator is their number; in
    dp_fedavg(adaptive=True) it is the same fixed denominator as the mean.
    """

    initial: float = 1.0
    target_quantile: float = 0.5
    lr: float = 0.2
    noise_multiplier_count: float = 0.0
    stage: ClassVar[StageName] = "updates"

    def __post_init__(self) -> None:
        _positive(self.initial, "adaptive_clip initial")
        _check_adaptive(self.target_quantile, self.lr, self.noise_multiplier_count, "adaptive_clip")

    def init(self, params: Params) -> State:
        return _clip_state(float(self.initial))

    def apply(self, updates: Sequence[Update], state: State, ctx: RoundContext) -> tuple[list[Update], State]:
        updates = list(_unique(updates, "adaptive_clip"))
        c = _state_clip(state, float(self.initial), "adaptive_clip")
        norms = [update_norm(u) for u in updates]
        out = [_scaled(u, clip_factor(n, c)) for u, n in zip(updates, norms, strict=True)]
        if not updates:
            return out, _clip_state(c)
        below = _noisy_below_fraction(norms, c, len(updates), self.noise_multiplier_count, ctx.rng)
        return out, _clip_state(geometric_clip_update(c, below, self.target_quantile, self.lr))

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """The clip factor applied to each site's update with the C of `state` (the state that went
        into `apply`; None: the initial C)."""
        c = _state_clip(state, float(self.initial), "adaptive_clip")
        return {u.site_id: clip_factor(update_norm(u), c) for u in updates}


def adaptive_clip(initial: float = 1.0, target_quantile: float = 0.5, lr: float = 0.2,
                  noise_multiplier_count: float = 0.0) -> AdaptiveClip:
    return AdaptiveClip(initial, target_quantile, lr, noise_multiplier_count)


# ----------------------------------------------------------------------------------------------
# DP-FedAvg: clip, uniform fixed-denominator mean, Gaussian noise


@dataclass(frozen=True)
class DPFedAvg:
    """DP-FedAvg's aggregator (McMahan et al., 2018), site-level DP: each update is clipped to L2
    norm ≤ C, the clipped updates are summed, N(0, (σ·C)²) noise is added to every coordinate of the
    sum, and the result is divided by the denominator D:

        G = (Σᵢ clip(gᵢ, C) + N(0, σ²C²·I)) / D      ⇒  noise on the mean: N(0, (σ·C/D)²)

    D = `expected_sites` when given (McMahan's fixed-denominator estimator: with Poisson sampling of
    sites, the accountant's assumption, the number that answered stays hidden), else the number of
    updates n this round (a uniform mean; n is then revealed, which is fine when a fixed number of
    sites is selected and all answer). Every site weighs the same: num_examples is ignored.

    adaptive=True: C is not fixed but adapted as in AdaptiveClip (state "clip_norm", starting at
    `clip_norm`), with the noised count b̄ = (#{‖gᵢ‖ ≤ C} + N(0, σ_b²))/D. Give the accountant
    effective_noise_multiplier(σ, σ_b), not σ. With σ_b = 0 the count is exact: not DP.

    Site-level DP protects a whole site's participation. The noise is added here, at the
    coordinator, which therefore sees the un-noised clipped updates and their sum; secure
    aggregation (a separate piece) is what hides them from it. Draws from ctx.rng only (the count
    noise first, then the sum noise array by array in the order of ctx.params): one seed, one run.

    Streams: one float64 running sum the size of the model; updates are consumed once.
    """

    clip_norm: float
    noise_multiplier: float
    adaptive: bool = False
    target_quantile: float = 0.5
    lr: float = 0.2
    noise_multiplier_count: float = 0.0
    expected_sites: float | None = None
    stage: ClassVar[StageName] = "aggregate_updates"

    def __post_init__(self) -> None:
        _positive(self.clip_norm, "dp_fedavg clip_norm")
        _non_negative(self.noise_multiplier, "dp_fedavg noise_multiplier")
        if not isinstance(self.adaptive, bool):
            raise ConfigError(f"dp_fedavg adaptive must be true or false, not {self.adaptive!r}")
        _check_adaptive(self.target_quantile, self.lr, self.noise_multiplier_count, "dp_fedavg")
        if self.expected_sites is not None:
            _positive(self.expected_sites, "dp_fedavg expected_sites")
        if self.adaptive and self.noise_multiplier > 0 and self.noise_multiplier_count == 0:
            raise ConfigError("dp_fedavg adaptive=True with noise on the sum also needs noise_multiplier_count > 0: "
                              "the exact count of clipped sites would otherwise leak (Andrew et al. use about "
                              "expected_sites / 20)")

    def init(self, params: Params) -> State:
        return _clip_state(float(self.clip_norm)) if self.adaptive else {}

    def current_clip(self, state: State | None) -> float:
        """The C this round clips with: the state's when adaptive, else the fixed clip_norm."""
        return _state_clip(state, float(self.clip_norm), "dp_fedavg") if self.adaptive else float(self.clip_norm)

    def noise_std(self, clip_norm: float, n: int) -> float:
        """Standard deviation of the noise on each coordinate of the mean: σ·C/D."""
        return float(self.noise_multiplier) * clip_norm / self.denominator(n)

    def denominator(self, n: int) -> float:
        return float(self.expected_sites) if self.expected_sites is not None else float(n)

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        c = self.current_clip(state)
        like = ctx.params
        total = {k: np.zeros(np.shape(v), np.float64) for k, v in like.items()}
        norms: list[float] = []
        for update in _unique(updates, "dp_fedavg"):
            if update.grad.keys() != like.keys():
                raise ParamsError(f"update from site '{update.site_id}' holds arrays {sorted(update.grad)}; "
                                  f"expected {sorted(like)}")
            norm = update_norm(update)
            factor = clip_factor(norm, c)
            for k, acc in total.items():
                value = np.asarray(update.grad[k])
                if value.shape != acc.shape:
                    raise ParamsError(f"update from site '{update.site_id}' array '{k}' has shape {value.shape}; "
                                      f"expected {acc.shape}")
                acc += value.astype(np.float64, copy=False) * factor
            norms.append(norm)
            del update
        n = len(norms)
        if n == 0:
            raise ValueError("dp_fedavg needs at least one update")
        d = self.denominator(n)
        new_state = state
        if self.adaptive:
            below = _noisy_below_fraction(norms, c, d, float(self.noise_multiplier_count), ctx.rng)
            new_state = _clip_state(geometric_clip_update(c, below, float(self.target_quantile), float(self.lr)))
        sum_std = float(self.noise_multiplier) * c
        out: Params = {}
        for k, acc in total.items():
            if sum_std > 0:
                acc += ctx.rng.normal(0.0, sum_std, size=acc.shape)
            out[k] = (acc / d).astype(like[k].dtype)
        return out, new_state

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """The clip factor applied to each site's update (1.0 = untouched); when adaptive, with the
        C of `state` (the state that went into `apply`; None: the initial C)."""
        c = self.current_clip(state)
        return {u.site_id: clip_factor(update_norm(u), c) for u in updates}


def dp_fedavg(clip_norm: float, noise_multiplier: float, adaptive: bool = False, target_quantile: float = 0.5,
              lr: float = 0.2, noise_multiplier_count: float = 0.0,
              expected_sites: float | None = None) -> DPFedAvg:
    return DPFedAvg(clip_norm, noise_multiplier, adaptive, target_quantile, lr, noise_multiplier_count,
                    expected_sites)


def clip_norm_of(state: Mapping[str, np.ndarray]) -> float | None:
    """The adaptive C held in a piece state (None when the state has none), for reports."""
    if CLIP_KEY not in state:
        return None
    return float(np.asarray(state[CLIP_KEY]).ravel()[0])


# ----------------------------------------------------------------------------------------------
# Site-level DP in a run: calibrated settings, and an aggregator with its own accountant and budget

#: Under adaptive clipping, the share of the privacy budget (in RDP terms, 1/z²) the noised count
#: of clipped sites takes; the sum of the updates takes the rest.
COUNT_SHARE = 0.1
#: Andrew et al.'s learning rate for the geometric clip update.
CLIP_LR = 0.2


class PrivacyBudgetSpent(FedcareError):
    """Another round would spend more site-level privacy than the run's budget: the run stops."""


@dataclass(frozen=True)
class SiteDPSettings:
    """The numbers both sides of a site-level DP round need: the clip norm C (the starting C when
    `target_quantile` is set, i.e. adaptive clipping), σ for the noise on the sum of clipped updates
    (N(0, (σC)²)), and σ_b for the noise on the count of unclipped sites (adaptive only)."""

    clip_norm: float
    noise_multiplier: float
    target_quantile: float | None = None
    noise_multiplier_count: float = 0.0
    lr: float = CLIP_LR

    @property
    def adaptive(self) -> bool:
        return self.target_quantile is not None

    @property
    def effective_noise_multiplier(self) -> float:
        """The σ the accountant sees: σ, or σ combined with the count's σ_b under adaptive clipping."""
        return effective_noise_multiplier(self.noise_multiplier, self.noise_multiplier_count) \
            if self.adaptive else float(self.noise_multiplier)

    def central(self) -> DPFedAvg:
        """DP-FedAvg with the noise added by the coordinator (no secure aggregation)."""
        return dp_fedavg(self.clip_norm, self.noise_multiplier, adaptive=self.adaptive,
                         target_quantile=0.5 if self.target_quantile is None else self.target_quantile,
                         lr=self.lr, noise_multiplier_count=self.noise_multiplier_count)


def calibrate_site_dp(epsilon: float, delta: float, clip_norm: float, target_quantile: float | None,
                      num_sites: int, sites_per_round: int, rounds: int
                      ) -> tuple[SiteDPSettings, FixedSizeSiteAccountant]:
    """σ (and σ_b) so that `rounds` rounds of `sites_per_round` of `num_sites` sites spend at most ε.

    The accountant's multiplier z is calibrated first. Adaptive clipping splits it: the count gets
    COUNT_SHARE of 1/z², i.e. σ_b = z/(2√COUNT_SHARE), and the sum the rest (Andrew et al., Thm 1)."""
    _positive(clip_norm, "site_dp_clip")
    target = FixedSizeSiteAccountant.calibrated(epsilon, delta, num_sites, sites_per_round, rounds)
    z = target.noise_multiplier
    if target_quantile is None:
        settings = SiteDPSettings(float(clip_norm), z)
    else:
        _check_adaptive(target_quantile, CLIP_LR, 0.0, "site_dp_clip_quantile")
        count = z / (2.0 * math.sqrt(COUNT_SHARE))
        sigma = sum_noise_multiplier_for(z, count)
        while effective_noise_multiplier(sigma, count) < z:  # float round trip: never below the target
            sigma = math.nextafter(sigma, math.inf)
        settings = SiteDPSettings(float(clip_norm), sigma, float(target_quantile), count)
    accountant = FixedSizeSiteAccountant(settings.effective_noise_multiplier, num_sites, sites_per_round, delta)
    return settings, accountant


ROUNDS_KEY, USED_CLIP_KEY = "dp_rounds", "dp_clip"


@dataclass(frozen=True)
class SiteLevelDP:
    """Wraps the aggregator that releases a round's noised mean (DP-FedAvg at the coordinator, or
    the secure mean of sites that noised their own contributions) with its accountant and budget.

    Its state counts the rounds released ("dp_rounds") and the C used last ("dp_clip"), beside the
    inner aggregator's, so a resumed run keeps counting. A round that would take ε past the budget
    is refused before anything is released (PrivacyBudgetSpent): the run stops rather than overspend.
    `round_metrics` gives ε after the round, C and σ for metrics.jsonl."""

    aggregator: object
    settings: SiteDPSettings
    accountant: FixedSizeSiteAccountant
    epsilon_max: float
    stage: ClassVar[StageName] = "aggregate_updates"

    def init(self, params: Params) -> State:
        return {**self.aggregator.init(params), ROUNDS_KEY: np.array([0.0]),
                USED_CLIP_KEY: np.array([self.settings.clip_norm])}

    def _inner(self, state: State) -> State:
        return {k: v for k, v in state.items() if k not in (ROUNDS_KEY, USED_CLIP_KEY)}

    def rounds(self, state: State) -> int:
        return int(np.asarray(state.get(ROUNDS_KEY, [0.0])).ravel()[0])

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        r = self.rounds(state) + 1
        spent = self.accountant.epsilon(r)
        if spent > self.epsilon_max:
            raise PrivacyBudgetSpent(
                f"round {ctx.round} would take site-level ε to {spent:.4g}, past the budget {self.epsilon_max:g} "
                f"(ε after {r - 1} rounds: {self.accountant.epsilon(r - 1):.4g}); the run stops here")
        inner = self._inner(state)
        clip = self.aggregator.current_clip(inner)
        value, inner = self.aggregator.apply(updates, inner, ctx)
        return value, {**inner, ROUNDS_KEY: np.array([float(r)]), USED_CLIP_KEY: np.array([clip])}

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """The inner aggregator's clip factors, where it can see the updates (not under secure aggregation)."""
        fn = getattr(self.aggregator, "decisions", None)
        return fn(updates, ctx, self._inner(state or {})) if callable(fn) else {}

    def broadcast(self, state: State) -> Params:
        fn = getattr(self.aggregator, "broadcast", None)
        return fn(self._inner(state)) if callable(fn) else {}

    def round_metrics(self, state: State) -> dict[str, float]:
        """ε spent after the rounds released so far, the C this round clipped with, and σ."""
        return {"site_epsilon": self.accountant.epsilon(self.rounds(state)),
                "site_clip": float(np.asarray(state[USED_CLIP_KEY]).ravel()[0]),
                "site_noise_multiplier": float(self.settings.noise_multiplier)}


def site_level_dp(aggregator: object, settings: SiteDPSettings, accountant: FixedSizeSiteAccountant,
                  epsilon_max: float) -> SiteLevelDP:
    return SiteLevelDP(aggregator, settings, accountant, epsilon_max)
