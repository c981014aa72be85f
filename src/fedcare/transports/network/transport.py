"""The round engine's Transport over the network: post a task on the board, wait for the sites.

It moves things and never decides how they are combined, exactly as the simulation transport does;
updates come back in the order the engine asked for them, so sums add up in the same order and a
networked run equals a simulated one bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedcare.core.compression import NONE, Scheme
from fedcare.core.messages import FitRequest, Split, scoped
from fedcare.core.params import Params
from fedcare.core.serialization import params_to_bytes
from fedcare.federation.transport import FitResult, SiteMetrics
from fedcare.transports.network.board import Board, Part, Task
from fedcare.transports.network.secure import SecureRounds
from fedcare.transports.secure import SecurePlan
from fedcare.transports.simulation import unscoped


@dataclass(frozen=True)
class Timing:
    deadline: float = 600.0  # seconds a task stays open before it may close on quorum
    min_sites: int = 1       # quorum of a fit task


class NetworkTransport:
    def __init__(self, board: Board, site_ids: Sequence[str], timing: Timing, plan: dict, bytes_sent: int = 0,
                 secure: SecurePlan | None = None, broadcast: Scheme = NONE, bytes_upload: int = 0):
        self._board = board
        self._secure = None if secure is None else SecureRounds(self.ask_all, secure, timing.min_sites)
        self._sites = list(site_ids)
        self._timing = timing
        self._plan = plan  # the declarative run plan every task carries (model, recipe): data, never code
        self._bytes = bytes_sent
        self._upload = bytes_upload  # the part of _bytes the sites sent
        self._scheme = broadcast  # how params travel to the sites (core/compression.py)
        self._round = 0
        self._evaluations = 0
        self._last: tuple[Params, bytes, str] | None = None
        self._parts: tuple[Params, dict[tuple[str, ...], Part]] | None = None  # this round's scoped broadcasts

    def site_ids(self) -> list[str]:
        return list(self._sites)

    @property
    def bytes_sent(self) -> int:
        return self._bytes + (self._secure.bytes if self._secure else 0)

    @property
    def bytes_upload(self) -> int:
        return self._upload + (self._secure.bytes if self._secure else 0)

    def fit(self, params: Params, requests: Mapping[str, FitRequest], extras: Params | None = None) -> FitResult:
        message = {**params, **extras} if extras else params
        blob, digest = self.params_bytes(message)
        # a site lacking an input downloads the message without its encoder and answers with that
        parts = {sid: self._part(message, req.skip) for sid, req in requests.items() if req.skip}
        self._bytes += sum(len(parts[sid].blob) if sid in parts else len(blob) for sid in requests)
        self._round = next(iter(requests.values())).round
        self._evaluations = 0
        if self._secure is not None:  # four tasks per round; the coordinator only ever holds the sum
            return self._secure.fit(params, requests, blob, digest)
        bodies = {sid: {"plan": self._plan, "request": req.to_json()} for sid, req in requests.items()}
        task = self._board.ask(Task(f"{self._round}.fit", "fit", self._round, bodies, blob, message, digest,
                                    parts=parts),
                               self._timing.deadline, min(self._timing.min_sites, len(requests)))
        result = FitResult([])
        for sid in requests:  # the engine's order, not the order of arrival
            answer = task.answers.get(sid)  # (update, its size on the wire), filed by the web handler
            if isinstance(answer, tuple):
                update, size = answer
                self._bytes += size
                self._upload += size
                result.updates.append(unscoped(update, message))  # what it was not sent: zeros, weight 0
            elif isinstance(answer, str):  # the site declined the round, and said why
                result.refused[sid] = answer
            else:
                result.refused[sid] = task.refusals.get(sid, "no update before the round's deadline")
        return result

    def evaluate(self, params: Params, site_ids: Sequence[str], splits: Sequence[Split]) -> dict[str, SiteMetrics]:
        blob, digest = self.params_bytes(params)
        self._bytes += len(blob) * len(site_ids)
        self._evaluations += 1
        task_id = f"{self._round}.evaluate" + (f".{self._evaluations}" if self._evaluations > 1 else "")
        answers = self.ask_all(task_id, "evaluate", {"splits": list(splits)}, blob, site_ids, quorum=1, digest=digest)
        return {sid: answer["metrics"] for sid, answer in answers.items()}

    def params_bytes(self, params: Params) -> tuple[bytes, str]:
        """The params as bytes, and their digest; the model evaluated after a round is the next
        round's broadcast (the same object), so it is serialized and hashed once."""
        if self._last is None or self._last[0] is not params:
            blob = params_to_bytes(params, scheme=self._scheme)
            self._last = (params, blob, hashlib.sha256(blob).hexdigest())
        return self._last[1], self._last[2]

    def _part(self, message: Params, skip: tuple[str, ...]) -> Part:
        """The message without the arrays under `skip`, serialized and hashed once per round and scope."""
        if self._parts is None or self._parts[0] is not message:
            self._parts = (message, {})
        made = self._parts[1]
        if skip not in made:
            part = scoped(message, skip)
            blob = params_to_bytes(part, scheme=self._scheme)
            made[skip] = Part(blob, hashlib.sha256(blob).hexdigest(), part)
        return made[skip]

    def ask_all(self, task_id: str, kind: str, body: dict, blob: bytes | None, site_ids: Sequence[str] | None = None,
                quorum: int | None = None, per_site: Mapping[str, dict] | None = None, digest: str | None = None,
                answer_bytes: int = 0) -> dict:
        """Ask the sites one JSON question (with `blob` to download; `per_site` adds each site's own
        part, such as its seed); their answers by site, in site order. `quorum` defaults to all;
        `answer_bytes` is what an answer may hold beyond the JSON limit (a masked vector)."""
        sites = list(self._sites if site_ids is None else site_ids)
        bodies = {sid: {"plan": self._plan, **body, **(per_site or {}).get(sid, {})} for sid in sites}
        task = self._board.ask(Task(task_id, kind, self._round, bodies, blob, digest=digest, answer_bytes=answer_bytes),
                               self._timing.deadline, len(sites) if quorum is None else quorum)
        return {sid: task.answers[sid] for sid in sites if sid in task.answers}

