"""In-process simulation: every site lives in this process, and every message still goes through
the wire format (safetensors bytes, validated on arrival) so a simulated run exercises exactly what
a deployed one sends, and counts its bytes honestly. Deterministic for a seed: sites run in order.
With compression (core/compression.py), updates travel as the request says and broadcasts as
`broadcast` says, compressed on the sender's side and decoded and checked on the receiver's.

With a `secure` round runner (transports/secure.py: given here, or carried by a SecureSites list),
every fit round is a secure-aggregation protocol among the selected sites instead, and the engine
gets only their sum; broadcasts and evaluation stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from fedcare.core.compression import NONE, Scheme
from fedcare.core.errors import ParamsError, SiteDeclined
from fedcare.core.messages import FitRequest, Split, scoped
from fedcare.core.params import Params
from fedcare.core.serialization import (
    fit_reply_to_bytes,
    params_from_bytes,
    params_to_bytes,
    update_from_bytes,
)
from fedcare.core.update import Update
from fedcare.federation.transport import FitResult, SiteMetrics, Transport
from fedcare.transports.together import Together


class Site(Protocol):
    """What the simulation transport needs of a site (LocalSite, or a simulated hostile one)."""

    site_id: str

    def fit(self, params: Params, request: FitRequest) -> Update:
        """`params` is the whole broadcast: the model's arrays plus any `control/<name>` extras."""
        ...

    def evaluate(self, params: Params, splits: Sequence[Split]) -> SiteMetrics: ...


class SecureRounds(Protocol):
    """Runs a round's fit as a protocol among the sites (secure aggregation, transports/secure.py):
    returns what the engine gets and the bytes the protocol's own messages took."""

    def fit(self, sites: Mapping[str, Site], broadcast: Callable[[Params, int], Params], params: Params,
            requests: Mapping[str, FitRequest], extras: Params | None) -> tuple[FitResult, int]: ...


class Traffic:
    """The bytes a simulated transport has moved, both directions together (`sent`) and the sites'
    part (`uploaded`); a resumed run continues the counts. Broadcasts are encoded here, compressed
    as `scheme` says, so every transport counts them the same way."""

    def __init__(self, sent: int = 0, uploaded: int = 0, scheme: Scheme = NONE):
        self.sent, self.uploaded, self.scheme = sent, uploaded, scheme

    def broadcast(self, params: Params, count: int) -> bytes:
        """Serialize params once, counted as sent to `count` sites."""
        blob = params_to_bytes(params, scheme=self.scheme)
        self.sent += len(blob) * count
        return blob

    def upload(self, size: int) -> None:
        self.sent += size
        self.uploaded += size


class SimulationTransport:
    def __init__(self, sites: Sequence[Site], bytes_sent: int = 0, secure: SecureRounds | None = None,
                 broadcast: Scheme = NONE, bytes_upload: int = 0, together: Together | None = None):
        """`together`: train the sites that can batched (backend.batched), the others one by one."""
        self._together = together
        self._sites = {site.site_id: site for site in sites}
        self._traffic = Traffic(bytes_sent, bytes_upload, broadcast)
        # secure aggregation: given here, or carried by the list of sites (transports.secure.SecureSites)
        self._secure = secure if secure is not None else getattr(sites, "secure", None)

    def site_ids(self) -> list[str]:
        return list(self._sites)

    @property
    def bytes_sent(self) -> int:
        return self._traffic.sent

    @property
    def bytes_upload(self) -> int:
        return self._traffic.uploaded

    def broadcast(self, params: Params, count: int) -> Params:
        """Serialize params once, count them as sent to `count` sites, and return what a site decodes."""
        received, _ = params_from_bytes(self._traffic.broadcast(params, count), params)
        return received

    def fit(self, params: Params, requests: Mapping[str, FitRequest], extras: Params | None = None) -> FitResult:
        if self._secure is not None:
            result, sent = self._secure.fit(self._sites, self.broadcast, params, requests, extras)
            self._traffic.upload(sent)
            return result
        message = {**params, **extras} if extras else params  # an update mirrors the message it answers
        # sites lacking an input get (and answer with) the message without its encoder: one broadcast per scope
        scopes = [r.skip for r in requests.values()]
        received = {skip: self.broadcast(scoped(message, skip), scopes.count(skip)) for skip in dict.fromkeys(scopes)}
        together: dict[str, Update] = {}
        if self._together is not None:
            for skip, got in received.items():
                together.update(self._together.updates(got, {s: r for s, r in requests.items() if r.skip == skip},
                                                       self._sites))
        result = FitResult([])
        for site_id, request in requests.items():
            try:
                update = (together[site_id] if site_id in together
                          else self._sites[site_id].fit(received[request.skip], request))
                blob = fit_reply_to_bytes(update, request)
            except SiteDeclined as exc:
                result.refused[site_id] = str(exc)
                continue
            self._traffic.upload(receive(result, site_id, blob, scoped(message, request.skip), request, message))
        return result

    def evaluate(self, params: Params, site_ids: Sequence[str], splits: Sequence[Split]) -> dict[str, SiteMetrics]:
        received = self.broadcast(params, len(site_ids))
        together = self._together.evaluate(received, site_ids, splits, self._sites) if self._together else {}
        return {sid: together[sid] if sid in together else self._sites[sid].evaluate(received, splits)
                for sid in site_ids}


def receive(result: FitResult, site_id: str, blob: bytes | memoryview, message: Params, request: FitRequest,
            whole: Params | None = None) -> int:
    """Validate one site's update bytes into `result` (or refuse it there); returns the bytes moved.
    With `whole`, the site answered a scoped message: what it was not sent is filled with zeros, so
    the strategy sees updates of one shape (and the modality mean gives those zeros no weight)."""
    try:
        update = update_from_bytes(blob, message, round_=request.round, compress=request.compress, sender=site_id)
    except ParamsError as exc:
        result.refused[site_id] = str(exc)
        return len(blob)
    if whole is not None:
        update = unscoped(update, whole)
    if update.site_id != site_id:
        result.refused[site_id] = f"update claims to come from '{update.site_id}'"
    else:
        result.updates.append(update)
    return len(blob)


def unscoped(update: Update, whole: Params) -> Update:
    """An update to a scoped message (FitRequest.skip) as one to the `whole` message: what the site
    was not sent is zeros, which the modality mean gives no weight. Every transport fills it so."""
    if len(update.grad) == len(whole):
        return update
    return Update(update.site_id, {k: update.grad[k] if k in update.grad else np.zeros_like(v)
                                   for k, v in whole.items()}, update.num_examples, update.metrics)


class TrainHereEvaluateThere:
    """Trains on one transport's sites and judges on another's: the pooled baseline trains on the
    pooled rows but is evaluated on every site's own splits. Its bytes are not the federation's."""

    def __init__(self, train: Transport, evaluate: Transport):
        self._train, self._eval = train, evaluate

    def site_ids(self) -> list[str]:
        return self._train.site_ids()

    @property
    def bytes_sent(self) -> int:
        return 0

    @property
    def bytes_upload(self) -> int:
        return 0

    def fit(self, params: Params, requests: Mapping[str, FitRequest], extras: Params | None = None) -> FitResult:
        return self._train.fit(params, requests, extras)

    def evaluate(self, params: Params, site_ids: Sequence[str], splits: Sequence[Split]) -> dict[str, SiteMetrics]:
        return self._eval.evaluate(params, self._eval.site_ids(), splits)
