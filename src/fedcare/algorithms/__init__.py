"""Algorithms layer: aggregators, server optimizers and their composition. Pure numpy, no I/O."""

from fedcare.algorithms.aggregators import WeightedMean, weighted_mean
from fedcare.algorithms.attacks import Attack, attack, flip_labels
from fedcare.algorithms.optimizers import SGD, Adaptive, adagrad, adam, sgd, yogi
from fedcare.algorithms.pieces import (
    AggregatePiece,
    Aggregator,
    RoundContext,
    ServerOptimizer,
    State,
    UpdatesPiece,
)
from fedcare.algorithms.robust import (
    CenteredClip,
    CoordinateMedian,
    Krum,
    NormBound,
    TrimmedMean,
    centered_clip,
    coordinate_median,
    krum,
    norm_bound,
    trimmed_mean,
    update_report,
)
from fedcare.algorithms.scaffold import scaffold_control
from fedcare.algorithms.strategy import RoundOutcome, Strategy, chain, replace_aggregator

__all__ = [
    "SGD",
    "Adaptive",
    "adagrad",
    "adam",
    "yogi",
    "Attack",
    "CenteredClip",
    "CoordinateMedian",
    "Krum",
    "NormBound",
    "RoundOutcome",
    "TrimmedMean",
    "attack",
    "centered_clip",
    "coordinate_median",
    "flip_labels",
    "krum",
    "norm_bound",
    "trimmed_mean",
    "update_report",
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
    "scaffold_control",
    "sgd",
    "weighted_mean",
]
