"""Secure aggregation in a run: the coordinator learns the SUM of the selected sites' updates, never
one site's update (Bonawitz et al., CCS 2017; the protocol itself is fedcare.algorithms.secagg).

Each round, among the selected sites that trained:

  site side (SecureSiteRound)           train → site_vector: weight the update (wᵢ·xᵢ, with wᵢ as
                                        one more coordinate), or, under site-level DP, clip it to
                                        the broadcast C, add this site's share of the Gaussian noise
                                        and send weight 1 → advertise keys → seal Shamir shares →
                                        mask the vector → answer the unmask request.
  coordinator side (SecureCoordinatorRound)
                                        route keys and sealed shares → collect masked vectors (and
                                        each site's scalar metrics) → unmask the sum, recovering the
                                        masks of sites that dropped after masking → ONE Update.

Both sides speak bytes (secagg.encode_message), so a network transport calls the same methods with
what it receives; `SecureAggregation` runs them in this process for SimulationTransport and counts
every message's bytes. The engine gets one update, site id SUM_SITE_ID, holding Σ wᵢxᵢ and Σ wᵢ in
its metrics; the strategy's SecureMean divides. Each site's scalar metrics (train_loss, ...) travel
in the clear beside its masked vector and reach metrics.jsonl.

Site-level DP with secure aggregation: the noise is added by the sites, so no one ever holds an
unnoised sum. Every site adds N(0, σ²C²/t) to each coordinate, t the protocol's threshold: the
coordinator cannot unmask a sum of fewer than t sites (and an honest site refuses to help), so any
sum it can release holds at least t shares, i.e. noise of standard deviation ≥ σC, as the accountant
assumes, whichever sites dropped. t = selected − secagg_max_dropouts; the price of tolerating
dropouts is noise √(selected/t) times larger when nobody drops.

Randomness: keys and masks always come from the OS (the unmasked sum is exact whatever the masks,
so runs stay reproducible). The DP noise comes from the OS unless `SecurePlan.noise_seed` is set,
which simulations do for bit-for-bit reproducible runs; a deployed site must never use a seed the
coordinator knows, or the coordinator could subtract the noise.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedcare.algorithms.privacy import clip_factor
from fedcare.algorithms.secagg import (
    SecurePlan,
    check_threshold,
    CLIP_BROADCAST,
    SUM_SITE_ID,
    KeyAdvert,
    MaskedInput,
    Roster,
    SealedShares,
    SecAggCoordinator,
    SecAggError,
    SecAggSite,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from fedcare.core.compression import LEVELS
from fedcare.core.errors import ParamsError, SiteDeclined
from fedcare.core.messages import FitRequest
from fedcare.core.params import Params
from fedcare.core.update import Update
from fedcare.federation.transport import FitResult
from fedcare.transports.simulation import Site, SimulationTransport

__all__ = [
    "Layout",
    "SecurePlan",
    "SecureFitResult",
    "SecureSiteRound",
    "SecureCoordinatorRound",
    "SecureAggregation",
    "SecureSites",
    "check_threshold",
    "site_vector",
    "split_broadcast",
    "sum_update",
    "secure_transport",
]


@dataclass(frozen=True)
class Layout:
    """How the model's arrays (in order) and the extra coordinates become one flat vector and back."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    extras: tuple[str, ...]

    @classmethod
    def of(cls, params: Params, extras: Sequence[str]) -> Layout:
        """Arrays in name order: the same vector at the coordinator and at a site, whichever order
        each holds its params in (a decoded message lists names as the file does)."""
        names = tuple(sorted(params))
        return cls(names, tuple(tuple(np.shape(params[k])) for k in names), tuple(extras))

    @property
    def model_size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def length(self) -> int:
        return self.model_size + len(self.extras)

    def flatten(self, grad: Params, extra: Mapping[str, float]) -> np.ndarray:
        if set(grad) != set(self.names):
            raise ParamsError(f"the update holds arrays {sorted(grad)}; the round expects {sorted(self.names)}")
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            value = np.asarray(grad[name], np.float64)
            if value.shape != shape:
                raise ParamsError(f"update array '{name}' has shape {value.shape}; expected {shape}")
            parts.append(value.reshape(-1))
        parts.append(np.array([float(extra[e]) for e in self.extras], np.float64))
        return np.concatenate(parts)

    def unflatten(self, vector: np.ndarray) -> tuple[Params, dict[str, float]]:
        if vector.shape != (self.length,):
            raise SecAggError(f"a vector of shape {vector.shape} does not fit the round's layout ({self.length},)")
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            n = math.prod(shape)
            out[name] = vector[i:i + n].reshape(shape).copy()
            i += n
        return out, {e: float(vector[i + j]) for j, e in enumerate(self.extras)}


# ---------------------------------------------------------------------------------------------
# Site side


def split_broadcast(message: Params) -> tuple[Params, float | None]:
    """The model's params, and the clip norm C broadcast beside them under site-level DP (else None)."""
    params = {k: v for k, v in message.items() if k != CLIP_BROADCAST}
    clip = message.get(CLIP_BROADCAST)
    return params, None if clip is None else float(np.asarray(clip).ravel()[0])


def site_vector(update: Update, layout: Layout, plan: SecurePlan, threshold: int, clip_norm: float | None,
                rng: np.random.Generator) -> np.ndarray:
    """A site's contribution before masking (the coordinator never sees it).

    Without DP: wᵢ·xᵢ and wᵢ, so the sum divided by its weight coordinate is the weighted mean.
    With site-level DP: clip(xᵢ, C) + N(0, σ²C²/t) per coordinate and weight 1; under adaptive
    clipping also 1[‖xᵢ‖ ≤ C] + N(0, σ_b²/t). Any sum the protocol unmasks holds ≥ t such shares."""
    flat = layout.flatten(update.grad, {e: 0.0 for e in layout.extras})
    model = flat[:layout.model_size]
    if not np.all(np.isfinite(model)):
        raise ParamsError(f"the update of site '{update.site_id}' holds NaN or infinite values")
    if plan.dp is None:
        w = plan.weight(update.site_id, update.num_examples)
        if plan.quantizer is not None:  # integers in steps of the common scale: the sum decodes exactly
            model = quantize_for_ring(model, plan, rng)
        flat[:layout.model_size] = model * w
        flat[layout.model_size] = w
        return flat
    if clip_norm is None or not clip_norm > 0:
        raise SecAggError("site-level DP needs the clip norm broadcast with the params")
    norm = float(np.sqrt(np.dot(model, model)))
    share = plan.dp.noise_multiplier * clip_norm / math.sqrt(threshold)
    flat[:layout.model_size] = model * clip_factor(norm, clip_norm) + rng.normal(0.0, share, size=model.size)
    flat[layout.model_size] = 1.0
    if plan.dp.adaptive:
        count_share = plan.dp.noise_multiplier_count / math.sqrt(threshold)
        flat[layout.model_size + 1] = float(norm <= clip_norm) + float(rng.normal(0.0, count_share))
    return flat


def quant_step(plan: SecurePlan) -> float:
    """The value of one quantization level, common to every site (1.0: no quantization)."""
    return 1.0 if plan.quantizer is None else float(plan.quant_range) / LEVELS[plan.quantizer]


def quantize_for_ring(model: np.ndarray, plan: SecurePlan, rng: np.random.Generator) -> np.ndarray:
    """Stochastic rounding to whole multiples of the common step, in −levels…levels: unbiased, so
    the decoded sum is the sum of the sites' updates in expectation, and exactly the sum of what
    each site quantized."""
    levels = LEVELS[str(plan.quantizer)]
    q = np.floor(model / quant_step(plan) + rng.random(model.size))
    return np.clip(q, -levels, levels)


def noise_rng(plan: SecurePlan, round_: int, site_id: str) -> np.random.Generator:
    """The site's noise source: the OS, or (simulation only) a generator seeded by the plan."""
    if plan.noise_seed is None:
        return np.random.default_rng()
    return np.random.default_rng([plan.noise_seed, round_, zlib.crc32(site_id.encode("utf-8"))])


class SecureSiteRound:
    """One site's side of one secure round (single use). A network agent calls these methods with the
    bytes it receives and sends back the bytes they return."""

    def __init__(self, site_id: str, round_: int, plan: SecurePlan, rng: np.random.Generator | None = None):
        self.site_id = site_id
        self.round = round_
        self._plan = plan
        self._rng = rng if rng is not None else noise_rng(plan, round_, site_id)
        self._secagg = SecAggSite(site_id, round_)
        self._update: Update | None = None
        self._layout: Layout | None = None
        self._clip: float | None = None

    def prepare(self, update: Update, message: Params) -> None:
        """Keep this round's update and what the broadcast said (the layout, the clip norm)."""
        params, self._clip = split_broadcast(message)
        self._layout = Layout.of(params, self._plan.extras())
        flat = self._layout.flatten(update.grad, {e: 0.0 for e in self._layout.extras})  # names and shapes
        if not np.all(np.isfinite(flat)):  # the coordinator will see only masked words: check here
            raise ParamsError(f"the update of site '{self.site_id}' holds NaN or infinite values")
        top = float(np.abs(flat[:self._layout.model_size]).max(initial=0.0))
        if self._plan.quantizer is not None and top > float(self._plan.quant_range):
            raise ParamsError(f"the update of site '{self.site_id}' has a coordinate of magnitude {top:.3g}, beyond "
                              f"compress_range {self._plan.quant_range:g} that {self._plan.quantizer} scales to; "
                              "raise compress_range")
        self._update = update

    def advertise(self) -> bytes:
        return encode_message(self._secagg.advertise())

    def share_keys(self, roster: bytes) -> bytes:
        decoded = decode_message(roster, Roster)
        assert isinstance(decoded, Roster)
        if self._layout is None or decoded.length != self._layout.length:
            raise SecAggError(f"the roster's vector length does not match site '{self.site_id}''s update")
        return encode_message(self._secagg.share_keys(decoded))

    def receive_shares(self, payloads: bytes) -> None:
        self._secagg.receive_shares(decode_message(payloads, SealedShares))  # type: ignore[arg-type]

    def masked_input(self) -> bytes:
        """The masked vector. The update itself is dropped here: nothing unmasked is kept or sent."""
        roster = self._secagg.roster
        if self._update is None or self._layout is None or roster is None:
            raise SecAggError("mask the update after preparing it and sharing keys")
        vector = site_vector(self._update, self._layout, self._plan, roster.threshold, self._clip, self._rng)
        return encode_message(self._secagg.mask(vector))

    def metrics(self) -> bytes:
        """The scalars that travel in the clear beside the masked vector: train_loss and the like
        (and the row count, except under site-level DP, whose uniform mean keeps it private)."""
        if self._update is None:
            raise SecAggError("no update prepared")
        values = {k: float(v) for k, v in self._update.metrics.items()}
        if self._plan.dp is None:
            values["num_examples"] = float(self._update.num_examples)
        return json.dumps({"site_id": self.site_id, "metrics": values}, sort_keys=True).encode("utf-8")

    def unmask(self, request: bytes) -> bytes:
        decoded = decode_message(request, UnmaskRequest)
        assert isinstance(decoded, UnmaskRequest)
        return encode_message(self._secagg.unmask_response(decoded))


# ---------------------------------------------------------------------------------------------
# Coordinator side


def read_metrics(blob: bytes, site_id: str) -> dict[str, float]:
    """The scalars a site sends beside its masked vector: at most 32, each a finite number."""
    try:
        message = json.loads(blob.decode("utf-8"))
        values = message["metrics"]
        ok = message["site_id"] == site_id and isinstance(values, dict) and len(values) <= 32 and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) for k, v in values.items())
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        ok = False
    if not ok:
        raise SecAggError(f"the metrics sent beside the masked update of '{site_id}' are malformed")
    return {k: float(v) for k, v in values.items()}


def sum_update(total: np.ndarray, layout: Layout, survivors: Sequence[str], step: float = 1.0) -> Update:
    """The unmasked sum as the one update the engine gets: Σ wᵢxᵢ (quantized: Σ wᵢqᵢ times the
    step), with Σ wᵢ (and the noised clip count) in its metrics and the number of sites in the sum
    as num_examples."""
    grad, extra = layout.unflatten(total)
    grad = {k: v * step for k, v in grad.items()} if step != 1.0 else grad
    return Update(SUM_SITE_ID, grad, len(survivors), {**extra, "sites": float(len(survivors))})


class SecureCoordinatorRound:
    """The coordinator's side of one secure round. It holds public keys, sealed payloads in transit,
    masked vectors, the shares revealed for unmasking and, at the end, the sum: never an update."""

    def __init__(self, round_: int, layout: Layout, plan: SecurePlan, selected: int):
        self.round = round_
        self.layout = layout
        self.selected = selected
        self.threshold = check_threshold(selected, plan.max_dropouts)
        self._secagg = SecAggCoordinator(round_, layout.length, self.threshold, plan.frac_bits_used, plan.word_bits)
        self._step = quant_step(plan)
        self._metrics: dict[str, dict[str, float]] = {}
        self._advertised = 0

    def receive_keys(self, advert: bytes) -> None:
        decoded = decode_message(advert, KeyAdvert)
        assert isinstance(decoded, KeyAdvert)
        self._secagg.receive_keys(decoded)
        self._advertised += 1

    def roster(self) -> bytes:
        try:
            return encode_message(self._secagg.roster())
        except SecAggError:
            n = self._advertised
            raise SecAggError(f"round {self.round}: {n} of the {self.selected} selected sites took part, fewer than "
                              f"the {self.threshold} secure aggregation needs to unmask a sum") from None

    def receive_shares(self, batch: bytes) -> None:
        self._secagg.receive_shares(decode_message(batch, SealedShares))  # type: ignore[arg-type]

    def shares_for(self, site_id: str) -> bytes:
        return encode_message(self._secagg.shares_for(site_id))

    def receive_masked(self, masked: bytes, metrics: bytes) -> None:
        decoded = decode_message(masked, MaskedInput)
        assert isinstance(decoded, MaskedInput)
        values = read_metrics(metrics, decoded.site_id)
        self._secagg.receive_masked(decoded)
        self._metrics[decoded.site_id] = values

    def unmask_request(self) -> bytes:
        return encode_message(self._secagg.unmask_request())

    @property
    def masked_inputs(self) -> Mapping[str, np.ndarray]:
        """What the coordinator holds of each site's vector: the masked words."""
        return self._secagg.masked_inputs

    def finish(self, responses: Iterable[bytes]) -> tuple[Update, dict[str, dict[str, float]]]:
        """The sum as one update, and the scalar metrics of the sites in it."""
        decoded = [decode_message(r, UnmaskResponse) for r in responses]
        total = self._secagg.unmask(decoded)  # type: ignore[arg-type]
        survivors = self._secagg.survivors
        return sum_update(total, self.layout, survivors, self._step), {s: self._metrics[s] for s in survivors}


# ---------------------------------------------------------------------------------------------
# In this process, for SimulationTransport


@dataclass(frozen=True)
class SecureFitResult(FitResult):
    """The one summed update, the refused sites, and the answering sites' scalar metrics."""

    site_metrics: dict[str, dict[str, float]] = field(default_factory=dict)


Dropouts = Callable[[int, Sequence[str]], Iterable[str]]
"""(round, sites that masked) -> the sites whose masked vector never arrives (simulated dropouts)."""


class SecureAggregation:
    """Runs every fit round as a secure-aggregation protocol among the selected sites, in this
    process, passing each message as bytes and counting them. `dropouts` simulates sites that drop
    after masking (for tests)."""

    def __init__(self, plan: SecurePlan, dropouts: Dropouts | None = None):
        self.plan = plan
        self.dropouts = dropouts
        self.last_round: SecureCoordinatorRound | None = None  # the coordinator's view, for inspection

    def fit(self, sites: Mapping[str, Site], broadcast: Callable[[Params, int], Params], params: Params,
            requests: Mapping[str, FitRequest], extras: Params | None) -> tuple[SecureFitResult, int]:
        received = broadcast({**params, **extras} if extras else params, len(requests))
        rnd = next(iter(requests.values())).round
        coordinator = SecureCoordinatorRound(rnd, Layout.of(params, self.plan.extras()), self.plan, len(requests))
        parties, refused = self._train(sites, received, requests, rnd)
        sent = 0
        for party in parties.values():
            sent += _deliver(party.advertise(), coordinator.receive_keys)
        roster = coordinator.roster()
        sent += len(roster) * len(parties)
        for party in parties.values():
            sent += _deliver(party.share_keys(roster), coordinator.receive_shares)
        for sid, party in parties.items():
            sent += _deliver(coordinator.shares_for(sid), party.receive_shares)
        dropped = set(self.dropouts(rnd, sorted(parties))) if self.dropouts else set()
        if not dropped <= set(parties):
            raise SecAggError(f"simulated dropouts {sorted(dropped - set(parties))} are not among the round's sites")
        for sid, party in parties.items():
            masked, metrics = party.masked_input(), party.metrics()
            if sid in dropped:
                refused[sid] = "dropped after masking: its update is not in the sum"
                continue
            sent += len(masked) + len(metrics)
            coordinator.receive_masked(masked, metrics)
        request = coordinator.unmask_request()
        responses = []
        for sid in decode_message(request, UnmaskRequest).survivors:  # type: ignore[attr-defined]
            responses.append(parties[sid].unmask(request))
            sent += len(request) + len(responses[-1])
        total, site_metrics = coordinator.finish(responses)
        self.last_round = coordinator
        return SecureFitResult([total], refused, site_metrics), sent

    def _train(self, sites: Mapping[str, Site], received: Params, requests: Mapping[str, FitRequest],
               rnd: int) -> tuple[dict[str, SecureSiteRound], dict[str, str]]:
        """Each selected site trains and prepares its contribution; a site that declines, or whose
        update is malformed (checked at the site: the coordinator will only see masked words), is
        left out of the round."""
        model, _ = split_broadcast(received)
        parties: dict[str, SecureSiteRound] = {}
        refused: dict[str, str] = {}
        for sid, request in requests.items():
            party = SecureSiteRound(sid, rnd, self.plan)
            try:
                party.prepare(sites[sid].fit(model, request), received)
            except (SiteDeclined, ParamsError) as exc:
                refused[sid] = str(exc)
                continue
            parties[sid] = party
        return parties, refused


def _deliver(blob: bytes, receive: Callable[[bytes], None]) -> int:
    receive(blob)
    return len(blob)


class SecureSites(list):
    """The federation's sites, carrying the secure-aggregation runner: SimulationTransport given a
    SecureSites runs every fit round through it (how build_federation asks a run for it)."""

    def __init__(self, sites: Iterable[Site], secure: SecureAggregation):
        super().__init__(sites)
        self.secure = secure


def secure_transport(sites: Sequence[Site], plan: SecurePlan, bytes_sent: int = 0,
                     dropouts: Dropouts | None = None) -> SimulationTransport:
    """A simulation transport whose fit rounds run secure aggregation (evaluation stays as is)."""
    return SimulationTransport(sites, bytes_sent, secure=SecureAggregation(plan, dropouts))
