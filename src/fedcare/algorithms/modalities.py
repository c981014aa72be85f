"""Aggregation with missing modalities: each input's encoder is averaged over the sites that trained
it this round, weighted by their patients that had the input; the rest of the model as the wrapped
weighted mean does it.

A fusion model names an input's parameters `encoders.<input>.…` (fedcare.learning.fusion). Each site
reports, beside its update, `rows.<input>`: how many of its training rows have the input (a count,
like `num_examples`). The piece keeps the last count of every site, and `scope` tells the engine which
encoders a site without any such row neither receives nor sends in later rounds (its FitRequest's
`skip`); the transport fills what a site did not send with zeros, which get weight 0 here. An encoder
no site trained this round does not move. Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedcare.algorithms.aggregators import WeightedMean
from fedcare.algorithms.pieces import RoundContext, StageName, State
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.core.update import Update


def encoder_prefix(input_name: str) -> str:
    return f"encoders.{input_name}."


def rows_metric(input_name: str) -> str:
    return f"rows.{input_name}"


def _key(site_id: str, input_name: str) -> str:
    return f"rows/{input_name}/{site_id}"  # the site id last: it may hold any character


@dataclass(frozen=True)
class ModalityMean:
    mean: WeightedMean
    inputs: tuple[str, ...]  # the inputs that have an encoder of their own
    stage: ClassVar[StageName] = "aggregate_updates"

    def init(self, params: Params) -> State:
        return {}

    def scope(self, state: State) -> dict[str, tuple[str, ...]]:
        """Per site, the encoders it had no training rows for when it last answered."""
        out: dict[str, list[str]] = {}
        for key, rows in state.items():
            _, input_name, site_id = key.split("/", 2)
            if float(rows[0]) == 0.0:
                out.setdefault(site_id, []).append(encoder_prefix(input_name))
        return {sid: tuple(prefixes) for sid, prefixes in out.items()}

    def _rows(self, update: Update, input_name: str, skipped: Sequence[str]) -> float:
        if encoder_prefix(input_name) in skipped:
            return 0.0  # told not to train it this round: what it holds there is filled in, not trained
        return float(update.metrics.get(rows_metric(input_name), update.num_examples))

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        updates = list(updates)
        if not updates:
            raise ValueError("modality_mean needs at least one update")
        scope = self.scope(state)
        base = [self.mean.weight(u) for u in updates]
        if sum(base) <= 0:
            raise ConfigError("every answering site has weight 0; give at least one site a positive weight")
        weights: dict[str | None, list[float]] = {None: base}
        for name in self.inputs:
            rows = [self._rows(u, name, scope.get(u.site_id, ())) for u in updates]
            weights[name] = [b * (r / u.num_examples if self.mean.weighting == "examples" else float(r > 0))
                             for b, r, u in zip(base, rows, updates)]
        prefixes = {name: encoder_prefix(name) for name in self.inputs}
        out: Params = {}
        for k, like in updates[0].grad.items():
            group = next((name for name, p in prefixes.items() if k.startswith(p)), None)
            w = weights[group]
            total = float(sum(w))
            acc = np.zeros(np.shape(like), np.float64)
            for wi, u in zip(w, updates):
                if wi:
                    acc += wi * np.asarray(u.grad[k], np.float64)
            if total > 0:
                acc /= total
            out[k] = acc.astype(np.asarray(ctx.params.get(k, like)).dtype, copy=False)
        new_state = dict(state)
        for u in updates:
            for name in self.inputs:
                new_state[_key(u.site_id, name)] = np.array([float(u.metrics.get(rows_metric(name), u.num_examples))])
        return out, new_state


def modality_mean(mean: WeightedMean, inputs: Sequence[str]) -> ModalityMean:
    return ModalityMean(mean, tuple(inputs))
