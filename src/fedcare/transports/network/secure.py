"""Secure aggregation over the network: one fit round as four tasks on the board.

    {r}.fit            secure-fit     sites train, keep their update, answer their public keys
    {r}.secure.share   secure-share   the roster out; each site's Shamir shares, sealed per recipient
    {r}.secure.mask    secure-mask    each site's sealed shares in; its masked vector and scalar metrics
    {r}.secure.unmask  secure-unmask  which sites dropped; the shares that unmask the sum

The coordinator side is fedcare.transports.secure.SecureCoordinatorRound and the site side
SecureSiteRound, the same objects a simulation runs; this module only moves their bytes (base64
in JSON). The coordinator holds keys, sealed shares, masked vectors and the sum — never an update.
A site that does not answer a step in time is left out of the round; the sum is still recovered
while no more than the plan's `max_dropouts` sites dropped after masking.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping

from fedcare.algorithms.secagg import (KeyAdvert, MaskedInput, SealedShares, SecAggError, UnmaskRequest,
                                       UnmaskResponse, decode_message)
from fedcare.core.messages import FitRequest
from fedcare.core.params import Params
from fedcare.transports.network.board import Refused
from fedcare.transports.secure import Layout, SecureCoordinatorRound, SecureFitResult, SecurePlan, read_metrics

ANSWERS = {  # task kind -> the fields of a site's answer and the message type each must decode to
    "secure-fit": {"advert": KeyAdvert},
    "secure-share": {"shares": SealedShares},
    "secure-mask": {"masked": MaskedInput, "metrics": None},
    "secure-unmask": {"response": UnmaskResponse},
}


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def check_answer(kind: str, value: Mapping, site_id: str) -> None:
    """A 4xx-worthy problem with a site's answer to a secure task, found before the round uses it.
    The authenticated site decides who a message is from: one naming another sender is refused
    (403), so no site can advertise keys, shares or a masked vector as another."""
    fields = ANSWERS[kind]
    if kind == "secure-fit" and set(value) == {"declined"} and isinstance(value["declined"], str):
        return
    if set(value) != set(fields) or not all(isinstance(value[f], str) for f in fields):
        raise Refused(422, f"a {kind} answer holds exactly {sorted(fields)}, base64 strings")
    for name, expected in fields.items():
        try:
            blob = unb64(value[name])
            decoded = None if expected is None else decode_message(blob, expected)
        except (binascii.Error, ValueError, SecAggError) as exc:
            raise Refused(422, f"'{name}' is not a valid {getattr(expected, '__name__', 'message')} ({exc})") from None
        for sender in _senders(decoded):
            if sender != site_id:
                raise Refused(403, f"the {kind} answer's '{name}' claims to come from '{str(sender)[:64]}', "
                                   f"not from '{site_id}'")
    if kind == "secure-mask":
        try:
            read_metrics(unb64(value["metrics"]), site_id)
        except SecAggError as exc:
            raise Refused(422, str(exc)) from None


def _senders(message: object) -> list[str]:
    """Whom a decoded secure-aggregation message says it is from."""
    if message is None:
        return []
    if isinstance(message, list):  # a batch of SealedShares
        return [m.sender for m in message]
    return [message.site_id]  # type: ignore[attr-defined]  # KeyAdvert, MaskedInput, UnmaskResponse


def _taken(site_id: str, refused: dict[str, str], receive: Callable[..., None], *messages: bytes) -> bool:
    """Hand a site's messages to the coordinator's side; one it refuses (malformed keys, a misaddressed
    batch, a vector of the wrong length) leaves that site out of the round, as a dropout, with why."""
    try:
        receive(*messages)
    except SecAggError as exc:
        refused[site_id] = f"refused: {exc}"
        return False
    return True


Ask = Callable[..., dict]
"""NetworkTransport.ask_all: one task to some sites, their answers by site in site order."""


class SecureRounds:
    """NetworkTransport's fit when secure aggregation is on."""

    def __init__(self, ask: Ask, plan: SecurePlan, min_sites: int):
        self._ask, self._plan, self._min_sites = ask, plan, min_sites
        self.bytes = 0  # the protocol's own messages (the broadcast is the transport's)

    def fit(self, params: Params, requests: Mapping[str, FitRequest], blob: bytes, digest: str) -> SecureFitResult:
        rnd = next(iter(requests.values())).round
        coordinator = SecureCoordinatorRound(rnd, Layout.of(params, self._plan.extras()), self._plan, len(requests))
        quorum = max(coordinator.threshold, min(self._min_sites, len(requests)))
        answers = self._ask(f"{rnd}.fit", "secure-fit", {"secure": self._plan.to_json()}, blob, list(requests),
                            quorum, per_site={sid: {"request": req.to_json()} for sid, req in requests.items()},
                            digest=digest)
        refused: dict[str, str] = {}
        keyed = []
        for sid in requests:
            answer = answers.get(sid)
            if isinstance(answer, dict) and "advert" in answer:
                if _taken(sid, refused, coordinator.receive_keys, self._take(answer["advert"])):
                    keyed.append(sid)
            else:  # declined (and said why), or silent
                refused[sid] = answer if isinstance(answer, str) else "no answer before the round's deadline"
        roster = coordinator.roster()  # fewer than the threshold: a one-line SecAggError
        shared = self._step(rnd, "share", keyed, {sid: {"roster": b64(roster)} for sid in keyed}, coordinator.threshold,
                            refused, "no key shares before the deadline")
        shared = {sid: a for sid, a in shared.items()
                  if _taken(sid, refused, coordinator.receive_shares, self._take(a["shares"]))}
        masked = self._step(rnd, "mask", list(shared), {sid: {"shares": b64(coordinator.shares_for(sid))}
                                                        for sid in shared}, coordinator.threshold, refused,
                            "dropped after masking: its update is not in the sum",
                            answer_bytes=4 * -(-(self._plan.word_bits // 8) * coordinator.layout.length // 3))  # base64
        for sid, answer in masked.items():
            _taken(sid, refused, coordinator.receive_masked, self._take(answer["masked"]), self._take(answer["metrics"]))
        request = coordinator.unmask_request()
        survivors = list(decode_message(request, UnmaskRequest).survivors)  # type: ignore[attr-defined]
        unmasked = self._step(rnd, "unmask", survivors, {sid: {"request": b64(request)} for sid in survivors},
                              coordinator.threshold, refused, "no unmasking share before the deadline")
        total, site_metrics = coordinator.finish(self._take(a["response"]) for a in unmasked.values())
        return SecureFitResult([total], refused, site_metrics)

    def _step(self, rnd: int, step: str, sites: list[str], bodies: dict[str, dict], quorum: int,
              refused: dict[str, str], missing: str, answer_bytes: int = 0) -> dict[str, dict]:
        for body in bodies.values():
            self.bytes += sum(len(v) * 3 // 4 for v in body.values())
        answers = self._ask(f"{rnd}.secure.{step}", f"secure-{step}", {}, None, sites, quorum, per_site=bodies,
                            answer_bytes=answer_bytes)
        for sid in sites:
            if sid not in answers:
                refused[sid] = missing
        return answers

    def _take(self, text: str) -> bytes:
        blob = unb64(text)
        self.bytes += len(blob)
        return blob
