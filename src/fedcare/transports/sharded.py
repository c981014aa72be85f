"""Sites hosted by workers (child processes or Ray actors), each holding a shard of them.

`ShardedTransport` is the in-process transport's twin: the broadcast is serialized once and counted
per site, every worker with selected sites trains them at the same time, and their updates come
back as the same bytes, taken in site order and validated one by one, so the engine and the
strategy see exactly what the in-process transport gives them (bit for bit, for a seed).
`RemoteSite` is one hosted site as the rest of a simulation meets it (checkpoints, baselines,
personalization): each call is one message to its worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from fedcare.core import errors
from fedcare.core.compression import NONE, Scheme
from fedcare.core.messages import FitRequest, Split, scoped
from fedcare.core.params import Params
from fedcare.core.serialization import params_from_bytes, params_to_bytes
from fedcare.core.update import Update
from fedcare.data.dataset import SiteData
from fedcare.federation.transport import FitResult, SiteMetrics
from fedcare.transports.shard import pack, unpack
from fedcare.transports.simulation import Traffic, receive


class Pool(Protocol):
    """Workers that answer messages in the order they were sent."""

    def send(self, worker: int, message: bytes) -> None: ...

    def receive(self, worker: int) -> bytes: ...

    def close(self) -> None: ...


def answer(pool: Pool, worker: int) -> tuple[dict, list[memoryview]]:
    """A worker's reply; an error it reports is raised here (a FedcareError keeps its kind and line)."""
    header, blobs = unpack(pool.receive(worker))
    if "error" in header:
        kind = getattr(errors, header["kind"], None)
        if isinstance(kind, type) and issubclass(kind, errors.FedcareError):
            raise kind(header["error"])
        raise RuntimeError(f"worker {worker} failed: {header['error']}")
    return header, blobs


class Shards:
    """Which worker hosts which site: contiguous runs of the sites in their order."""

    def __init__(self, pool: Pool, owner: Mapping[str, int]):
        self.pool, self.owner = pool, dict(owner)

    def call(self, site_id: str, header: dict, blobs: Sequence[bytes] = ()) -> tuple[dict, list[memoryview]]:
        worker = self.owner[site_id]
        self.pool.send(worker, pack({**header, "site": site_id}, blobs))
        return answer(self.pool, worker)

    def by_worker(self, site_ids: Sequence[str]) -> dict[int, list[str]]:
        """The sites grouped by worker, workers and sites in the sites' order."""
        out: dict[int, list[str]] = {}
        for sid in site_ids:
            out.setdefault(self.owner[sid], []).append(sid)
        return dict(sorted(out.items()))


class ShardedTransport:
    def __init__(self, shards: Shards, bytes_sent: int = 0, honest: bool = False, broadcast: Scheme = NONE,
                 bytes_upload: int = 0):
        """`honest`: reach the sites themselves, not the simulated attackers among them."""
        self._shards = shards
        self._traffic = Traffic(bytes_sent, bytes_upload, broadcast)
        self._honest = honest

    def site_ids(self) -> list[str]:
        return list(self._shards.owner)

    @property
    def bytes_sent(self) -> int:
        return self._traffic.sent

    @property
    def bytes_upload(self) -> int:
        return self._traffic.uploaded

    def fit(self, params: Params, requests: Mapping[str, FitRequest], extras: Params | None = None) -> FitResult:
        message = {**params, **extras} if extras else params
        # sites lacking an input get (and answer with) the message without its encoder: one broadcast
        # per scope, serialized once and counted per site, as in the in-process transport
        scopes = [r.skip for r in requests.values()]
        parts = {skip: scoped(message, skip) for skip in dict.fromkeys(scopes)}
        blobs = {skip: self._traffic.broadcast(part, scopes.count(skip)) for skip, part in parts.items()}
        groups = self._shards.by_worker(list(requests))
        pool = self._shards.pool
        for worker, sids in groups.items():  # every worker trains its sites at once ...
            mine = list(dict.fromkeys(requests[sid].skip for sid in sids))  # the scopes its sites need
            pool.send(worker, pack({"op": "fit", "orders": [list(parts[skip]) for skip in mine],
                                    "scopes": {sid: mine.index(requests[sid].skip) for sid in sids},
                                    "honest": self._honest,
                                    "requests": {sid: requests[sid].to_json() for sid in sids}},
                                   [blobs[skip] for skip in mine]))
        result = FitResult([])
        for worker, sids in groups.items():  # ... and their updates are taken in site order
            header, updates = answer(pool, worker)
            arrived = iter(updates)
            for sid, declined in zip(sids, header["declined"], strict=True):
                if declined is not None:
                    result.refused[sid] = declined
                else:
                    request = requests[sid]
                    self._traffic.upload(receive(result, sid, next(arrived), parts[request.skip], request, message))
        return result

    def evaluate(self, params: Params, site_ids: Sequence[str], splits: Sequence[Split]) -> dict[str, SiteMetrics]:
        blob = self._traffic.broadcast(params, len(site_ids))
        groups = self._shards.by_worker(site_ids)
        for worker, sids in groups.items():
            self._shards.pool.send(worker, pack({"op": "evaluate", "order": list(params), "sites": sids,
                                                 "honest": self._honest,
                                                 "splits": list(splits)}, [blob]))
        metrics: dict[str, SiteMetrics] = {}
        for worker in groups:
            metrics.update(answer(self._shards.pool, worker)[0]["metrics"])
        return {sid: metrics[sid] for sid in site_ids}


class RemoteSite:
    """One hosted site. As the federation meets it (`honest=False`), `fit` reaches the simulated
    attacker where the config has one; its `site` is the honest self the baselines train."""

    def __init__(self, shards: Shards, data: SiteData, honest: bool = True):
        self._shards, self.site_id, self._sizes, self._honest = shards, data.site_id, data.sizes(), honest
        if not honest:
            self.site = RemoteSite(shards, data)

    @property
    def num_train(self) -> int:
        return self._sizes["train"]

    def num_examples(self, split: str) -> int:
        return self._sizes.get(split, 0)

    def fit(self, params: Params, request: FitRequest) -> Update:
        result = ShardedTransport(self._shards, honest=self._honest).fit(params, {self.site_id: request})
        if self.site_id in result.refused:
            raise errors.SiteDeclined(result.refused[self.site_id])
        return result.updates[0]

    def evaluate(self, params: Params, splits: Sequence[Split]) -> SiteMetrics:
        return ShardedTransport(self._shards, honest=self._honest).evaluate(params, [self.site_id], splits)[self.site_id]

    def site_state(self) -> Params:
        return dict(load_arrays(bytes(self._shards.call(self.site_id, {"op": "state"})[1][0])))

    def load_site_state(self, state: Params) -> None:
        self._shards.call(self.site_id, {"op": "load_state"},
                          [save_arrays({k: np.ascontiguousarray(v) for k, v in state.items()})])

    def calibration_bins(self, params: Params, split: Split = "test") -> dict | None:
        return self._shards.call(self.site_id, {"op": "calibration", "order": list(params), "split": split},
                                 [params_to_bytes(params)])[0]["bins"]

    def follow_up(self, split: Split = "train") -> float | None:
        return self._shards.call(self.site_id, {"op": "follow_up", "split": split})[0]["time"]

    def hazard_sums(self, params: Params, grid: Sequence[float], split: Split = "train") -> dict | None:
        return self._shards.call(self.site_id, {"op": "hazard", "order": list(params), "split": split,
                                                "grid": [float(t) for t in grid]},
                                 [params_to_bytes(params)])[0]["sums"]

    def personal_params(self, global_params: Params, request: FitRequest) -> Params:
        header, blobs = self._shards.call(self.site_id, {"op": "personal", "order": list(global_params),
                                                         "request": request.to_json()},
                                          [params_to_bytes(global_params)])
        decoded, _ = params_from_bytes(blobs[0])
        return {k: decoded[k].copy() for k in header["order"]}

