"""The Ray backend: the process backend's workers as Ray actors, placed by Ray's scheduler.

Each actor is a `Host` (fedcare.transports.shard) holding a shard of sites for the whole run, given
and answering the same JSON-and-safetensors bytes as a worker process. Ray moves those bytes with
its own serialization, which trusts every node: a Ray cluster is one trust domain (the machines of
one research group), never a link to a hospital. A site's network agent never speaks to Ray.
"""

from __future__ import annotations

from collections import deque

from fedcare.core.errors import ConfigError
from fedcare.transports.shard import Host

PLACE_SECONDS = 300


class RayPool:
    """One actor per worker (one CPU each), spread over the cluster's nodes."""

    def __init__(self, workers: int | None, address: str | None, sites: int):
        try:
            import ray
        except ImportError:
            raise ConfigError("backend ray needs Ray: pip install 'fedcare[ray]'") from None
        self._ray = ray
        self._own = not ray.is_initialized()
        if self._own:
            try:
                ray.init(address=address, include_dashboard=False, logging_level="ERROR", configure_logging=False)
            except ConnectionError as exc:
                raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc}; start it with "
                                  "`ray start --head` or leave ray_address out to start one here") from None
        cpus = int(ray.cluster_resources().get("CPU", 0))
        count = min(workers or cpus, sites)
        if count > cpus:
            self.close()
            raise ConfigError(f"workers={workers} is more than the Ray cluster's {cpus} CPUs (each worker takes "
                              "one); lower it or add nodes")
        actor = ray.remote(num_cpus=1)(Host)
        self._actors = [actor.options(scheduling_strategy="SPREAD").remote() for _ in range(count)]
        self._pending: list[deque] = [deque() for _ in range(count)]
        self._placed: set[int] = set()

    def __len__(self) -> int:
        return len(self._actors)

    def send(self, worker: int, message: bytes) -> None:
        self._pending[worker].append(self._actors[worker].handle.remote(message))

    def receive(self, worker: int) -> bytes:
        """The next reply; a worker's first (its shard built) may wait PLACE_SECONDS for a free CPU."""
        first = worker not in self._placed
        try:
            reply = self._ray.get(self._pending[worker].popleft(), timeout=PLACE_SECONDS if first else None)
        except self._ray.exceptions.GetTimeoutError:
            raise ConfigError(f"Ray placed no CPU for worker {worker} in {PLACE_SECONDS} s; lower workers or "
                              "add nodes") from None
        except self._ray.exceptions.RayActorError as exc:
            raise RuntimeError(f"Ray worker {worker} died: {exc}") from None
        self._placed.add(worker)
        return reply

    def close(self) -> None:
        for a in getattr(self, "_actors", []):
            self._ray.kill(a)
        self._actors = []
        if self._own:
            self._ray.shutdown()
