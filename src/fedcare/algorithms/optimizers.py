"""Server optimizers: turn the aggregate descent direction G into the step θ ← θ + step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedcare.algorithms.pieces import RoundContext, StageName, State
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params


@dataclass(frozen=True)
class SGD:
    """step = −lr·G, or with momentum β: m ← β·m + G, step = −lr·m (FedAvgM).

    With G = θ − mean(θ_local) and lr = 1 this is plain FedAvg; with G the mean gradient it is FedSGD.
    """

    lr: float = 1.0
    momentum: float = 0.0
    stage: ClassVar[StageName] = "optimize"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"server learning rate must be > 0, not {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"server momentum must be in [0, 1), not {self.momentum}")

    def init(self, params: Params) -> State:
        if self.momentum == 0.0:
            return {}
        return {f"m/{k}": np.zeros_like(v) for k, v in params.items()}

    def apply(self, aggregate: Params, state: State, ctx: RoundContext) -> tuple[Params, State]:
        if self.momentum == 0.0:
            return {k: (-self.lr * g).astype(g.dtype, copy=False) for k, g in aggregate.items()}, state
        new_state = {f"m/{k}": (self.momentum * state[f"m/{k}"] + g).astype(g.dtype) for k, g in aggregate.items()}
        return {k: (-self.lr * new_state[f"m/{k}"]).astype(g.dtype) for k, g in aggregate.items()}, new_state


def sgd(lr: float = 1.0, momentum: float = 0.0) -> SGD:
    return SGD(lr, momentum)
