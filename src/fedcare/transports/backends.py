"""Where a simulation's sites run (`backend`): in this process, in worker processes, or in Ray actors.

Every backend gives the same `Federation` (the plan, the data, the sites) and a transport over it;
the round engine, the strategy and the baselines cannot tell them apart, and their results agree
bit for bit for a seed. The workers of `processes` and `ray` each host a contiguous shard of the
sites for the whole run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from fedcare.core.compression import Scheme
from fedcare.core.config import FederationConfig
from fedcare.core.errors import ConfigError
from fedcare.data import FederatedDataset
from fedcare.data.examples import ArrayExamples
from fedcare.federation.plan import make_plan
from fedcare.federation.transport import Transport
from fedcare.learning.batched import check_device
from fedcare.learning.models import ModelFactory
from fedcare.transports.shard import shard_message
from fedcare.transports.sharded import (
    Pool,
    RemoteSite,
    ShardedTransport,
    Shards,
    answer,
)
from fedcare.transports.simulated import Federation, attacker_ids, build_federation
from fedcare.transports.simulation import SimulationTransport
from fedcare.transports.together import Together


@dataclass
class Backend:
    federation: Federation
    # (bytes already sent, the sites' part of them: a resumed run's counts; the broadcast's compression)
    transport: Callable[[int, int, Scheme], Transport]
    close: Callable[[], None] = lambda: None


def start_workers(cfg: FederationConfig, model_factory: ModelFactory | None = None) -> Pool | None:
    """The worker processes of backend `processes`, started before the data is read so that their
    imports and warm-up overlap with its preparation (None for the other backends). A worker with
    no site (more workers than sites) is given nothing and ends at close."""
    if cfg.backend.backend != "processes":
        return None
    _check_config(cfg, model_factory)
    from fedcare.transports.workers import ProcessPool

    return ProcessPool(cfg.backend.workers or os.cpu_count() or 1)


def open_backend(cfg: FederationConfig, dataset: FederatedDataset, *, model_factory: ModelFactory | None = None,
                 aggregator: object | None = None, pool: Pool | None = None) -> Backend:
    """The backend over the prepared `dataset`; `pool`: workers start_workers started (closed on error)."""
    b = cfg.backend
    if b.backend == "in-process":
        if b.batched and cfg.privacy.secure_aggregation:
            raise ConfigError("batched: secure aggregation runs its own protocol site by site; drop --batched")
        fed = build_federation(cfg, dataset, model_factory=model_factory, aggregator=aggregator)
        together = Together(b) if b.batched else None
        return Backend(fed, lambda sent, upload, scheme: SimulationTransport(fed.federated_sites, sent, broadcast=scheme,
                                                                         bytes_upload=upload, together=together))
    try:
        _check_config(cfg, model_factory)
        _check_hostable(cfg, dataset)
        if pool is None and b.backend == "processes":
            pool = start_workers(cfg, model_factory)
        elif pool is None:
            from fedcare.transports.rayactors import RayPool

            pool = RayPool(b.workers, b.ray_address, len(dataset.sites))
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    try:
        return _hosted(cfg, dataset, pool, aggregator)
    except BaseException:
        pool.close()
        raise


def _check_config(cfg: FederationConfig, model_factory: ModelFactory | None) -> None:
    """What a worker cannot be given, refused in one line before any worker starts."""
    name = cfg.backend.backend
    check_device(cfg.backend.device)
    if model_factory is not None:
        raise ConfigError(f"backend {name} builds each site's model in its worker from the config; a Python "
                          "model_factory cannot be sent there (nothing is pickled): use backend in-process")
    if cfg.privacy.secure_aggregation:
        raise ConfigError(f"secure aggregation runs its protocol among sites in one process: use backend "
                          f"in-process (backend {name} is not supported with it)")


def _check_hostable(cfg: FederationConfig, dataset: FederatedDataset) -> None:
    name = cfg.backend.backend
    if not all(isinstance(sd.splits[s], ArrayExamples) for sd in dataset.sites for s in sd.splits):
        raise ConfigError(f"backend {name} sends each site's examples to its worker once, in memory; inputs "
                          "read from their own files (images) run with backend in-process")


def _hosted(cfg: FederationConfig, dataset: FederatedDataset, pool: Pool, aggregator: object | None) -> Backend:
    site_ids = [sd.site_id for sd in dataset.sites]
    plan = make_plan(cfg, dataset.shape, site_ids, aggregator=aggregator)
    hostile = attacker_ids(cfg, {sd.site_id: sd.sizes()["train"] for sd in dataset.sites})
    workers = min(len(pool), len(site_ids))  # type: ignore[arg-type]
    bounds = [round(i * len(site_ids) / workers) for i in range(workers + 1)]
    owner = {}
    for w in range(workers):
        part = dataset.sites[bounds[w]:bounds[w + 1]]
        pool.send(w, shard_message(plan, site_ids, hostile, part))
        owner.update({sd.site_id: w for sd in part})
    for w in range(workers):
        answer(pool, w)  # every worker has built its sites (or its error is raised here)
    shards = Shards(pool, owner)
    honest = [RemoteSite(shards, sd) for sd in dataset.sites]
    federated = [RemoteSite(shards, sd, honest=False) for sd in dataset.sites]
    fed = Federation(plan, dataset, honest, federated, plan.initial_params())  # type: ignore[arg-type]
    return Backend(fed, lambda sent, upload, scheme: ShardedTransport(shards, sent, broadcast=scheme, bytes_upload=upload),
                   pool.close)
