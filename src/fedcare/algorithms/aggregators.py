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
        """Consume `updates` once (a list or a generator), holding at most one update at a time.

        The running sum is float64 and is updated in place, chunk by chunk, so the memory beyond
        the result is one chunk of scratch however large the model and however many sites answer.
        Why float64 although the models are float32: a weighted sum of finite float32 values can
        overflow float32 (one site's 3e38 times its 100 examples is inf, and the mean becomes NaN),
        never float64; the mean is cast back to the params' dtype at the end. It costs one
        float64 copy of the model (twice its float32 size) for the sum.
        """
        total: dict[str, np.ndarray] | None = None
        scratch: dict[np.dtype, np.ndarray] = {}
        weight_sum = 0.0
        for update in updates:
            w = self.weight(update)
            if total is None:
                total = {k: np.zeros(np.shape(v), np.float64) for k, v in update.grad.items()}
                dtypes = {k: np.asarray(ctx.params.get(k, v)).dtype for k, v in update.grad.items()}
            _add_scaled(total, update, w, scratch)
            weight_sum += w
            del update  # let the next update arrive before this one is kept alive by the loop variable
        if total is None:
            raise ValueError("weighted_mean needs at least one update")
        if weight_sum <= 0:
            raise ConfigError("every answering site has weight 0; give at least one site a positive weight")
        for v in total.values():
            np.divide(v, weight_sum, out=v)
        return {k: total.pop(k).astype(dtypes[k], copy=False) for k in list(total)}, state  # one at a time


#: Elements processed per step when adding an update into a running sum: 512 KiB of float64 scratch,
#: small enough to stay in cache, large enough that the Python loop costs nothing measurable.
CHUNK = 1 << 16


def _add_scaled(total: dict[str, np.ndarray], update: Update, w: float,
                scratch: dict[np.dtype, np.ndarray]) -> None:
    """total[k] += w · update.grad[k] for every array, in place, in chunks of CHUNK elements."""
    if update.grad.keys() != total.keys():
        raise ValueError(f"update from '{update.site_id}' holds arrays {sorted(update.grad)}; "
                         f"expected {sorted(total)}")
    for k, acc in total.items():
        value = np.asarray(update.grad[k])
        if value.shape != acc.shape:
            raise ValueError(f"update from '{update.site_id}': array '{k}' has shape {value.shape}; "
                             f"expected {acc.shape}")
        if w == 0.0 or acc.size == 0:
            continue
        src = value.reshape(-1) if value.flags.c_contiguous else np.ascontiguousarray(value).reshape(-1)
        dst = acc.reshape(-1)  # a view: the accumulator is contiguous
        tmp = scratch.get(acc.dtype)
        if tmp is None:
            largest = max(a.size for a in total.values() if a.dtype == acc.dtype)
            tmp = scratch[acc.dtype] = np.empty(min(CHUNK, largest), acc.dtype)
        for start in range(0, dst.size, CHUNK):
            stop = min(start + CHUNK, dst.size)
            part = tmp[:stop - start]
            np.multiply(src[start:stop], w, out=part, dtype=acc.dtype)  # in float64, not in the update's float32
            np.add(dst[start:stop], part, out=dst[start:stop])


def weighted_mean(weighting: Weighting = "examples", site_weights: Mapping[str, float] | None = None) -> WeightedMean:
    return WeightedMean(weighting, dict(site_weights or {}))
