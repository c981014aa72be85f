"""Simulated faulty or hostile sites, to test robust aggregation. Pure numpy, no I/O.

`attack(kind, attackers, scale, seed)` is an "updates" piece that rewrites the updates of the named
attacker sites before aggregation (the others pass through untouched):

    sign-flip  g → −g                (a site pushing the model uphill; `scale` is not used)
    scale      g → scale · g         (a site shouting; with norm_bound or a robust rule it is damped)
    gaussian   g → noise ~ N(0, scale²), same shape and dtype as g (a broken site sending garbage)
    nan        g → all NaN           (a corrupt update)

Chain several to combine, e.g. a sign-flipped and scaled update:
chain(attack("sign-flip", ["c"]), attack("scale", ["c"], 10.0), coordinate_median(), sgd()).

About `nan`: on the wire such an update never reaches aggregation — `validate_params` refuses it
(ParamsError) when the update is read. Injected here, after that check, it models a site whose
update is corrupt: the rules in `fedcare.algorithms.robust` refuse it with a ParamsError naming the
site; `weighted_mean` has no such check and would make the model NaN. Use it to test that refusal.

Label flipping is a data-side attack (the attacker trains honestly on flipped labels, so its update
looks like a normal update): it cannot be a transform of updates. `flip_labels` is the pure
function the data layer calls on the attackers' training labels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from fedcare.algorithms.pieces import RoundContext, StageName, State
from fedcare.core.errors import ConfigError, DataError
from fedcare.core.params import Params
from fedcare.core.update import Update

AttackKind = Literal["sign-flip", "scale", "gaussian", "nan"]
ATTACK_KINDS: tuple[str, ...] = ("sign-flip", "scale", "gaussian", "nan")


@dataclass(frozen=True)
class Attack:
    """Rewrites the attackers' updates each round (see the module docstring for the kinds).

    `gaussian` draws, for the k-th attacker in sorted order, from
    np.random.default_rng([seed, ctx.round, k]): the same noise for a given seed, round and
    attacker, whichever other sites answered and in whatever order. Stateless.
    """

    kind: AttackKind
    attackers: tuple[str, ...]
    scale: float = 10.0
    seed: int = 0
    stage: ClassVar[StageName] = "updates"

    def __post_init__(self) -> None:
        if self.kind == "label-flip":
            raise ConfigError("attack kind 'label-flip' changes the attackers' training labels, not their "
                              "updates; call fedcare.algorithms.attacks.flip_labels in the data layer instead")
        if self.kind not in ATTACK_KINDS:
            raise ConfigError(f"unknown attack kind '{self.kind}'; choose one of: {', '.join(ATTACK_KINDS)}")
        if not (isinstance(self.scale, numbers.Real) and math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"attack scale must be a finite number > 0, not {self.scale!r}")
        if not (isinstance(self.seed, (int, np.integer)) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise ConfigError(f"attack seed must be an integer >= 0, not {self.seed!r}")
        if not all(isinstance(a, str) and a for a in self.attackers):
            raise ConfigError(f"attack attackers must be site ids (non-empty strings), not {self.attackers!r}")

    def init(self, params: Params) -> State:
        return {}

    def _rewrite(self, update: Update, index: int, round_: int) -> Update:
        grad: Params = {}
        rng = np.random.default_rng([self.seed, round_, index]) if self.kind == "gaussian" else None
        for name, g in update.grad.items():
            g = np.asarray(g)
            if self.kind == "sign-flip":
                new = -g
            elif self.kind == "scale":
                new = g * self.scale
            elif self.kind == "gaussian":
                assert rng is not None
                new = rng.normal(0.0, self.scale, size=g.shape)
            else:  # nan
                new = np.full(g.shape, np.nan)
            grad[name] = new.astype(g.dtype)
        return Update(update.site_id, grad, update.num_examples, dict(update.metrics))

    def apply(self, updates: Sequence[Update], state: State, ctx: RoundContext) -> tuple[list[Update], State]:
        index = {site: k for k, site in enumerate(self.attackers)}
        out = [self._rewrite(u, index[u.site_id], ctx.round) if u.site_id in index else u for u in updates]
        return out, state


def attack(kind: AttackKind, attackers: Iterable[str], scale: float = 10.0, seed: int = 0) -> Attack:
    """attack("sign-flip", ["site-c"]): rewrite site-c's update every round. Attackers that do not
    answer a round are simply absent; an empty list is a no-op (a baseline in a sweep)."""
    if isinstance(attackers, str):
        raise ConfigError(f"attack attackers must be a list of site ids, not the string '{attackers}'; "
                          f"write ['{attackers}']")
    return Attack(kind, tuple(sorted(set(attackers))), scale, seed)


def flip_labels(y: np.ndarray, task_kind: str, num_classes: int | None = None) -> np.ndarray:
    """The labels an attacking site trains on: binary 1 − y; multiclass (num_classes − 1) − y (with
    an odd number of classes the middle class maps to itself). Returns a new array of y's dtype.

    Regression has no classes to flip (ConfigError); labels outside the classes are a DataError.
    """
    y = np.asarray(y)
    if task_kind == "binary":
        if y.size and not np.all((y == 0) | (y == 1)):
            raise DataError("flip_labels: binary labels must be 0 or 1")
        return (1 - y).astype(y.dtype)
    if task_kind == "multiclass":
        if not (isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool)
                and num_classes >= 2):
            raise ConfigError(f"flip_labels needs num_classes >= 2 for a multiclass task, not {num_classes!r}")
        if y.size and not (np.all(y == np.round(y)) and y.min() >= 0 and y.max() <= num_classes - 1):
            raise DataError(f"flip_labels: multiclass labels must be integers in [0, {num_classes - 1}]")
        return ((num_classes - 1) - y).astype(y.dtype)
    raise ConfigError(f"flip_labels works on 'binary' or 'multiclass' labels, not '{task_kind}'")
