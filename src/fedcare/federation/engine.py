"""The round engine: select sites, send params, collect updates, aggregate, evaluate, stop.

Transport-free and torch-free: simulation and deployment run this same loop with the same
strategy objects, so a result obtained in one is reproducible in the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedcare.algorithms.pieces import RoundContext
from fedcare.algorithms.recipes import Algorithm
from fedcare.core.errors import ConfigError, FedcareError
from fedcare.core.messages import FitRequest
from fedcare.core.params import Params, copy
from fedcare.core.update import Update
from fedcare.federation.anomalies import anomaly_report
from fedcare.federation.checkpoint import EngineCheckpoint
from fedcare.federation.guard import guarded_run
from fedcare.federation.transport import SiteMetrics, Transport

class QuorumError(FedcareError):
    """Fewer sites answered a round than the configured minimum."""


@dataclass(frozen=True)
class EngineSettings:
    rounds: int
    local_epochs: int = 1
    lr: float = 0.05
    batch_size: int = 16
    optimizer: str = "sgd"
    fraction: float = 1.0
    min_sites: int = 1
    patience: int | None = None
    seed: int = 0
    metric: str = "accuracy"  # the task's headline metric, for early stopping
    higher_is_better: bool = True
    eval_splits: tuple[str, ...] = ("val", "test")
    eval_every: int = 1  # evaluate the new params every N rounds, and after the last round
    eval_sites: int = 0  # a seeded sample of this many sites per evaluated round; 0 = every site


def evaluated_sites(settings: EngineSettings, rnd: int, site_ids: list[str]) -> list[str]:
    """The sites that judge round `rnd`'s params: none between evaluated rounds; all of them, or
    a sample drawn from its own (seed, round) generator, so selection's draws stay as they were."""
    s = settings
    if rnd % s.eval_every and rnd != s.rounds:
        return []
    if not s.eval_sites or s.eval_sites >= len(site_ids):
        return site_ids
    picked = np.random.default_rng([s.seed, rnd, 1]).choice(len(site_ids), size=s.eval_sites, replace=False)
    return [site_ids[i] for i in sorted(picked)]


@dataclass
class RoundRecord:
    round: int
    selected: list[str]
    train: dict[str, dict[str, float]]          # site -> {train_loss, num_examples}
    evaluation: dict[str, SiteMetrics]          # site -> split -> metrics of the new global params
    val_score: float | None
    anomalies: dict[str, dict] = field(default_factory=dict)  # site -> anomaly report (see anomalies.py)
    bytes: dict[str, int] = field(default_factory=dict)  # what crossed this round: upload, broadcast


@dataclass
class EngineResult:
    params: Params
    rounds_run: int
    best_round: int
    stopped_early: bool
    history: list[RoundRecord] = field(default_factory=list)


def site_seed(seed: int, round_: int, index: int) -> int:
    """A stable per-(run, round, site) seed for local shuffling."""
    return int(np.random.SeedSequence([seed, round_, index]).generate_state(1)[0])


def select_sites(site_ids: list[str], fraction: float, min_sites: int, rng: np.random.Generator) -> list[str]:
    k = min(len(site_ids), max(min_sites, math.ceil(fraction * len(site_ids))))
    if k >= len(site_ids):
        return list(site_ids)
    chosen = set(rng.choice(len(site_ids), size=k, replace=False).tolist())
    return [s for i, s in enumerate(site_ids) if i in chosen]


def mean_metric(evaluation: dict[str, SiteMetrics], split: str, metric: str) -> float | None:
    values = [m[split][metric] for m in evaluation.values() if split in m and m[split].get(metric) is not None]
    return float(np.mean(values)) if values else None


def _train_metrics(fitted) -> dict[str, dict[str, float]]:
    """Each answering site's scalars. A transport that hands over only a sum (secure aggregation)
    reports them beside it, as `site_metrics`."""
    given = getattr(fitted, "site_metrics", None)
    if given is not None:
        return {sid: dict(values) for sid, values in given.items()}
    return {u.site_id: {**u.metrics, "num_examples": float(u.num_examples)} for u in fitted.updates}


def _model_part(updates: list[Update], params: Params) -> list[Update]:
    """The updates restricted to the model's arrays (what the aggregate is compared with)."""
    if all(u.grad.keys() == params.keys() for u in updates):
        return updates
    return [Update(u.site_id, {k: u.grad[k] for k in params}, u.num_examples, u.metrics) for u in updates]


def _byte_counts(transport: Transport) -> tuple[int, int]:
    """(upload, broadcast) bytes moved so far."""
    upload = transport.bytes_upload
    return upload, transport.bytes_sent - upload


class RoundEngine:
    def __init__(self, algorithm: Algorithm, transport: Transport, settings: EngineSettings,
                 on_round: Callable[[RoundRecord], None] | None = None,
                 on_checkpoint: Callable[[EngineCheckpoint], None] | None = None):
        self.algorithm = algorithm
        self.transport = transport
        self.settings = settings
        self.on_round = on_round
        self.on_checkpoint = on_checkpoint

    def run(self, initial: Params, resume: EngineCheckpoint | None = None) -> EngineResult:
        """Run the rounds from the start, or from the round after `resume`'s."""
        s = self.settings
        site_ids = self.transport.site_ids()
        index = {sid: i for i, sid in enumerate(site_ids)}
        if resume is None:
            params = copy(initial)
            states = self.algorithm.strategy.init(params)
            best_params, best_score, best_round, first = copy(params), None, 0, 1
        else:
            order = list(initial)  # the model's order (files store names sorted): sums add up the same way
            params = {k: resume.params[k] for k in order}
            states = resume.states
            best_params = {k: resume.best_params[k] for k in order}
            best_score, best_round, first = resume.best_score, resume.best_round, resume.round + 1
        history: list[RoundRecord] = []
        stopped_early = False
        for rnd in range(first, s.rounds + 1):
            rng = np.random.default_rng([s.seed, rnd])
            if self.algorithm.selection == "cyclic":  # sites train in turn, as in FLamby's Cyclic
                selected = [site_ids[(rnd - 1) % len(site_ids)]]
            else:
                selected = select_sites(site_ids, s.fraction, s.min_sites, rng)
            a = self.algorithm
            scope = a.strategy.scope(states)  # arrays a site lacking an input neither receives nor sends
            requests = {sid: FitRequest(rnd, a.site_mode, s.local_epochs, s.lr, s.batch_size, s.optimizer,
                                        site_seed(s.seed, rnd, index[sid]), a.prox_mu, a.personalization,
                                        a.ditto_lambda, a.scaffold, dp_epsilon=a.dp_epsilon, dp_delta=a.dp_delta,
                                        dp_clip=a.dp_clip, planned_rounds=s.rounds, compress=a.compress_updates,
                                        error_feedback=a.error_feedback, skip=scope.get(sid, ()))
                        for sid in selected}
            # arrays some pieces send beside the params (SCAFFOLD's c); each update then mirrors the
            # whole message: the params' names plus these, validated on arrival like the rest
            extras = self.algorithm.strategy.broadcast(states)
            clash = [k for k in extras if k in params]
            if clash:
                raise ConfigError(f"the strategy broadcasts '{clash[0]}', which is also a model array's name")
            before = _byte_counts(self.transport)
            fitted = self.transport.fit(params, requests, extras) if extras else self.transport.fit(params, requests)
            updates = fitted.updates
            train = _train_metrics(fitted)
            if len(train) < s.min_sites:
                raise QuorumError(f"round {rnd}: {len(train)} of {len(selected)} selected sites answered; "
                                  f"at least {s.min_sites} are needed")
            ctx = RoundContext(params=params, round=rnd, rng=rng)
            outcome, left_out = guarded_run(self.algorithm.strategy, params, updates, states, ctx)
            if left_out:  # counted as refused; the round goes on with the others
                updates = [u for u in updates if u.site_id not in left_out]
                train = {sid: values for sid, values in train.items() if sid not in left_out}
            params, states = outcome.params, outcome.states
            judges = evaluated_sites(s, rnd, site_ids)
            evaluation = self.transport.evaluate(params, judges, s.eval_splits) if judges else {}
            val = mean_metric(evaluation, "val", s.metric)
            figures = self.algorithm.strategy.round_metrics(states)  # e.g. site-level ε after this round
            train = {sid: {**values, **figures} for sid, values in train.items()}
            report = anomaly_report(_model_part(updates, params), outcome.aggregate, outcome.decisions,
                                    {**fitted.refused, **left_out})
            after = _byte_counts(self.transport)
            moved = {"upload": after[0] - before[0], "broadcast": after[1] - before[1]}
            record = RoundRecord(rnd, selected, train, evaluation, val, report, moved)
            history.append(record)
            if self.on_round:
                self.on_round(record)
            if s.patience is None or (val is None and judges):
                best_params, best_round = params, rnd
            elif not judges:
                pass  # a round nobody judged: patience waits for the next evaluated one
            elif best_score is None or (val > best_score if s.higher_is_better else val < best_score):
                best_params, best_score, best_round = params, val, rnd
            elif rnd - best_round >= s.patience:
                stopped_early = True
            if self.on_checkpoint:
                self.on_checkpoint(EngineCheckpoint(rnd, params, states, best_params, best_round, best_score,
                                                    self.transport.bytes_sent, self.transport.bytes_upload))
            if stopped_early:
                break
        rounds_run = (resume.round if resume else 0) + len(history)
        return EngineResult(best_params, rounds_run, best_round, stopped_early, history)

