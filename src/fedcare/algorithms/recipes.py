"""Named algorithms: what a site does each round (its mode) and the server-side chain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fedcare.algorithms.aggregators import Weighting, weighted_mean
from fedcare.algorithms.optimizers import sgd
from fedcare.algorithms.robust import centered_clip, coordinate_median, krum, norm_bound, trimmed_mean
from fedcare.algorithms.strategy import Strategy, chain
from fedcare.core.errors import ConfigError

SiteMode = Literal["gradient", "local_epochs"]
ALGORITHMS = ("fedsgd", "fedavg")
AGGREGATORS = ("mean", "median", "trimmed-mean", "krum", "centered-clip")


@dataclass(frozen=True)
class AggregationSpec:
    """Which rule combines the updates, with its knobs; `norm_bound` (a multiple of the round's
    median update norm) clips every update first and composes with any rule."""

    rule: str = "mean"
    trim_beta: float = 0.1
    krum_f: int = 1
    krum_m: int | None = None  # None: multi-Krum over n − f sites
    clip_tau: float | None = None  # None: the round's median distance
    norm_bound: float | None = None

    def pieces(self, mean: object) -> list[object]:
        front: list[object] = [norm_bound(self.norm_bound)] if self.norm_bound is not None else []
        if self.rule == "mean":
            return [*front, mean]
        if self.rule == "median":
            return [*front, coordinate_median()]
        if self.rule == "trimmed-mean":
            return [*front, trimmed_mean(self.trim_beta)]
        if self.rule == "krum":
            return [*front, krum(self.krum_f, self.krum_m)]
        if self.rule == "centered-clip":
            return [*front, centered_clip(self.clip_tau)]
        raise ConfigError(f"unknown aggregator '{self.rule}'; choose one of: {', '.join(AGGREGATORS)}")


@dataclass(frozen=True)
class Algorithm:
    name: str
    site_mode: SiteMode
    strategy: Strategy


def build_algorithm(name: str, *, lr: float, server_lr: float = 1.0, server_momentum: float = 0.0,
                    weighting: Weighting = "examples", site_weights: Mapping[str, float] | None = None,
                    aggregation: AggregationSpec | None = None) -> Algorithm:
    """fedsgd: sites send full-batch gradients, θ ← θ − lr·Σαᵢgᵢ.
    fedavg: sites train locally and send θ − θᵢ, θ ← θ − server_lr·Σαᵢ(θ − θᵢ).
    `aggregation` swaps the weighted mean for a robust rule (see fedcare.algorithms.robust).
    """
    combine = (aggregation or AggregationSpec()).pieces(weighted_mean(weighting, site_weights))
    if name == "fedsgd":
        return Algorithm(name, "gradient", chain(*combine, sgd(lr, server_momentum)))
    if name == "fedavg":
        return Algorithm(name, "local_epochs", chain(*combine, sgd(server_lr, server_momentum)))
    raise ConfigError(f"unknown algorithm '{name}'; choose one of: {', '.join(ALGORITHMS)}")
