"""The composable pieces a strategy is chained from, optax style: each piece is small, has an
explicit `init(params) -> state` and a pure `apply(value, state, ctx) -> (value, state)`.

A round flows through three stages, in this order:

    updates ──[UpdatesPiece]*──► updates ──[Aggregator]──► aggregate ──[AggregatePiece]*──► aggregate
            ──[ServerOptimizer]──► step (θ ← θ + step)

Clipping or attack simulation act on updates, robust rules and means are aggregators, noise on the
aggregate is an aggregate piece, and FedAdam or momentum are server optimizers: later capabilities
are new pieces, not new strategy classes. State is plain data (name -> array) so it can be saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from fedcare.core.params import Params
from fedcare.core.update import Update

State = dict[str, np.ndarray]
StageName = Literal["updates", "aggregate_updates", "aggregate", "optimize"]


@dataclass(frozen=True)
class RoundContext:
    """What a piece may know about the round besides its input: the global params and the round."""

    params: Params
    round: int
    rng: np.random.Generator


@runtime_checkable
class UpdatesPiece(Protocol):
    """Transforms the list of site updates (clip each, drop bad ones, simulate an attack)."""

    stage: ClassVar[StageName]

    def init(self, params: Params) -> State: ...

    def apply(self, updates: Sequence[Update], state: State, ctx: RoundContext) -> tuple[list[Update], State]: ...


@runtime_checkable
class Aggregator(Protocol):
    """Combines many updates into one aggregate direction (same names and shapes as params)."""

    stage: ClassVar[StageName]

    def init(self, params: Params) -> State: ...

    def apply(self, updates: Sequence[Update], state: State, ctx: RoundContext) -> tuple[Params, State]: ...


@runtime_checkable
class AggregatePiece(Protocol):
    """Transforms the aggregate before the optimizer (e.g. add Gaussian noise)."""

    stage: ClassVar[StageName]

    def init(self, params: Params) -> State: ...

    def apply(self, aggregate: Params, state: State, ctx: RoundContext) -> tuple[Params, State]: ...


@runtime_checkable
class ServerOptimizer(Protocol):
    """Turns the aggregate descent direction G into the step added to the global params."""

    stage: ClassVar[StageName]

    def init(self, params: Params) -> State: ...

    def apply(self, aggregate: Params, state: State, ctx: RoundContext) -> tuple[Params, State]: ...
