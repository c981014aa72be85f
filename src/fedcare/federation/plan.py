"""The plan: what a config makes of the data's shape. This is the one composition root: `simulate`,
the network coordinator, each site agent, `fedcare benchmark` and `fedcare audit` all build their
task, model, algorithm and engine settings here, so they cannot drift apart.

The plan needs no rows: the coordinator makes it from what data preparation taught it, and each
site makes the same plan from the declarative message the coordinator sends. It is the federation
layer's one module that uses the learning layer (the task and the model): making a plan needs
PyTorch, importing the round engine and the algorithms does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedcare.algorithms.aggregators import WeightedMean
from fedcare.algorithms.modalities import modality_mean
from fedcare.algorithms.privacy import calibrate_site_dp, site_level_dp
from fedcare.algorithms.recipes import SERVER_LR, AggregationSpec, Algorithm, build_algorithm
from fedcare.algorithms.robust import krum
from fedcare.algorithms.secagg import SecurePlan, check_threshold, quantized_secure, secure_mean
from fedcare.algorithms.strategy import replace_aggregator
from fedcare.core.config import FederationConfig
from fedcare.core.config.privacy import SITE_DP_SERVER_LR
from fedcare.core.errors import ConfigError
from fedcare.core.messages import FitRequest
from fedcare.core.params import Params
from fedcare.data.dataset import DataShape, SiteData
from fedcare.federation.engine import EngineSettings, select_sites, site_seed
from fedcare.learning.headline import choose_metric
from fedcare.learning.models import (
    ModelFactory,
    batch_norm_names,
    build_model,
    get_params,
    head_names,
    initial_model,
)
from fedcare.learning.site import LocalSite
from fedcare.learning.tasks import Task, make_task
from fedcare.learning.training import use_threads


@dataclass(frozen=True)
class Plan:
    """The task, the model, the algorithm and the engine settings of a run."""

    config: FederationConfig
    shape: DataShape
    task: Task
    algorithm: Algorithm
    settings: EngineSettings
    new_model: Callable[[], Any]  # a fresh torch module with the run's initial weights
    secure: SecurePlan | None = None  # the settings of every secure round, when the config asks for them

    def local_site(self, data: SiteData) -> LocalSite:
        """A site's side of the run, holding its examples (in this process, or in its agent)."""
        return LocalSite(data.site_id, self.task, self.new_model(), data.splits, tuple(self.shape.inputs))

    def initial_params(self) -> Params:
        """The model every site and baseline starts from (seeded: the same everywhere)."""
        return get_params(self.new_model())

    def baseline(self) -> tuple[Algorithm, EngineSettings]:
        """What the local and pooled baselines run: the run's algorithm on one site (SCAFFOLD with one
        site is FedAvg), without site weights, attacks or robust rules, every round on that site."""
        cfg = self.config
        a = cfg.algorithm
        algorithm = build_algorithm("fedavg" if a.name == "scaffold" else a.name, lr=cfg.training.lr,
                                    server_lr=a.server_lr, server_momentum=a.server_momentum, prox_mu=a.prox_mu)
        return algorithm, replace(self.settings, fraction=1.0, min_sites=1)

    def personalize_request(self, index: int) -> FitRequest:
        """The final local work that turns the global model into site `index`'s own."""
        cfg, t = self.config, self.config.training
        last = cfg.algorithm.rounds + 1
        return FitRequest(last, "local_epochs", cfg.personalization.finetune_epochs, t.lr, t.batch_size, t.optimizer,
                          site_seed(cfg.run.seed, last, index), 0.0, cfg.personalization.mode,
                          cfg.personalization.ditto_lambda)


def make_plan(cfg: FederationConfig, shape: DataShape, site_ids: Sequence[str], *,
              model_factory: ModelFactory | None = None, aggregator: object | None = None) -> Plan:
    """The plan for data of this shape at these sites; `model_factory` and `aggregator` are a Python
    user's own pieces."""
    unknown = sorted(set(cfg.algorithm.site_weights) - set(site_ids))
    if unknown:
        raise ConfigError(f"site_weights names unknown site '{unknown[0]}'; the sites are {', '.join(site_ids)}")
    use_threads(cfg.training.threads)
    task = choose_metric(make_task(shape), cfg.evaluation)
    if cfg.privacy.dp_epsilon is not None and not task.per_example:
        raise ConfigError(f"record-level DP needs a per-patient loss; the {task.name} task's loss couples "
                          "patients in a batch")
    factory = model_factory or (lambda inputs, task: build_model(cfg.model, inputs, task))

    def new_model() -> Any:
        return initial_model(factory, shape.inputs, task, cfg.run.seed)

    _check_shared(cfg, new_model())
    if cfg.personalization.mode == "fedbn" and not batch_norm_names(new_model()):
        raise ConfigError("personalization fedbn keeps batch-norm layers local, and this model has none: use model "
                          "mlp with batch_norm, or an image model")
    algorithm = _algorithm(cfg, len(site_ids))
    if aggregator is not None:
        algorithm = replace(algorithm, strategy=replace_aggregator(algorithm.strategy, aggregator))
    algorithm = _per_modality(cfg, algorithm, shape, aggregator)
    algorithm, secure = _site_privacy(cfg, algorithm, site_ids, aggregator)
    t, a = cfg.training, cfg.algorithm
    settings = EngineSettings(rounds=a.rounds, local_epochs=t.local_epochs, lr=t.lr, batch_size=t.batch_size,
                              optimizer=t.optimizer, fraction=a.fraction, min_sites=a.min_sites,
                              patience=a.patience, seed=cfg.run.seed, metric=task.headline,
                              higher_is_better=task.higher_is_better, eval_every=cfg.run.eval_every,
                              eval_sites=cfg.run.eval_sites)
    return Plan(cfg, shape, task, algorithm, settings, new_model, secure)


def _check_shared(cfg: FederationConfig, model: Any) -> None:
    """FedPer and FedRep keep the head at the sites and share the rest: a model that is all head (the
    linear model) would share nothing, and every site would train alone while the run says federated."""
    mode = cfg.personalization.mode
    if mode in ("fedper", "fedrep") and set(get_params(model)) <= head_names(model):
        raise ConfigError(f"personalization {mode} keeps the model's head at each site and shares the rest, "
                          "but this model is only a head (nothing would be shared); use model mlp")


def _algorithm(cfg: FederationConfig, num_sites: int) -> Algorithm:
    """The named algorithm with the robust rule, personalization and record-level DP the config asks for."""
    a, r, t, p, dp = cfg.algorithm, cfg.robustness, cfg.training, cfg.personalization, cfg.privacy
    aggregation = AggregationSpec(r.aggregator, r.trim_beta, r.krum_f, r.krum_m, r.clip_tau, r.norm_bound)
    server_lr = a.server_lr
    if server_lr is None and dp.site_dp_epsilon is not None:  # the step that works under the noise (privacy.py)
        server_lr = min(SERVER_LR[a.name], SITE_DP_SERVER_LR)
    algorithm = build_algorithm(a.name, lr=t.lr, server_lr=server_lr, server_momentum=a.server_momentum,
                                weighting=a.weighting, site_weights=a.site_weights, aggregation=aggregation,
                                prox_mu=a.prox_mu, num_sites=num_sites)
    if r.aggregator == "krum":
        krum(r.krum_f, r.krum_m).check_sites(_sites_per_round(cfg, num_sites))
    if dp.dp_epsilon is not None and (algorithm.site_mode != "local_epochs" or algorithm.scaffold
                                      or algorithm.prox_mu or p.mode == "fedrep" or t.optimizer != "sgd"):
        raise ConfigError("record-level DP (dp_epsilon) trains with plain DP-SGD local epochs: use fedavg, cyclic "
                          "or an adaptive server optimizer, optimizer sgd, and no fedprox, fedrep or scaffold")
    if algorithm.scaffold and t.optimizer != "sgd":
        raise ConfigError("scaffold corrects plain SGD steps; use optimizer sgd (not adam)")
    if algorithm.scaffold and p.mode != "none":
        raise ConfigError("scaffold does not combine with personalization; use personalization none")
    return replace(algorithm, personalization=p.mode, ditto_lambda=p.ditto_lambda, dp_epsilon=dp.dp_epsilon,
                   dp_delta=dp.dp_delta, dp_clip=dp.dp_clip, compress_updates=cfg.compression.compress_updates
                   if not cfg.privacy.secure_aggregation else "none",  # quantized into the masking ring instead
                   error_feedback=cfg.compression.error_feedback)


def _per_modality(cfg: FederationConfig, algorithm: Algorithm, shape: DataShape,
                  aggregator: object | None) -> Algorithm:
    """Model fusion: each input's encoder averaged over the sites that trained it (modality_mean)
    instead of the weighted mean; what cannot average a part of the model over some sites is refused."""
    if cfg.model.name != "fusion":
        return algorithm
    p = cfg.privacy
    clash = ("a custom aggregator" if aggregator is not None else
             f"aggregator {cfg.robustness.aggregator}" if cfg.robustness.aggregator != "mean" else
             "norm_bound" if cfg.robustness.norm_bound is not None else
             "secure aggregation" if p.secure_aggregation else
             "site-level DP" if p.site_dp_epsilon is not None else
             "record-level DP" if p.dp_epsilon is not None else
             "scaffold" if algorithm.scaffold else
             "personalization ditto" if cfg.personalization.mode == "ditto" else None)
    if clash:
        raise ConfigError(f"model fusion averages each encoder over the sites whose patients have its input, "
                          f"which {clash} cannot do (it needs every site to send the whole model); drop it")
    mean = next(piece for piece in algorithm.strategy.pieces if isinstance(piece, WeightedMean))
    return replace(algorithm, strategy=replace_aggregator(algorithm.strategy, modality_mean(mean, list(shape.inputs))))


def _site_privacy(cfg: FederationConfig, algorithm: Algorithm, site_ids: Sequence[str],
                  aggregator: object | None) -> tuple[Algorithm, SecurePlan | None]:
    """Site-level DP and secure aggregation: the aggregator that releases each round's mean
    (DP-FedAvg at the coordinator, or the mean of the secure sum of what the sites clipped, noised
    and masked) with its accountant and budget, and the settings of the secure rounds.
    The noise is calibrated here, before the first round, for the planned rounds."""
    p = cfg.privacy
    if p.site_dp_epsilon is None and not p.secure_aggregation:
        return algorithm, None
    if aggregator is not None:
        raise ConfigError("a custom aggregator cannot run with site-level DP or secure aggregation, "
                          "which bring their own mean; drop the aggregator argument")
    per_round = _sites_per_round(cfg, len(site_ids))
    dp = accountant = None
    if p.site_dp_epsilon is not None:
        dp, accountant = calibrate_site_dp(p.site_dp_epsilon, p.site_dp_delta, p.site_dp_clip,
                                           p.site_dp_clip_quantile, len(site_ids), per_round, cfg.algorithm.rounds)
    secure = None
    if p.secure_aggregation:
        check_threshold(per_round, p.secagg_max_dropouts)
        secure = SecurePlan(p.secagg_max_dropouts, cfg.algorithm.weighting, dict(cfg.algorithm.site_weights), dp,
                            noise_seed=cfg.run.seed, **quantized_secure(cfg.compression, cfg.algorithm, per_round))
        mean = secure_mean(dp)
    else:
        assert dp is not None
        mean = dp.central()
    if dp is not None and accountant is not None:
        mean = site_level_dp(mean, dp, accountant, p.site_dp_epsilon)
    return replace(algorithm, strategy=replace_aggregator(algorithm.strategy, mean)), secure


def _sites_per_round(cfg: FederationConfig, num_sites: int) -> int:
    """How many sites the engine selects each round (a fixed number: what the accountant samples)."""
    return len(select_sites([str(i) for i in range(num_sites)], cfg.algorithm.fraction, cfg.algorithm.min_sites,
                            np.random.default_rng(0)))
