"""Never broadcast params that no site can train with.

Each update is validated on arrival (finite, the model's names, shapes and dtypes), but finite is not
enough: one site's 3e38 is a finite float32, and a mean with it gives params whose squares (every
loss and every L2 penalty) overflow. Sent out, every honest site's next update is NaN and the run
stops. So the new params must stay within the square root of their dtype's largest value; when they
do not, the round is run again without the update with the largest value, which is refused with the
reason, until they do. When no single update can be left out (one update, a stream, or a securely
aggregated sum), the round's step is not taken and the params stay as they were.
"""

from __future__ import annotations

import math

import numpy as np

from fedcare.algorithms.pieces import RoundContext, State
from fedcare.algorithms.strategy import RoundOutcome, Strategy
from fedcare.core.params import Params
from fedcare.core.update import Update

REFUSED = "its update would make the global params non-finite or too large to train with"


def trainable(params: Params) -> bool:
    """Every value finite and its square finite in its own dtype."""
    for value in params.values():
        value = np.asarray(value)
        if value.dtype.kind == "f" and value.size and not float(np.max(np.abs(value))) <= math.sqrt(
                float(np.finfo(value.dtype).max)):
            return False  # `not <=` is also true for NaN
    return True


def _largest(update: Update) -> float:
    return max((float(np.max(np.abs(v))) for v in update.grad.values() if np.size(v)), default=0.0)


def guarded_run(strategy: Strategy, params: Params, updates: object, states: list[State],
                ctx: RoundContext) -> tuple[RoundOutcome, dict[str, str]]:
    """The round's outcome with trainable params, and the sites whose update was left out, with why."""
    outcome = strategy.run(params, updates, states, ctx)  # type: ignore[arg-type]
    refused: dict[str, str] = {}
    while not trainable(outcome.params):
        if not isinstance(updates, list) or len(updates) < 2:
            everyone = [u.site_id for u in updates] if isinstance(updates, list) else []
            refused.update({sid: REFUSED + "; the round's step was not taken" for sid in everyone})
            return RoundOutcome(params, states, {}, outcome.decisions), refused
        culprit = max(updates, key=_largest)
        refused[culprit.site_id] = REFUSED
        updates = [u for u in updates if u is not culprit]
        outcome = strategy.run(params, updates, states, ctx)
    return outcome, refused
