"""Named algorithms: what a site does each round (its mode) and the server-side chain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fedcare.algorithms.aggregators import Weighting, weighted_mean
from fedcare.algorithms.optimizers import sgd
from fedcare.algorithms.strategy import Strategy, chain
from fedcare.core.errors import ConfigError

SiteMode = Literal["gradient", "local_epochs"]
ALGORITHMS = ("fedsgd", "fedavg")


@dataclass(frozen=True)
class Algorithm:
    name: str
    site_mode: SiteMode
    strategy: Strategy


def build_algorithm(name: str, *, lr: float, server_lr: float = 1.0, server_momentum: float = 0.0,
                    weighting: Weighting = "examples",
                    site_weights: Mapping[str, float] | None = None) -> Algorithm:
    """fedsgd: sites send full-batch gradients, θ ← θ − lr·Σαᵢgᵢ.
    fedavg: sites train locally and send θ − θᵢ, θ ← θ − server_lr·Σαᵢ(θ − θᵢ).
    """
    mean = weighted_mean(weighting, site_weights)
    if name == "fedsgd":
        return Algorithm(name, "gradient", chain(mean, sgd(lr, server_momentum)))
    if name == "fedavg":
        return Algorithm(name, "local_epochs", chain(mean, sgd(server_lr, server_momentum)))
    raise ConfigError(f"unknown algorithm '{name}'; choose one of: {', '.join(ALGORITHMS)}")
