"""Named algorithms: what a site does each round (its mode) and the server-side chain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fedcare.algorithms.aggregators import Weighting, weighted_mean
from fedcare.algorithms.optimizers import adagrad, adam, sgd, yogi
from fedcare.algorithms.robust import centered_clip, coordinate_median, krum, norm_bound, trimmed_mean
from fedcare.algorithms.scaffold import scaffold_control
from fedcare.algorithms.strategy import Strategy, chain
from fedcare.core.errors import ConfigError

SiteMode = Literal["gradient", "local_epochs"]
ALGORITHMS = ("fedsgd", "fedavg", "fedprox", "cyclic", "fedadam", "fedyogi", "fedadagrad", "scaffold")
SERVER_LR = {"fedavg": 1.0, "scaffold": 1.0, "fedprox": 1.0, "cyclic": 1.0, "fedadam": 0.01, "fedyogi": 0.01, "fedadagrad": 0.01}
"""Default server learning rate per algorithm: 1.0 makes the mean of the local models the new model;
the adaptive optimizers take steps of about lr per coordinate, so they start small."""
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
    """What a site does each round (mode, FedProx's μ), which sites train, and the server chain."""

    name: str
    site_mode: SiteMode
    strategy: Strategy
    selection: Literal["random", "cyclic"] = "random"
    prox_mu: float = 0.0
    personalization: str = "none"  # site-side: see fedcare.learning.site
    ditto_lambda: float = 0.1
    dp_epsilon: float | None = None  # site-side record-level DP budget (DP-SGD), None = off
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    scaffold: bool = False  # site-side SCAFFOLD correction (the server side is the scaffold_control piece)
    compress_updates: str = "none"  # site-side: how updates travel (core/compression.py)
    error_feedback: bool = False  # site-side: carry what compression dropped into the next update


def build_algorithm(name: str, *, lr: float, server_lr: float | None = None, server_momentum: float = 0.0,
                    weighting: Weighting = "examples", site_weights: Mapping[str, float] | None = None,
                    aggregation: AggregationSpec | None = None, prox_mu: float = 0.01,
                    num_sites: int | None = None) -> Algorithm:
    """fedsgd: sites send full-batch gradients, θ ← θ − lr·Σαᵢgᵢ.
    fedavg: sites train locally and send θ − θᵢ, θ ← θ − server_lr·Σαᵢ(θ − θᵢ).
    fedprox: fedavg whose local loss adds μ/2·‖θᵢ − θ‖² (Li et al., MLSys 2020).
    cyclic: one site per round, in turn, continuing from the previous site's model (FLamby's Cyclic).
    fedadam / fedyogi / fedadagrad: fedavg with an adaptive server step (Reddi et al., ICLR 2021).
    scaffold: fedavg with control variates correcting client drift (Karimireddy et al., ICML 2020);
      needs `num_sites`, the number of sites in the federation (see fedcare.algorithms.scaffold).
    `aggregation` swaps the weighted mean for a robust rule (see fedcare.algorithms.robust).
    """
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm '{name}'; choose one of: {', '.join(ALGORITHMS)}")
    combine = (aggregation or AggregationSpec()).pieces(weighted_mean(weighting, site_weights))
    if name == "fedsgd":
        return Algorithm(name, "gradient", chain(*combine, sgd(lr, server_momentum)))
    slr = SERVER_LR[name] if server_lr is None else server_lr
    if name == "scaffold":
        if num_sites is None:
            raise ConfigError("scaffold needs num_sites, the number of sites in the federation")
        return Algorithm(name, "local_epochs", chain(scaffold_control(num_sites), *combine, sgd(slr, server_momentum)),
                         scaffold=True)
    optimizer = {"fedadam": adam, "fedyogi": yogi, "fedadagrad": adagrad}.get(name)
    server = optimizer(slr) if optimizer else sgd(slr, server_momentum)
    return Algorithm(name, "local_epochs", chain(*combine, server),
                     selection="cyclic" if name == "cyclic" else "random",
                     prox_mu=prox_mu if name == "fedprox" else 0.0)
