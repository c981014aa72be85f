"""chain(...): compose pieces into the strategy the round engine calls once per round."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedcare.algorithms.pieces import RoundContext, State
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.core.update import Update

_ORDER = {"updates": 0, "aggregate_updates": 1, "aggregate": 2, "optimize": 3}


@dataclass(frozen=True)
class RoundOutcome:
    """A round's result plus what the anomaly report needs: the aggregate direction (before the
    server optimizer) and, per piece that can say so, the weight it gave each site."""

    params: Params
    states: list[State]
    aggregate: Params
    decisions: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Strategy:
    """updates pieces*, one aggregator, aggregate pieces*, one server optimizer — checked at build."""

    pieces: tuple

    def init(self, params: Params) -> list[State]:
        return [piece.init(params) for piece in self.pieces]

    def broadcast(self, states: list[State]) -> Params:
        """Extra arrays the pieces send to the sites beside the params (e.g. SCAFFOLD's control
        variate), from any piece with a `broadcast(state) -> Params`. Empty for most strategies."""
        out: Params = {}
        for piece, state in zip(self.pieces, states, strict=True):
            fn = getattr(piece, "broadcast", None)
            if not callable(fn):
                continue
            for name, arr in fn(state).items():
                if name in out:
                    raise ConfigError(f"two strategy pieces broadcast an array named '{name}'")
                out[name] = arr
        return out

    def scope(self, states: list[State]) -> dict[str, tuple[str, ...]]:
        """Per site, the name prefixes of arrays it should neither receive nor send next round (an
        input it lacks: fedcare.algorithms.modalities), from any piece with a `scope(state)`."""
        out: dict[str, tuple[str, ...]] = {}
        for piece, state in zip(self.pieces, states, strict=True):
            fn = getattr(piece, "scope", None)
            if callable(fn):
                for site_id, prefixes in fn(state).items():
                    out[site_id] = out.get(site_id, ()) + tuple(prefixes)
        return out

    def round_metrics(self, states: list[State]) -> dict[str, float]:
        """Scalars the pieces report after a round (site-level DP: ε spent, the clip norm), from any
        piece with a `round_metrics(state) -> dict`; they join each answering site's training row."""
        out: dict[str, float] = {}
        for piece, state in zip(self.pieces, states, strict=True):
            fn = getattr(piece, "round_metrics", None)
            if callable(fn):
                out.update(fn(state))
        return out

    def run(self, params: Params, updates: Iterable[Update], states: list[State], ctx: RoundContext) -> RoundOutcome:
        """Run one round's updates through every piece.

        A list of updates is reported on (decisions); any other iterable goes straight to the
        aggregator unmaterialised when no update piece precedes it, so a streaming aggregator holds
        one update at a time however many sites answer.
        """
        value: object = updates
        report = isinstance(updates, list)  # a stream is not kept: the aggregate is dropped once stepped
        aggregate: Params = {}
        decisions: dict[str, dict[str, float]] = {}
        new_states: list[State] = []
        for piece, state in zip(self.pieces, states, strict=True):
            if piece.stage == "updates" and not isinstance(value, list):
                value = list(value)  # type: ignore[call-overload]
            if isinstance(value, list) and callable(getattr(piece, "decisions", None)):
                decisions[type(piece).__name__] = piece.decisions(value, ctx, state)
            if piece.stage == "optimize" and report:
                aggregate = value  # type: ignore[assignment]
            value, state = piece.apply(value, state, ctx)
            new_states.append(state)
        step: Params = value  # type: ignore[assignment]
        new_params = {k: np.add(params[k], step[k], dtype=params[k].dtype) for k in params}
        return RoundOutcome(new_params, new_states, aggregate, decisions)

    def step(self, params: Params, updates: Iterable[Update], states: list[State],
             ctx: RoundContext) -> tuple[Params, list[State]]:
        """The new global params and piece states after one round."""
        outcome = self.run(params, updates, states, ctx)
        return outcome.params, outcome.states


def chain(*pieces: object) -> Strategy:
    """Compose pieces in stage order, e.g. chain(clip(1.0), trimmed_mean(0.1), adam(lr=0.01))."""
    stages = []
    for piece in pieces:
        stage = getattr(piece, "stage", None)
        if stage not in _ORDER or not callable(getattr(piece, "apply", None)):
            raise ConfigError(f"{piece!r} is not a strategy piece (it needs a stage, init and apply)")
        stages.append(stage)
    if stages.count("aggregate_updates") != 1:
        raise ConfigError("a strategy needs exactly one aggregator (e.g. weighted_mean())")
    if stages.count("optimize") != 1 or stages[-1] != "optimize":
        raise ConfigError("a strategy must end with exactly one server optimizer (e.g. sgd(1.0))")
    ranks = [_ORDER[s] for s in stages]
    if ranks != sorted(ranks):
        raise ConfigError("strategy pieces are out of order: update pieces, then the aggregator, "
                          "then aggregate pieces, then the server optimizer")
    return Strategy(tuple(pieces))


def replace_aggregator(strategy: Strategy, aggregator: object) -> Strategy:
    """The same strategy with its aggregator swapped (how a user plugs in their own rule)."""
    return chain(*(aggregator if getattr(p, "stage", None) == "aggregate_updates" else p for p in strategy.pieces))
