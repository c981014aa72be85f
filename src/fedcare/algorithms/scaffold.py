"""SCAFFOLD's server side (Karimireddy et al., ICML 2020): the control variate c as one strategy piece.

The algorithm is this piece plus a site-side option (`FitRequest.scaffold`, see
fedcare.learning.site); the round engine and the transports are the ones every algorithm uses.

In our sign convention (an update is a descent direction θ − yᵢ):

* the coordinator keeps c (params-shaped, zeros at start) in this piece's state and broadcasts it
  beside the params as `control/<name>` arrays (`broadcast`);
* site i keeps cᵢ (zeros at start), takes K local SGD steps along ∇ℓ(y) − cᵢ + c, sets
  cᵢ⁺ = cᵢ − c + (θ − yᵢ)/(K·lr) (the paper's option II) and sends θ − yᵢ plus Δcᵢ = cᵢ⁺ − cᵢ as
  `control/<name>` arrays; cᵢ itself never leaves the site;
* this piece (stage "updates", first in the chain) takes the Δcᵢ out of every update, so the
  aggregator and any robust piece after it see ordinary params-shaped updates, and sets
  c ← c + (|S|/N)·meanᵢ Δcᵢ = c + ΣᵢΔcᵢ/N over the |S| sites that answered, N sites in all;
* the aggregator and server optimizer then give θ ← θ − η_g·mean(θ − yᵢ), as in FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedcare.algorithms.pieces import RoundContext, StageName, State
from fedcare.core.errors import ConfigError, ParamsError
from fedcare.core.messages import control_name, split_controls
from fedcare.core.params import Params
from fedcare.core.update import Update


@dataclass(frozen=True)
class ScaffoldControl:
    """The server control variate c: broadcast each round, updated from the sites' Δcᵢ.

    State: {param name: c[name]}, plain arrays in the params' dtypes (checkpointable like any state).
    """

    num_sites: int
    stage: ClassVar[StageName] = "updates"

    def __post_init__(self) -> None:
        if not (isinstance(self.num_sites, int) and self.num_sites >= 1):
            raise ConfigError(f"scaffold needs the number of sites in the federation (>= 1), not {self.num_sites!r}")

    def init(self, params: Params) -> State:
        return {k: np.zeros_like(v) for k, v in params.items()}

    def broadcast(self, state: State) -> Params:
        """The arrays sent to every selected site beside the params: c, as `control/<name>`."""
        return {control_name(k): v for k, v in state.items()}

    def apply(self, updates: Sequence[Update], state: State, ctx: RoundContext) -> tuple[list[Update], State]:
        if len(updates) > self.num_sites:
            raise ConfigError(f"scaffold was built for {self.num_sites} sites but {len(updates)} answered")
        total = {k: np.zeros(v.shape, np.float64) for k, v in state.items()}
        stripped: list[Update] = []
        for update in updates:
            model, deltas = split_controls(update.grad)
            missing = [k for k in state if k not in deltas]
            if missing:
                raise ParamsError(f"update from '{update.site_id}' lacks control delta "
                                  f"'{control_name(missing[0])}' (is the site running scaffold?)")
            extra = [k for k in deltas if k not in state]
            if extra:
                raise ParamsError(f"update from '{update.site_id}' holds unexpected array '{control_name(extra[0])}'")
            for k, acc in total.items():
                acc += np.asarray(deltas[k], dtype=np.float64)
            stripped.append(Update(update.site_id, model, update.num_examples, dict(update.metrics)))
        new = {k: (state[k] + total[k] / self.num_sites).astype(state[k].dtype) for k in state}
        return stripped, new


def scaffold_control(num_sites: int) -> ScaffoldControl:
    """SCAFFOLD's server control variate for a federation of `num_sites` sites."""
    return ScaffoldControl(num_sites)
