"""Algorithms layer: aggregators, server optimizers and their composition. Pure numpy, no I/O."""

from fedcare.algorithms.aggregators import WeightedMean, weighted_mean
from fedcare.algorithms.optimizers import SGD, sgd
from fedcare.algorithms.pieces import (
    AggregatePiece,
    Aggregator,
    RoundContext,
    ServerOptimizer,
    State,
    UpdatesPiece,
)
from fedcare.algorithms.strategy import Strategy, chain, replace_aggregator

__all__ = [
    "SGD",
    "AggregatePiece",
    "Aggregator",
    "RoundContext",
    "ServerOptimizer",
    "State",
    "Strategy",
    "UpdatesPiece",
    "WeightedMean",
    "chain",
    "replace_aggregator",
    "sgd",
    "weighted_mean",
]
