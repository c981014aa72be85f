"""The backend section: where simulated sites run (this process, worker processes, Ray actors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from fedcare.core.config.base import Section

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig


class BackendSettings(Section):
    backend: Literal["in-process", "processes", "ray"] = "in-process"
    workers: int | None = Field(None, ge=1, description="workers hosting a shard of sites each "
                                "(default: the machine's cores for processes, the cluster's CPUs for ray)")
    ray_address: str | None = Field(None, description="a running Ray cluster (host:port); default: start one here")
    batched: bool = Field(False, description="train the sites of this process or of a worker together "
                          "(torch.func.vmap) where the "
                          "algorithm allows it")
    device: Literal["cpu", "cuda"] = "cpu"

    def check(self, config: FederationConfig) -> None:
        if self.backend == "in-process" and self.workers not in (None, 1):
            raise ValueError("workers needs backend processes or ray; the in-process backend is one process")
        if self.ray_address is not None and self.backend != "ray":
            raise ValueError("ray_address needs backend ray")
        if self.device == "cuda" and not self.batched:
            raise ValueError("device cuda runs batched sites only: add batched (--batched)")
