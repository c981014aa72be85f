"""A worker's shard of simulated sites, and the bytes the coordinator's process and a worker exchange.

A worker (a child process, or a Ray actor) is given its sites once: the run's config and data
shape (JSON, from which it makes the same plan as the coordinator) and each site's examples
(safetensors). It keeps them, with their personal state, for the whole run; each round only the
broadcast params and the requests go out and the sites' updates come back, in site order, as the
same safetensors bytes the in-process transport produces. Nothing here is pickled: a message is
one JSON header and a list of byte blobs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from fedcare.core import errors
from fedcare.core.config import make_config
from fedcare.core.errors import SiteDeclined
from fedcare.core.messages import FitRequest
from fedcare.core.params import Params
from fedcare.core.serialization import (
    fit_reply_to_bytes,
    params_from_bytes,
    params_to_bytes,
)
from fedcare.data.dataset import SPLITS, DataShape, SiteData
from fedcare.data.examples import ArrayExamples
from fedcare.federation.plan import Plan, make_plan
from fedcare.transports.simulated import attacked, honest
from fedcare.transports.together import Together

_LEN = struct.Struct("<Q")


def pack(header: Mapping, blobs: Sequence[bytes | memoryview] = ()) -> bytes:
    """One message: the header's JSON and each blob, each preceded by its length."""
    parts = [json.dumps({**header, "blobs": len(blobs)}).encode()]
    parts.extend(bytes(b) if isinstance(b, memoryview) else b for b in blobs)
    return b"".join(_LEN.pack(len(p)) + p for p in parts)


def unpack(message: bytes | memoryview) -> tuple[dict, list[memoryview]]:
    view = memoryview(message)
    pieces, at = [], 0
    while at < len(view):
        (size,) = _LEN.unpack_from(view, at)
        pieces.append(view[at + 8:at + 8 + size])
        at += 8 + size
    header = json.loads(bytes(pieces[0]))
    if header.pop("blobs") != len(pieces) - 1:
        raise ValueError("a worker message lost some of its parts")
    return header, pieces[1:]


def _site_arrays(data: SiteData) -> dict[str, np.ndarray]:
    """A site's examples as `<split>/<name>` arrays."""
    return {f"{split}/{name}": np.ascontiguousarray(a) for split in SPLITS
            for name, a in data.splits[split].arrays.items()}  # type: ignore[attr-defined]


def _site_data(site_id: str, arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> SiteData:
    """What _site_arrays gave, in its order (safetensors sorts the names)."""
    splits: dict[str, dict[str, np.ndarray]] = {split: {} for split in SPLITS}
    for key in names:
        split, _, name = key.partition("/")
        splits[split][name] = arrays[key]
    return SiteData(site_id, {split: ArrayExamples(named) for split, named in splits.items()})


def shard_message(plan: Plan, site_ids: Sequence[str], hostile: Sequence[str], data: Sequence[SiteData]) -> bytes:
    """What a worker is given once: the plan's declarative parts and its sites' examples."""
    arrays = [_site_arrays(d) for d in data]
    header = {"config": plan.config.flat(mode="json"), "shape": plan.shape.to_json(), "sites": list(site_ids),
              "hostile": list(hostile), "shard": [d.site_id for d in data], "names": [list(a) for a in arrays]}
    return pack(header, [save_arrays(a) for a in arrays])


class Shard:
    """The worker's side: its sites (simulated attackers among them, where the config has them),
    answering one message at a time."""

    def __init__(self, message: bytes | memoryview):
        header, blobs = unpack(message)
        plan = make_plan(make_config(header["config"]), DataShape.from_json(header["shape"]), header["sites"])
        data = [_site_data(sid, load_arrays(bytes(blob)), names)
                for sid, blob, names in zip(header["shard"], blobs, header["names"], strict=True)]
        sites = [plan.local_site(d) for d in data]
        self.sites = {s.site_id: s for s in attacked(plan, data, sites, set(header["hostile"]))}
        self.honest = honest(list(self.sites.values()))
        backend = plan.config.backend
        self._together = Together(backend) if backend.batched else None

    def handle(self, message: bytes | memoryview) -> bytes:
        header, blobs = unpack(message)
        op = header["op"]
        if op == "fit":
            return self._fit(header, blobs)
        if op == "evaluate":
            params, sites, splits = _params(blobs[0], header["order"]), self._reach(header), header["splits"]
            together = self._together.evaluate(params, header["sites"], splits, sites) if self._together else {}
            return pack({"metrics": {sid: together[sid] if sid in together else sites[sid].evaluate(params, splits)
                                     for sid in header["sites"]}})
        site = self.honest[header["site"]]
        if op == "state":
            state = site.site_state()
            return pack({}, [save_arrays({k: np.ascontiguousarray(v) for k, v in state.items()})])
        if op == "load_state":
            site.load_site_state(load_arrays(bytes(blobs[0])))
            return pack({})
        if op == "calibration":
            return pack({"bins": site.calibration_bins(_params(blobs[0], header["order"]), header["split"])})
        if op == "follow_up":
            return pack({"time": site.follow_up(header["split"])})
        if op == "hazard":
            return pack({"sums": site.hazard_sums(_params(blobs[0], header["order"]), header["grid"],
                                                  header["split"])})
        if op == "personal":
            personal = site.personal_params(_params(blobs[0], header["order"]), FitRequest(**header["request"]))
            return pack({"order": list(personal)}, [params_to_bytes(personal)])
        raise ValueError(f"unknown worker operation '{op}'")

    def _reach(self, header: dict) -> dict:
        """The sites as the federation meets them, or (for the baselines) their honest selves."""
        return self.honest if header.get("honest") else self.sites

    def _fit(self, header: dict, blobs: Sequence[memoryview]) -> bytes:
        """Each requested site's update bytes, in site order, or why it declined. A site lacking an
        input is given the broadcast without its encoder (`scopes` says which of the blobs)."""
        received = [_params(blob, order) for blob, order in zip(blobs, header["orders"], strict=True)]
        sites = self._reach(header)
        requests = {sid: FitRequest(**r) for sid, r in header["requests"].items()}
        scope = {sid: int(header["scopes"][sid]) for sid in requests}
        together: dict = {}
        if self._together is not None:  # batched within each scope, as the in-process transport does
            for i, got in enumerate(received):
                together.update(self._together.updates(got, {s: r for s, r in requests.items() if scope[s] == i},
                                                       sites))
        answers, out = [], []
        for sid, request in requests.items():
            try:
                update = together[sid] if sid in together else sites[sid].fit(received[scope[sid]], request)
                out.append(fit_reply_to_bytes(update, request))
                answers.append(None)
            except SiteDeclined as exc:
                answers.append(str(exc))
        return pack({"declined": answers}, out)


def _params(blob: bytes | memoryview, order: Sequence[str]) -> Params:
    """Decoded params in the sender's order (read-only views, as the in-process transport gives)."""
    decoded, _ = params_from_bytes(blob)
    return {k: decoded[k] for k in order}


class Host:
    """A worker: the first message it is given makes its shard, every later one is for the shard.
    Each reply is a message; an error becomes one (with the nearest fedcare error's kind), so the
    coordinator's process raises it with its one line."""

    def __init__(self) -> None:
        self.shard: Shard | None = None

    def handle(self, message: bytes) -> bytes:
        return serve(lambda: self._start(message) if self.shard is None else self.shard.handle(message))

    def _start(self, message: bytes) -> bytes:
        self.shard = Shard(message)
        return pack({})


def serve(work: Callable[[], bytes]) -> bytes:
    try:
        return work()
    except errors.FedcareError as exc:
        kind = next(c.__name__ for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
        return pack({"error": str(exc), "kind": kind})
    except Exception as exc:
        return pack({"error": f"{type(exc).__name__}: {exc}", "kind": "internal"})
