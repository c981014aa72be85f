"""Server optimizers: turn the aggregate descent direction G into the step θ ← θ + step.

SGD (with optional momentum) and the adaptive optimizers of Reddi et al., "Adaptive Federated
Optimization" (ICLR 2021), Algorithm 2: FedAdagrad, FedAdam, FedYogi. Their Δ is the mean of
θ_local − θ and our G is −Δ (a descent direction), so their m is minus ours (v is the same) and their
step η·m/(√v+τ) is our −lr·m/(√v+τ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

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


def _require_lr(owner: str, lr: float) -> None:
    if not (np.isfinite(lr) and lr > 0):
        raise ConfigError(f"{owner}: server learning rate lr must be a finite number > 0, not {lr}")


def _require_beta(owner: str, name: str, beta: float) -> None:
    if not 0.0 <= beta < 1.0:  # NaN fails this too
        raise ConfigError(f"{owner}: {name} must be in [0, 1), not {beta}")


def _require_tau(owner: str, tau: float) -> None:
    if not (np.isfinite(tau) and tau > 0):
        raise ConfigError(f"{owner}: tau (the adaptivity floor) must be a finite number > 0, not {tau}")


Rule = Literal["adam", "yogi", "adagrad"]


@dataclass(frozen=True)
class Adaptive:
    """FedAdam, FedYogi, FedAdagrad: one piece, three rules for the second moment v.

        adam     v ← β2·v + (1−β2)·G²
        yogi     v ← v − (1−β2)·G²·sign(v − G²)   (moves v by an additive amount: steadier when sites
                                                     disagree; a sudden large G² cannot blow v up)
        adagrad  v ← v + G²                        (coordinates that keep moving get ever smaller steps)

    m ← β1·m + (1−β1)·G; step = −lr·m/(√v + τ). A per-coordinate step size evens out the server step
    when site updates are heterogeneous. State per param k: "m/k" (starts at 0) and "v/k" (starts at
    τ², Reddi's v₀ ≥ τ²), in the params' dtype. No bias correction, as in Reddi's algorithm: with the
    defaults and |G| ≫ τ the first step is about lr per coordinate whatever the scale of G.
    """

    rule: Rule
    lr: float
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    stage: ClassVar[StageName] = "optimize"

    def __post_init__(self) -> None:
        if self.rule not in ("adam", "yogi", "adagrad"):
            raise ConfigError(f"unknown adaptive rule '{self.rule}'; choose adam, yogi or adagrad")
        _require_lr(self.rule, self.lr)
        _require_beta(self.rule, "beta1", self.beta1)
        _require_beta(self.rule, "beta2", self.beta2)
        _require_tau(self.rule, self.tau)

    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        if self.rule == "adam":
            return self.beta2 * v + (1.0 - self.beta2) * g2
        if self.rule == "yogi":
            return v - (1.0 - self.beta2) * g2 * np.sign(v - g2)
        return v + g2

    def init(self, params: Params) -> State:
        state: State = {}
        for k, p in params.items():
            state[f"m/{k}"] = np.zeros_like(p)
            state[f"v/{k}"] = np.full_like(p, self.tau * self.tau)
        return state

    def apply(self, aggregate: Params, state: State, ctx: RoundContext) -> tuple[Params, State]:
        lr, beta1, tau = self.lr, self.beta1, self.tau
        step: Params = {}
        new_state = dict(state)  # the input state is left untouched
        for k, g in aggregate.items():
            m, v = state[f"m/{k}"], state[f"v/{k}"]
            m_new = (beta1 * m + (1.0 - beta1) * g).astype(m.dtype, copy=False)
            v_new = self._second_moment(v, np.square(g)).astype(v.dtype, copy=False)
            step[k] = (-lr * m_new / (np.sqrt(v_new) + tau)).astype(g.dtype, copy=False)
            new_state[f"m/{k}"], new_state[f"v/{k}"] = m_new, v_new
        return step, new_state


def adam(lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Adaptive:
    """FedAdam (Reddi et al.)."""
    return Adaptive("adam", lr, beta1, beta2, tau)


def yogi(lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Adaptive:
    """FedYogi (Reddi et al.)."""
    return Adaptive("yogi", lr, beta1, beta2, tau)


def adagrad(lr: float, tau: float = 1e-3, beta1: float = 0.0) -> Adaptive:
    """FedAdagrad (Reddi et al.): m = G by default (beta1 = 0); Reddi's momentum through beta1."""
    return Adaptive("adagrad", lr, beta1, 0.0, tau)
