"""Aggregators: combine site updates into one direction. Pure numpy, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from fedcare.algorithms.pieces import RoundContext, StageName, State
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.core.update import Update

Weighting = Literal["examples", "uniform"]


@dataclass(frozen=True)
class WeightedMean:
    """G = Σ αᵢ gᵢ with αᵢ ∝ baseᵢ × site_weightᵢ, normalised to sum to 1.

    base is the site's number of examples ("examples") or 1 ("uniform", plain federated averaging of
    gradients); `site_weights` multiplies in a per-site quality weight from the config (default 1).
    Streams: one running sum the size of the model, however many sites answer.
    """

    weighting: Weighting = "examples"
    site_weights: Mapping[str, float] = field(default_factory=dict)
    stage: ClassVar[StageName] = "aggregate_updates"

    def __post_init__(self) -> None:
        if self.weighting not in ("examples", "uniform"):
            raise ConfigError(f"weighting must be 'examples' or 'uniform', not '{self.weighting}'")
        for site, w in self.site_weights.items():
            if not (np.isfinite(w) and w >= 0):
                raise ConfigError(f"site weight for '{site}' must be a finite number >= 0, not {w}")

    def init(self, params: Params) -> State:
        return {}

    def weight(self, update: Update) -> float:
        base = float(update.num_examples) if self.weighting == "examples" else 1.0
        return base * float(self.site_weights.get(update.site_id, 1.0))

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        total: dict[str, np.ndarray] | None = None
        weight_sum = 0.0
        for update in updates:
            w = self.weight(update)
            if total is None:
                total = {k: np.zeros(v.shape, np.float64) for k, v in update.grad.items()}
            for k, v in update.grad.items():
                total[k] += w * v
            weight_sum += w
        if total is None:
            raise ValueError("weighted_mean needs at least one update")
        if weight_sum <= 0:
            raise ConfigError("every answering site has weight 0; give at least one site a positive weight")
        return {k: (v / weight_sum).astype(ctx.params[k].dtype) for k, v in total.items()}, state


def weighted_mean(weighting: Weighting = "examples", site_weights: Mapping[str, float] | None = None) -> WeightedMean:
    return WeightedMean(weighting, dict(site_weights or {}))
