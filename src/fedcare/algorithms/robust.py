"""Robust aggregation: rules that keep a few faulty or hostile sites from steering the model.

Each aggregator here ignores `num_examples` (a site reports its own count, so a hostile site could
claim a huge one) and treats every answering site alike. Each also has
`decisions(updates, ctx, state=None) -> {site_id: float}` saying what it did to every site this
round, for the anomaly report; the number means, per rule (see each class):

    coordinate_median  share of coordinates where the site's value was the median (or one of the
                       middle two when the count is even)
    trimmed_mean       share of coordinates where the site's value was kept (not trimmed)
    krum               1/m if the site was picked, 0 otherwise (these sum to 1)
    norm_bound         the scale factor applied to the site's update (1.0 = untouched)
    centered_clip      the site's clip factor, averaged over the iterations (1.0 = never clipped)

Call `decisions` with the same updates, ctx (and, for centered_clip, the state that went into
`apply`) as the round itself. Ties between equal values are broken by the order of the updates.

These rules refuse updates holding NaN or infinite values (ParamsError naming the site), the same
refusal the wire check (`validate_params`) makes, rather than silently corrupting the model.
Pure numpy, no I/O.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedcare.algorithms.pieces import RoundContext, StageName, State
from fedcare.core.errors import ConfigError, ParamsError
from fedcare.core.params import Params
from fedcare.core.update import Update

# beta·n is floored after adding this, so that e.g. 0.29·100 = 28.999999999999996 trims 29, not 28.
_FLOOR_EPS = 1e-9


# ----------------------------------------------------------------------------------------------
# Flattening: every update becomes one float64 row, in the order of the names of ctx.params.


def _check_layout(grad: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray], site_id: str) -> None:
    for name, ref in like.items():
        if name not in grad:
            raise ParamsError(f"update from site '{site_id}' lacks array '{name}'")
        shape = np.shape(grad[name])
        if shape != ref.shape:
            raise ParamsError(f"update from site '{site_id}' array '{name}' has shape {shape}; expected {ref.shape}")
    extra = [k for k in grad if k not in like]
    if extra:
        raise ParamsError(f"update from site '{site_id}' holds unexpected array '{extra[0]}'")


def _flatten(grad: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray], site_id: str) -> np.ndarray:
    _check_layout(grad, like, site_id)
    parts = [np.asarray(grad[name]).astype(np.float64, copy=False).ravel() for name in like]
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def _unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> Params:
    out: Params = {}
    start = 0
    for name, ref in like.items():
        stop = start + ref.size
        out[name] = vector[start:stop].reshape(ref.shape).astype(ref.dtype)
        start = stop
    return out


def _stack(updates: Iterable[Update], like: Mapping[str, np.ndarray], rule: str) -> tuple[list[str], np.ndarray]:
    """(site ids, n × d float64 matrix); refuses no updates, duplicate sites and non-finite values."""
    ids: list[str] = []
    seen: set[str] = set()
    rows: list[np.ndarray] = []
    for update in updates:
        if update.site_id in seen:
            raise ParamsError(f"{rule} got two updates from site '{update.site_id}' in one round")
        row = _flatten(update.grad, like, update.site_id)
        if not np.all(np.isfinite(row)):
            raise ParamsError(f"update from site '{update.site_id}' holds NaN or infinite values; "
                              f"{rule} refuses it (the wire check drops such updates before aggregation)")
        ids.append(update.site_id)
        seen.add(update.site_id)
        rows.append(row)
    if not rows:
        raise ValueError(f"{rule} needs at least one update")
    return ids, np.stack(rows)


_NETWORK_ROWS = 32  # up to this many rows a compare-exchange network beats np.median's per-column selection


def median_of_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """The element-wise median of equal-length 1-D arrays, in float64: `np.median(np.stack(rows)
    .astype(np.float64), axis=0)` bit for bit. np.median selects along the short axis one column at a
    time (about 0.2 µs a column: 0.2 s for 4 updates of a 1M-parameter model); with few rows a
    sorting network over whole arrays (exact min/max, in the rows' own dtype: Batcher's odd-even
    merge sort, 5 compare-exchanges for 4 rows, 19 for 8) is 10-20x faster. The caller's arrays are
    only read: each row is copied when a compare-exchange first writes it. Many rows: np.median."""
    n = len(rows)
    if n > _NETWORK_ROWS:
        return np.median(np.stack(rows).astype(np.float64), axis=0)
    s = list(rows)
    owned = [False] * n  # s[i] is an array of this call's (not the caller's): it may be written
    spare = None
    for i, j in _merge_network(n):
        low = np.minimum(s[i], s[j], out=spare)
        high = np.maximum(s[i], s[j], out=s[j] if owned[j] else None)
        spare = s[i] if owned[i] else None
        s[i], s[j] = low, high
        owned[i] = owned[j] = True
    k = n // 2
    return np.array(s[k], np.float64) if n % 2 else (s[k - 1].astype(np.float64) + s[k]) / 2


@functools.cache
def _merge_network(n: int) -> tuple[tuple[int, int], ...]:
    """The compare-exchanges of Batcher's odd-even merge sort for n inputs, in order: the network for
    the next power of two with every pair that touches a position past n left out (as if those held
    +inf, which never moves)."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


def _shares(order_rows: np.ndarray, n: int, d: int) -> np.ndarray:
    """How often each site index appears in `order_rows` (rows of argsort indices), divided by d."""
    if d == 0:
        return np.zeros(n, np.float64)
    return np.bincount(order_rows.ravel(), minlength=n) / d


# ----------------------------------------------------------------------------------------------
# Coordinate-wise rules


@dataclass(frozen=True)
class CoordinateMedian:
    """G = coordinate-wise median of the updates: one site can move a coordinate only within the
    range of the honest values, whatever it sends (Yin et al., ICML 2018).

    Needs all updates in memory (an n × model-size float64 matrix).
    """

    stage: ClassVar[StageName] = "aggregate_updates"

    def init(self, params: Params) -> State:
        return {}

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        _, x = _stack(updates, ctx.params, "coordinate_median")
        return _unflatten(np.median(x, axis=0), ctx.params), state

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """Share of coordinates where the site's value was the median (odd n: the middle value; even
        n: one of the middle two, which are averaged). Odd n: the shares sum to 1; even n: to 2."""
        ids, x = _stack(updates, ctx.params, "coordinate_median")
        n, d = x.shape
        order = np.argsort(x, axis=0, kind="stable")
        middle = order[[(n - 1) // 2]] if n % 2 else order[[n // 2 - 1, n // 2]]
        return dict(zip(ids, _shares(middle, n, d).tolist()))


def coordinate_median() -> CoordinateMedian:
    return CoordinateMedian()


@dataclass(frozen=True)
class TrimmedMean:
    """G = per coordinate, the mean of the values left after dropping the k = ⌊β·n⌋ largest and the k
    smallest: up to k hostile sites cannot push a coordinate outside the honest range (Yin et al., 2018).

    0 ≤ β < 0.5 (β = 0 is the plain uniform mean). Needs all updates in memory (n × model size).
    """

    beta: float
    stage: ClassVar[StageName] = "aggregate_updates"

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, numbers.Real) and math.isfinite(self.beta) and 0.0 <= self.beta < 0.5):
            raise ConfigError(f"trimmed_mean beta must be a number in [0, 0.5), not {self.beta!r}")

    def init(self, params: Params) -> State:
        return {}

    def trimmed(self, n: int) -> int:
        """k, the number of values dropped at each end of every coordinate for n updates."""
        k = int(math.floor(self.beta * n + _FLOOR_EPS))
        if n - 2 * k < 1:
            raise ConfigError(f"trimmed_mean beta={self.beta} drops {k} values at each end of {n}; "
                              "nothing would remain; lower beta")
        return k

    def _kept_order(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        n = x.shape[0]
        k = self.trimmed(n)
        return np.argsort(x, axis=0, kind="stable")[k:n - k], k

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        _, x = _stack(updates, ctx.params, "trimmed_mean")
        n = x.shape[0]
        k = self.trimmed(n)
        kept = np.sort(x, axis=0)[k:n - k]
        return _unflatten(kept.mean(axis=0), ctx.params), state

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """Share of coordinates where the site's value was kept (1.0 = never trimmed). The shares sum
        to n − 2k."""
        ids, x = _stack(updates, ctx.params, "trimmed_mean")
        kept, _ = self._kept_order(x)
        return dict(zip(ids, _shares(kept, *x.shape).tolist()))


def trimmed_mean(beta: float) -> TrimmedMean:
    return TrimmedMean(beta)


# ----------------------------------------------------------------------------------------------
# Krum


@dataclass(frozen=True)
class Krum:
    """Krum / multi-Krum (Blanchard et al., NeurIPS 2017): keep the update(s) closest to their
    n − f − 2 nearest neighbours, so up to f hostile updates far from the honest cluster are ignored.

    score(i) = Σ of the squared L2 distances from update i to its n − f − 2 nearest other updates;
    G = the mean of the m updates with the lowest scores (m = 1: Krum; m > 1: multi-Krum; m = None:
    n − f, every update but the f most suspicious). Krum needs n > 2f + 2: with fewer updates (sites
    refused or silent) f is lowered for that round to the most it can tolerate. m ≤ n − f. Needs all updates in memory (n × model size, plus n × n
    distances).
    """

    f: int
    m: int | None = 1
    stage: ClassVar[StageName] = "aggregate_updates"

    def __post_init__(self) -> None:
        if not (isinstance(self.f, (int, np.integer)) and not isinstance(self.f, bool) and self.f >= 0):
            raise ConfigError(f"krum f (the number of hostile sites to tolerate) must be an integer >= 0, "
                              f"not {self.f!r}")
        if self.m is not None and not (isinstance(self.m, (int, np.integer)) and not isinstance(self.m, bool)
                                       and self.m >= 1):
            raise ConfigError(f"krum m (the number of updates to average) must be an integer >= 1, not {self.m!r}")

    def init(self, params: Params) -> State:
        return {}

    def check_sites(self, n: int) -> None:
        """Refuse a plan of n updates per round that Krum cannot defend: with n ≤ 2f + 2 the round would
        lower f (and with f = 0 and m unset Krum averages every update: a plain mean, no defence)."""
        if n <= 2 * self.f + 2:
            most = (n - 3) // 2
            fix = f"set krum_f {most} with krum_m 1, or" if most >= 0 else "use"
            raise ConfigError(f"krum with krum_f={self.f} needs more than {2 * self.f + 2} sites per round "
                              f"(n > 2f + 2) and this run has {n}; {fix} aggregator median or trimmed-mean")
        if (n - self.f if self.m is None else self.m) >= n:
            raise ConfigError(f"krum with krum_f={self.f} and krum_m={self.m} averages all {n} updates: a plain "
                              "mean that defends nothing; set krum_f >= 1 or krum_m below the number of sites")

    def tolerated(self, n: int) -> int:
        """f for a round of n updates: the configured f, lowered to the most Krum can tolerate
        (n > 2f + 2) when refusals or dropouts leave fewer updates, so the round goes on."""
        return min(self.f, max(0, (n - 3) // 2))

    def picks(self, n: int) -> int:
        """How many updates are averaged for a round of n (m ≤ n − f)."""
        f = self.tolerated(n)
        m = n - f if self.m is None else self.m
        if m > n - f:
            raise ConfigError(f"krum m={m} must be at most n − f = {n - f} for {n} updates and f={f}")
        return m

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Krum score of every row of the n × d matrix x."""
        n = x.shape[0]
        neighbours = max(n - self.tolerated(n) - 2, 0)
        out = np.empty(n, np.float64)
        for i in range(n):
            dist = np.sum((x - x[i]) ** 2, axis=1)
            dist = np.delete(dist, i)
            out[i] = np.sum(np.sort(dist)[:neighbours])
        return out

    def selected(self, x: np.ndarray) -> np.ndarray:
        """Row indices of the m lowest scores (ties: the earlier update)."""
        return np.argsort(self.scores(x), kind="stable")[:self.picks(x.shape[0])]

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        _, x = _stack(updates, ctx.params, "krum")
        return _unflatten(x[self.selected(x)].mean(axis=0), ctx.params), state

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """1/m for each picked site, 0.0 for the others."""
        ids, x = _stack(updates, ctx.params, "krum")
        picked = set(self.selected(x).tolist())
        return {sid: (1.0 / len(picked) if i in picked else 0.0) for i, sid in enumerate(ids)}


def krum(f: int, m: int | None = 1) -> Krum:
    return Krum(f, m)


# ----------------------------------------------------------------------------------------------
# Norm bounding (an updates piece: composes with any aggregator)


def _norm(grad: Mapping[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(np.asarray(v, np.float64)))) for v in grad.values())))


@dataclass(frozen=True)
class NormBound:
    """Scale every update whose global L2 norm exceeds `multiple` × this round's median norm down to
    that bound (direction kept): a site cannot win by sending a huge update, and the bound adapts
    to the model instead of needing a hand-set constant. An "updates" piece, so it composes with any
    aggregator: chain(norm_bound(), weighted_mean(), sgd()).

    Needs every update's norm before scaling any (the updates stage holds the list anyway; the
    extra memory is one float per site).
    """

    multiple: float = 1.0
    stage: ClassVar[StageName] = "updates"

    def __post_init__(self) -> None:
        if not (isinstance(self.multiple, numbers.Real) and math.isfinite(self.multiple) and self.multiple > 0):
            raise ConfigError(f"norm_bound multiple must be a finite number > 0, not {self.multiple!r}")

    def init(self, params: Params) -> State:
        return {}

    def factors(self, updates: Sequence[Update]) -> list[float]:
        """The scale factor of every update: min(1, multiple × median norm / norm); 1.0 for norm 0."""
        norms = []
        for update in updates:
            norm = _norm(update.grad)
            if not math.isfinite(norm):
                raise ParamsError(f"update from site '{update.site_id}' holds NaN or infinite values; "
                                  "norm_bound refuses it (the wire check drops such updates)")
            norms.append(norm)
        if not norms:
            return []
        bound = self.multiple * float(np.median(norms))
        return [1.0 if norm <= bound else bound / norm for norm in norms]

    def apply(self, updates: Sequence[Update], state: State, ctx: RoundContext) -> tuple[list[Update], State]:
        updates = list(updates)
        out = []
        for update, factor in zip(updates, self.factors(updates), strict=True):
            if factor == 1.0:
                out.append(update)
            else:
                grad = {k: (np.asarray(v) * factor).astype(np.asarray(v).dtype) for k, v in update.grad.items()}
                out.append(Update(update.site_id, grad, update.num_examples, dict(update.metrics)))
        return out, state

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """The scale factor applied to each site's update (1.0 = untouched)."""
        updates = list(updates)
        return {u.site_id: factor for u, factor in zip(updates, self.factors(updates), strict=True)}


def norm_bound(multiple: float = 1.0) -> NormBound:
    return NormBound(multiple)


# ----------------------------------------------------------------------------------------------
# Centered clipping


@dataclass(frozen=True)
class CenteredClip:
    """Centered clipping (Karimireddy et al., ICML 2021), the trust-based rule: start from the last
    round's aggregate v and repeat `iterations` times

        v ← v + mean_i( clip(g_i − v, tau) ),   clip(z, tau) = z · min(1, tau / ‖z‖),

    so each site pulls v by at most tau/n per iteration, however far away it is. v is kept in
    state ("v/<name>", zeros at init) for the next round. The aggregate moves at most
    iterations × tau from the last one per round: pick tau on the scale of honest update norms, or
    leave it None to use, each round, the median distance of the updates from v (so a minority of
    far-away updates is clipped and the honest majority is not).

    Needs all updates in memory (every iteration revisits every update).
    """

    tau: float | None = None
    iterations: int = 3
    stage: ClassVar[StageName] = "aggregate_updates"

    def __post_init__(self) -> None:
        if self.tau is not None and not (isinstance(self.tau, numbers.Real) and math.isfinite(self.tau) and self.tau > 0):
            raise ConfigError(f"centered_clip tau (the clipping radius) must be a finite number > 0, "
                              f"not {self.tau!r}")
        if not (isinstance(self.iterations, (int, np.integer)) and not isinstance(self.iterations, bool)
                and self.iterations >= 1):
            raise ConfigError(f"centered_clip iterations must be an integer >= 1, not {self.iterations!r}")

    def init(self, params: Params) -> State:
        return {f"v/{k}": np.zeros_like(v) for k, v in params.items()}

    def _run(self, x: np.ndarray, state: State | None, like: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(final v, mean clip factor per row)."""
        if state:
            missing = [k for k in like if f"v/{k}" not in state]
            if missing:
                raise ParamsError(f"centered_clip state lacks 'v/{missing[0]}'; "
                                  "start from centered_clip(...).init(params)")
            v = np.concatenate([np.asarray(state[f"v/{k}"], np.float64).ravel() for k in like])
            if v.size != x.shape[1]:
                raise ParamsError(f"centered_clip state holds {v.size} values; the params hold {x.shape[1]}")
        else:
            v = np.zeros(x.shape[1], np.float64)
        factor_sum = np.zeros(x.shape[0], np.float64)
        tau = self.tau
        if tau is None:
            tau = float(np.median(np.sqrt(np.sum((x - v) ** 2, axis=1)))) or np.inf
        for _ in range(self.iterations):
            diff = x - v
            norms = np.sqrt(np.sum(diff * diff, axis=1))
            factors = np.where(norms > tau, tau / np.maximum(norms, tau), 1.0)
            factor_sum += factors
            v = v + np.mean(diff * factors[:, None], axis=0)
        return v, factor_sum / self.iterations

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        _, x = _stack(updates, ctx.params, "centered_clip")
        v, _ = self._run(x, state, ctx.params)
        aggregate = _unflatten(v, ctx.params)
        return aggregate, {f"v/{k}": a.copy() for k, a in aggregate.items()}

    def decisions(self, updates: Sequence[Update], ctx: RoundContext, state: State | None = None) -> dict[str, float]:
        """Each site's clip factor min(1, tau/‖g_i − v‖) averaged over the iterations (1.0 = never
        clipped). Pass the state that went into `apply` this round (None: the init state, zeros)."""
        ids, x = _stack(updates, ctx.params, "centered_clip")
        _, factors = self._run(x, state, ctx.params)
        return dict(zip(ids, factors.tolist()))


def centered_clip(tau: float | None = None, iterations: int = 3) -> CenteredClip:
    return CenteredClip(tau, iterations)


# ----------------------------------------------------------------------------------------------
# Report


def update_report(updates: Iterable[Update], aggregate: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{site_id: {"norm": ‖g‖, "cosine": cos(g, aggregate)}} for the anomaly report: a hostile or
    broken site shows up as an outlying norm or a low or negative cosine. Cosine is 0.0 when either
    vector is zero."""
    sums = report_products(list(updates), aggregate)
    return {site: {"norm": norm, "cosine": _cosine(dot, norm, sums.aggregate_norm)}
            for site, norm, dot in zip(sums.sites, sums.norms, sums.with_aggregate, strict=True)}


@dataclass(frozen=True)
class ReportProducts:
    """The float64 norms and dot products the anomaly report is made of, per update in order."""

    sites: list[str]
    norms: list[float]                         # ‖gᵢ‖
    with_aggregate: list[float]                # gᵢ·a
    aggregate_norm: float                      # ‖a‖
    with_consensus: list[float] | None = None  # gᵢ·c, c the coordinate-wise median of the gᵢ
    consensus_norm: float | None = None        # ‖c‖

    def cosines(self, dots: Sequence[float], other_norm: float) -> list[float]:
        return [_cosine(d, n, other_norm) for d, n in zip(dots, self.norms, strict=True)]


def _cosine(dot: float, norm: float, other_norm: float) -> float:
    return float(dot / (norm * other_norm)) if norm > 0 and other_norm > 0 else 0.0


_CHUNK = 1 << 16


def report_products(updates: Sequence[Update], aggregate: Mapping[str, np.ndarray],
                    consensus: bool = False) -> ReportProducts:
    """Every product the report needs, in float64, in one pass over the model a chunk at a time;
    with `consensus`, also against the updates' coordinate-wise median (`median_of_rows`), made a
    chunk at a time in the same pass and never held whole.

    Why one pass: the report runs every round on model-sized updates (4 × 1M parameters at a
    networked coordinator), and converting each update's chunk to float64 once, into buffers kept
    for the whole pass, costs less than the products; a pass per product converted every chunk up
    to six times. The sums are the same as one product at a time: per array, per chunk of _CHUNK
    elements, float64 np.dot added in order."""
    for update in updates:
        _check_layout(update.grad, aggregate, update.site_id)
    n = len(updates)
    squares, with_a, with_c = [0.0] * n, [0.0] * n, [0.0] * n
    a_square = c_square = 0.0
    largest = min(_CHUNK, max((np.size(v) for v in aggregate.values()), default=0))
    rows = np.empty((n, largest), np.float64)  # this chunk of every update, in float64
    a_buf = np.empty(largest, np.float64)
    for name, ref in aggregate.items():
        a = np.asarray(ref).ravel()
        grads = [np.asarray(u.grad[name]).ravel() for u in updates]
        for i in range(0, a.size, _CHUNK):
            j = min(i + _CHUNK, a.size)
            a_part = a_buf[:j - i]
            np.copyto(a_part, a[i:j])
            a_square += float(np.dot(a_part, a_part))
            parts = rows[:, :j - i]
            for k, g in enumerate(grads):
                np.copyto(parts[k], g[i:j])
                squares[k] += float(np.dot(parts[k], parts[k]))
                with_a[k] += float(np.dot(parts[k], a_part))
            if consensus and n:
                c_part = median_of_rows([g[i:j] for g in grads])
                c_square += float(np.dot(c_part, c_part))
                for k in range(n):
                    with_c[k] += float(np.dot(parts[k], c_part))
    norms = [float(np.sqrt(x)) for x in squares]
    sites = [u.site_id for u in updates]
    if not consensus:
        return ReportProducts(sites, norms, with_a, float(np.sqrt(a_square)))
    return ReportProducts(sites, norms, with_a, float(np.sqrt(a_square)), with_c, float(np.sqrt(c_square)))
