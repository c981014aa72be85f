"""The Python API, mirroring `fedcare simulate`: load data, build sites, run the federation and its
two baselines through the same round engine, and write the run folder."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from fedcare.algorithms.attacks import attack, flip_labels
from fedcare.algorithms.recipes import AggregationSpec, Algorithm, build_algorithm
from fedcare.algorithms.strategy import replace_aggregator
from fedcare.core.errors import ConfigError
from fedcare.checkpoints import Checkpoints
from fedcare.core.config import FederationConfig, load_config, resolve_config
from fedcare.core.messages import FitRequest, Split
from fedcare.core.params import Params
from fedcare.data import DataSpec, FederatedDataset, load_dataset
from fedcare.algorithms.privacy import calibrate_site_dp, site_level_dp
from fedcare.algorithms.secagg import secure_mean
from fedcare.federation.engine import (EngineResult, EngineSettings, RoundEngine, RoundRecord, mean_metric,
                                       select_sites, site_seed)
from fedcare.federation.anomalies import flagged_sites
from fedcare.federation.transport import FitResult, SiteMetrics
from fedcare.learning.models import ModelFactory, ModelSpec, get_params, initial_model
from fedcare.learning.site import LocalSite
from fedcare.learning.tasks import Task
from fedcare import htmlreport
from fedcare.runfolder import RunFolder, metric_rows
from fedcare.summary import block
from fedcare.transports.adversary import AttackedSite
from fedcare.transports.secure import SecureAggregation, SecurePlan, SecureSites, check_threshold
from fedcare.transports.simulation import SimulationTransport

Progress = Callable[[str, RoundRecord], None]
"""Called after every round with the model being trained ("federated", "local:<site>", "pooled")."""


@dataclass
class Run:
    """What a simulation leaves: the summary, the models and where the run folder is."""

    path: Path
    config: FederationConfig
    summary: dict
    global_params: Params
    local_params: dict[str, Params] = field(default_factory=dict)
    site_params: dict[str, Params] = field(default_factory=dict)  # personalized models, where the run has them
    personal_val_score: float | None = None  # their mean validation metric (for tuning personalization)
    pooled_params: Params | None = None
    history: list[RoundRecord] = field(default_factory=list)


def data_spec(cfg: FederationConfig) -> DataSpec:
    return cfg.data


@dataclass
class Federation:
    """Everything the round engine needs, built from a config and a dataset."""

    config: FederationConfig
    dataset: FederatedDataset
    task: Task
    initial: Params
    algorithm: Algorithm
    settings: EngineSettings
    sites: list[LocalSite]
    new_model: Callable[[], object]
    federated_sites: list  # what the federation meets: `sites`, with simulated attackers swapped in


@dataclass(frozen=True)
class Plan:
    """What a config makes of a dataset's shape: the task, the model, the algorithm and the engine
    settings. The coordinator needs only this (no rows), and each site builds the same model from it."""

    task: Task
    algorithm: Algorithm
    settings: EngineSettings
    new_model: Callable[[], torch.nn.Module]
    secure: SecureAggregation | None = None  # the secure-aggregation runner, when the config asks for it


def plan_federation(cfg: FederationConfig, task_kind: str, num_classes: int, num_features: int,
                    site_ids: Sequence[str], *, model_factory: ModelFactory | None = None,
                    aggregator: object | None = None) -> Plan:
    unknown = sorted(set(cfg.algorithm.site_weights) - set(site_ids))
    if unknown:
        raise ConfigError(f"site_weights names unknown site '{unknown[0]}'; the sites are {', '.join(site_ids)}")
    torch.set_num_threads(cfg.training.threads)
    task = Task(task_kind, num_classes=max(2, num_classes))
    factory = model_factory or ModelSpec(cfg.model.name, cfg.model.hidden, cfg.model.batch_norm).build

    def new_model():
        return initial_model(factory, num_features, task.num_outputs, cfg.run.seed)

    aggregation = AggregationSpec(cfg.robustness.aggregator, cfg.robustness.trim_beta, cfg.robustness.krum_f, cfg.robustness.krum_m, cfg.robustness.clip_tau, cfg.robustness.norm_bound)
    algorithm = build_algorithm(cfg.algorithm.name, lr=cfg.training.lr, server_lr=cfg.algorithm.server_lr,
                                server_momentum=cfg.algorithm.server_momentum, weighting=cfg.algorithm.weighting,
                                site_weights=cfg.algorithm.site_weights, aggregation=aggregation, prox_mu=cfg.algorithm.prox_mu,
                                num_sites=len(site_ids))
    if cfg.privacy.dp_epsilon is not None and (algorithm.site_mode != "local_epochs" or algorithm.scaffold
                                       or algorithm.prox_mu or cfg.personalization.mode == "fedrep"
                                       or cfg.training.optimizer != "sgd"):
        raise ConfigError("record-level DP (dp_epsilon) trains with plain DP-SGD local epochs: use fedavg, cyclic "
                          "or an adaptive server optimizer, optimizer sgd, and no fedprox, fedrep or scaffold")
    if algorithm.scaffold and cfg.training.optimizer != "sgd":
        raise ConfigError("scaffold corrects plain SGD steps; use optimizer sgd (not adam)")
    if algorithm.scaffold and cfg.personalization.mode != "none":
        raise ConfigError("scaffold does not combine with personalization; use personalization none")
    algorithm = replace(algorithm, personalization=cfg.personalization.mode, ditto_lambda=cfg.personalization.ditto_lambda,
                        dp_epsilon=cfg.privacy.dp_epsilon, dp_delta=cfg.privacy.dp_delta, dp_clip=cfg.privacy.dp_clip)
    if aggregator is not None:
        algorithm = replace(algorithm, strategy=replace_aggregator(algorithm.strategy, aggregator))
    algorithm, secure = _site_privacy(cfg, algorithm, site_ids, aggregator)
    settings = EngineSettings(rounds=cfg.algorithm.rounds, local_epochs=cfg.training.local_epochs, lr=cfg.training.lr, batch_size=cfg.training.batch_size,
                              optimizer=cfg.training.optimizer, fraction=cfg.algorithm.fraction, min_sites=cfg.algorithm.min_sites,
                              patience=cfg.algorithm.patience, seed=cfg.run.seed, metric=task.headline)
    return Plan(task, algorithm, settings, new_model, secure)


def build_federation(cfg: FederationConfig, dataset: FederatedDataset, *, model_factory: ModelFactory | None = None,
                     aggregator: object | None = None) -> Federation:
    """Sites with their data and model, the initial params, the algorithm and the engine settings."""
    site_ids = [sd.site_id for sd in dataset.sites]
    plan = plan_federation(cfg, dataset.task, len(dataset.classes), len(dataset.feature_names),
                           site_ids, model_factory=model_factory, aggregator=aggregator)
    task, new_model, secure = plan.task, plan.new_model, plan.secure
    sites = [LocalSite(sd.site_id, task, new_model(), _splits(sd)) for sd in dataset.sites]
    federated = _attacked(cfg, dataset, task, sites, new_model)
    return Federation(cfg, dataset, task, get_params(new_model()), plan.algorithm, plan.settings, sites, new_model,
                      SecureSites(federated, secure) if secure is not None else federated)


def _site_privacy(cfg: FederationConfig, algorithm: Algorithm, site_ids: Sequence[str],
                  aggregator: object | None) -> tuple[Algorithm, SecureAggregation | None]:
    """Site-level DP and secure aggregation: the aggregator that releases each round's mean
    (DP-FedAvg at the coordinator, or the mean of the secure sum of what the sites clipped, noised
    and masked) with its accountant and budget, and the secure-aggregation runner for the transport.
    The noise is calibrated here, before the first round, for the planned rounds."""
    if cfg.privacy.site_dp_epsilon is None and not cfg.privacy.secure_aggregation:
        return algorithm, None
    if aggregator is not None:
        raise ConfigError("a custom aggregator cannot run with site-level DP or secure aggregation, "
                          "which bring their own mean; drop the aggregator argument")
    per_round = _sites_per_round(cfg, len(site_ids))
    dp = accountant = None
    if cfg.privacy.site_dp_epsilon is not None:
        dp, accountant = calibrate_site_dp(cfg.privacy.site_dp_epsilon, cfg.privacy.site_dp_delta, cfg.privacy.site_dp_clip,
                                           cfg.privacy.site_dp_clip_quantile, len(site_ids), per_round, cfg.algorithm.rounds)
    secure = None
    if cfg.privacy.secure_aggregation:
        check_threshold(per_round, cfg.privacy.secagg_max_dropouts)
        plan = SecurePlan(cfg.privacy.secagg_max_dropouts, cfg.algorithm.weighting, dict(cfg.algorithm.site_weights), dp, noise_seed=cfg.run.seed)
        secure, mean = SecureAggregation(plan), secure_mean(dp)
    else:
        assert dp is not None
        mean = dp.central()
    if dp is not None and accountant is not None:
        mean = site_level_dp(mean, dp, accountant, cfg.privacy.site_dp_epsilon)
    return replace(algorithm, strategy=replace_aggregator(algorithm.strategy, mean)), secure


def _sites_per_round(cfg: FederationConfig, num_sites: int) -> int:
    """How many sites the engine selects each round (a fixed number: what the accountant samples)."""
    return len(select_sites([str(i) for i in range(num_sites)], cfg.algorithm.fraction, cfg.algorithm.min_sites,
                            np.random.default_rng(0)))


def attacker_ids(cfg: FederationConfig, sizes: Mapping[str, int]) -> list[str]:
    """The attacking sites: the K sites with the most training rows (the worst case for an
    example-weighted mean; ties in site order), or the ids the config names."""
    if cfg.robustness.attack is None:
        return []
    site_ids = list(sizes)
    if isinstance(cfg.robustness.attackers, int):
        if cfg.robustness.attackers >= len(site_ids):
            raise ConfigError(f"attackers={cfg.robustness.attackers} leaves no honest site among {len(site_ids)}")
        return sorted(site_ids, key=lambda s: -sizes[s])[:cfg.robustness.attackers]
    unknown = [a for a in cfg.robustness.attackers if a not in site_ids]
    if unknown:
        raise ConfigError(f"attackers names unknown site '{unknown[0]}'; the sites are {', '.join(site_ids)}")
    return list(cfg.robustness.attackers)


def _attacked(cfg: FederationConfig, dataset: FederatedDataset, task: Task, sites: list[LocalSite],
              new_model: Callable[[], object]) -> list:
    """The sites as the federation meets them: attackers' updates (or labels) corrupted, if asked."""
    hostile = set(attacker_ids(cfg, {s.site_id: s.num_train for s in sites}))
    if not hostile:
        return list(sites)
    out: list = []
    for sd, site in zip(dataset.sites, sites, strict=True):
        if site.site_id not in hostile:
            out.append(site)
        elif cfg.robustness.attack == "label-flip":
            splits = _splits(sd)
            splits["train"] = (sd.x_train, flip_labels(sd.y_train, task.kind, task.num_classes))
            out.append(LocalSite(sd.site_id, task, new_model(), splits))
        else:
            out.append(AttackedSite(site, attack(cfg.robustness.attack, [site.site_id], cfg.robustness.attack_scale, cfg.run.seed)))
    return out


def simulate(config: FederationConfig | Mapping | str | Path | None = None, *,
             model_factory: ModelFactory | None = None, aggregator: object | None = None,
             progress: Progress | None = None, **overrides: object) -> Run:
    """Run a federation in this process and write its run folder.

    `model_factory(num_features, num_outputs) -> torch.nn.Module` replaces the model zoo;
    `aggregator` is a built-in rule's name ("median", "krum", ...: the config key) or any aggregator
    piece of your own, which replaces the rule (see fedcare.algorithms).
    """
    started = time.perf_counter()
    if isinstance(aggregator, str):
        overrides["aggregator"], aggregator = aggregator, None
    cfg = resolve_config(config, **overrides)
    return _execute(cfg, started, model_factory, aggregator, progress, resume=False)


def resume(run_dir: str | Path, *, progress: Progress | None = None) -> Run:
    """Continue a run that stopped (a crash, a kill) from its last checkpoint; the result equals an
    uninterrupted run's. Runs that used a Python model_factory or aggregator cannot be resumed from
    their folder (config.yaml does not record code)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml", {"out": str(run_dir)})
    if not (run_dir / "checkpoints" / "coordinator.safetensors").is_file():
        raise ConfigError(f"'{run_dir}' has no checkpoint to resume from; run it again with fedcare simulate")
    return _execute(cfg, started, None, None, progress, resume=True)


def _execute(cfg: FederationConfig, started: float, model_factory: ModelFactory | None, aggregator: object | None,
             progress: Progress | None, resume: bool) -> Run:
    dataset = load_dataset(data_spec(cfg))
    cfg = cfg.replace(data=[str(Path(p).resolve()) for p in cfg.data.files])  # re-runnable anywhere
    fed = build_federation(cfg, dataset, model_factory=model_factory, aggregator=aggregator)
    folder = RunFolder(cfg.run_dir)
    checkpoints = Checkpoints(cfg.run_dir)
    sites = _honest(fed.federated_sites)
    start, rows = None, []
    if resume:
        loaded = checkpoints.load(sites)
        if loaded is not None:
            start, states, rows = loaded
            for sid, state in states.items():
                sites[sid].load_site_state(state)
    else:
        folder.prepare(cfg)
        if checkpoints.path.exists():
            shutil.rmtree(checkpoints.path)  # a fresh run never resumes an older one's state
    federation = SimulationTransport(fed.federated_sites, start.bytes_sent if start else 0)
    pending: list[dict] = []

    def on_round(record: RoundRecord) -> None:
        pending.extend(metric_rows("federated", [record]))
        if progress:
            progress("federated", record)

    def on_checkpoint(checkpoint) -> None:
        last = checkpoint.round == cfg.algorithm.rounds
        if cfg.run.checkpoint_every and (checkpoint.round % cfg.run.checkpoint_every == 0 or last):
            checkpoints.save(checkpoint, {sid: site.site_state() for sid, site in sites.items()}, pending)
        rows.extend(pending)
        pending.clear()

    def engine(name: str, transport, algo: Algorithm = fed.algorithm, settings: EngineSettings = fed.settings
               ) -> EngineResult:
        callback = (lambda rec: progress(name, rec)) if progress else None
        return RoundEngine(algo, transport, settings, callback).run(fed.initial)

    result = RoundEngine(fed.algorithm, federation, fed.settings, on_round, on_checkpoint).run(fed.initial, start)
    bytes_sent = federation.bytes_sent  # before baselines reuse the transport for evaluation
    history = result.history
    run = Run(cfg.run_dir, cfg, {}, result.params, history=history)
    per_model = {"federated": _test_metrics(federation, result.params)}
    if cfg.personalization.mode != "none":
        personal = personalize(fed, result.params)
        run.site_params = personal
        scores = {sid: site.evaluate(personal[sid], ["val", "test"]) for sid, site in sites.items()}
        per_model["personalized"] = {sid: m["test"] for sid, m in scores.items()}
        run.personal_val_score = mean_metric(scores, "val", fed.task.headline)
    if cfg.run.baselines:
        rows += _baselines(fed, federation, engine, run, per_model)
    facts = RunFacts(dataset.name, dataset.task, tuple(dataset.feature_names), dataset.preprocessing,
                     {sd.site_id: {"train": len(sd.y_train), "val": len(sd.y_val), "test": len(sd.y_test)}
                      for sd in dataset.sites})
    aggregator_name = cfg.robustness.aggregator if aggregator is None else type(aggregator).__name__
    run.summary = summarize(cfg, facts, result, per_model, rows, bytes_sent, started, aggregator_name,
                            attacked=attacker_ids(cfg, {s.site_id: s.num_train for s in fed.sites}))
    write_run(folder, cfg, facts, run.summary, rows, result.params, run.site_params)
    return run


@dataclass(frozen=True)
class RunFacts:
    """What a run's summary says about its data: learned in one process (simulation) or from the
    sites' aggregates (a networked run), never from rows."""

    name: str
    task: str
    feature_names: tuple[str, ...]
    preprocessing: dict
    site_sizes: dict[str, dict[str, int]]


def summarize(cfg: FederationConfig, facts: RunFacts, result: EngineResult, per_model: dict, rows: list[dict],
              bytes_sent: int, started: float, aggregator: str, attacked: list[str]) -> dict:
    """summary.json: the same keys for a simulated and a networked run."""
    metric = Task(facts.task).headline
    return {
        "dataset": facts.name,
        "task": facts.task,
        "algorithm": cfg.algorithm.name,
        "rounds": result.rounds_run,
        "best_round": result.best_round,
        "stopped_early": result.stopped_early,
        "metric": metric,
        "seed": cfg.run.seed,
        "num_features": len(facts.feature_names),
        "site_sizes": facts.site_sizes,
        **{name: block(values, metric) for name, values in per_model.items()},
        "aggregator": aggregator,
        "attack": {"kind": cfg.robustness.attack, "sites": attacked},
        "anomalies": flagged_sites(_anomalies(rows)),
        "bytes_sent": bytes_sent,
        "privacy": _privacy(cfg, rows),
        "preprocessing": facts.preprocessing,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


def write_run(folder: RunFolder, cfg: FederationConfig, facts: RunFacts, summary: dict, rows: list[dict],
              global_params: Params, site_params: Mapping[str, Params]) -> None:
    folder.write_metrics(rows)
    folder.write_global(global_params, {"dataset": facts.name, "algorithm": cfg.algorithm.name,
                                        "feature_names": list(facts.feature_names)})
    for sid, params in site_params.items():
        folder.write_site(sid, params, {"dataset": facts.name, "personalization": cfg.personalization.mode})
    folder.write_summary(summary)
    folder.write_report(htmlreport.render(summary, rows))


def _privacy(cfg: FederationConfig, rows: list[dict]) -> dict:
    """What the run spent. Top level: the record-level figures when DP-SGD ran, else the site-level
    ones; `site` holds the site-level figures whenever site-level DP ran."""
    record, site = _record_spent(cfg, rows), _site_spent(cfg, rows)
    if site is None:
        block = record or {"epsilon": None, "delta": None}
        return {**block, "secure_aggregation": True} if cfg.privacy.secure_aggregation else block
    if record is None:
        return {"level": "site", **{k: site[k] for k in ("budget", "epsilon", "delta", "clip")}, "site": site}
    return {**record, "level": "record+site", "site": site}


def _record_spent(cfg: FederationConfig, rows: list[dict]) -> dict | None:
    """Record-level ε spent by each site (its accountant's figure after its last round), and δ."""
    if cfg.privacy.dp_epsilon is None:
        return None
    spent: dict[str, float] = {}
    for row in rows:
        if row["model"] == "federated" and row["split"] == "train" and "epsilon" in row:
            spent[row["site"]] = max(spent.get(row["site"], 0.0), row["epsilon"])
    return {"level": "record", "budget": cfg.privacy.dp_epsilon, "delta": cfg.privacy.dp_delta, "clip": cfg.privacy.dp_clip,
            "epsilon": max(spent.values()) if spent else 0.0, "epsilon_per_site": dict(sorted(spent.items()))}


def _site_spent(cfg: FederationConfig, rows: list[dict]) -> dict | None:
    """Site-level ε after the last round (every round released counts, selected or not), the C of
    the last round, σ: from the figures the accountant wrote into the training rows."""
    if cfg.privacy.site_dp_epsilon is None:
        return None
    last: dict = {}
    for row in rows:
        if row["model"] == "federated" and row["split"] == "train" and "site_epsilon" in row:
            if not last or row["round"] >= last["round"]:
                last = row
    return {"budget": cfg.privacy.site_dp_epsilon, "epsilon": last.get("site_epsilon", 0.0), "delta": cfg.privacy.site_dp_delta,
            "clip": last.get("site_clip", cfg.privacy.site_dp_clip), "clip_quantile": cfg.privacy.site_dp_clip_quantile,
            "noise_multiplier": last.get("site_noise_multiplier"), "rounds": last.get("round", 0),
            "secure_aggregation": cfg.privacy.secure_aggregation, "accounting": SITE_ACCOUNTING}


SITE_ACCOUNTING = ("dp_accounting RDP, replace-one relation, a fixed number of sites per round sampled "
                   "without replacement (none when every site takes part)")


def _anomalies(rows: list[dict]) -> list[dict]:
    """Per-round anomaly reports back from the federated metric rows (they survive a resume)."""
    by_round: dict[int, dict] = {}
    for row in rows:
        if row["model"] == "federated" and row["split"] == "update":
            by_round.setdefault(row["round"], {})[row["site"]] = row
    return [by_round[r] for r in sorted(by_round)]


def _baselines(fed: Federation, federation: SimulationTransport, engine: Callable, run: Run,
               per_model: dict) -> list[dict]:
    """Local (each site alone) and pooled (all training rows in one place): the same engine with one
    site, the same algorithm and budget, no site weights or selection. Fills run and per_model;
    returns the metrics.jsonl rows. SCAFFOLD with one site is FedAvg (c = cᵢ every round), so the
    baselines run fedavg and leave the cᵢ the sites hold from the federated run untouched."""
    cfg = fed.config
    plain, alone = baseline_algorithm(cfg), baseline_settings(fed.settings)
    rows: list[dict] = []
    per_model["local"] = {}
    for site in fed.sites:
        local = engine(f"local:{site.site_id}", SimulationTransport([site]), plain, alone)
        run.local_params[site.site_id] = local.params
        rows += metric_rows("local", local.history)
        per_model["local"][site.site_id] = site.evaluate(local.params, ["test"])["test"]
    pooled_site = LocalSite("pooled", fed.task, fed.new_model(), _pooled_splits(fed.dataset))
    pooled = engine("pooled", _TrainHereEvaluateThere(SimulationTransport([pooled_site]), federation), plain, alone)
    run.pooled_params = pooled.params
    rows += metric_rows("pooled", pooled.history)
    per_model["pooled"] = _test_metrics(federation, pooled.params)
    return rows


def baseline_algorithm(cfg: FederationConfig) -> Algorithm:
    """What the local and pooled baselines run: the run's algorithm on one site (SCAFFOLD with one
    site is FedAvg), without site weights, attacks or robust rules."""
    return build_algorithm("fedavg" if cfg.algorithm.name == "scaffold" else cfg.algorithm.name, lr=cfg.training.lr,
                           server_lr=cfg.algorithm.server_lr, server_momentum=cfg.algorithm.server_momentum, prox_mu=cfg.algorithm.prox_mu)


def baseline_settings(settings: EngineSettings) -> EngineSettings:
    return replace(settings, fraction=1.0, min_sites=1)


def personalize_request(cfg: FederationConfig, index: int) -> FitRequest:
    """The final local work that turns the global model into site `index`'s own."""
    return FitRequest(cfg.algorithm.rounds + 1, "local_epochs", cfg.personalization.finetune_epochs, cfg.training.lr, cfg.training.batch_size, cfg.training.optimizer,
                      site_seed(cfg.run.seed, cfg.algorithm.rounds + 1, index), 0.0, cfg.personalization.mode, cfg.personalization.ditto_lambda)


def _honest(sites: Sequence) -> dict[str, LocalSite]:
    """The LocalSite behind each federated site (a simulated attacker wraps one)."""
    return {s.site_id: getattr(s, "site", s) for s in sites}


def personalize(fed: Federation, global_params: Params) -> dict[str, Params]:
    """Each site's own final model (its kept layers, its Ditto model, or the fine-tuned global one)."""
    cfg = fed.config
    out = {}
    for i, (sid, site) in enumerate(_honest(fed.federated_sites).items()):
        out[sid] = site.personal_params(global_params, personalize_request(cfg, i))
    return out


def _splits(sd) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"train": (sd.x_train, sd.y_train), "val": (sd.x_val, sd.y_val), "test": (sd.x_test, sd.y_test)}


def _pooled_splits(dataset: FederatedDataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ceiling baseline: every site's training (and validation) rows in one place."""
    out = {}
    for split in ("train", "val", "test"):
        xs = [getattr(sd, f"x_{split}") for sd in dataset.sites]
        ys = [getattr(sd, f"y_{split}") for sd in dataset.sites]
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return out


def _test_metrics(transport: SimulationTransport, params: Params) -> dict[str, dict]:
    return {sid: m["test"] for sid, m in transport.evaluate(params, transport.site_ids(), ["test"]).items()}


class _TrainHereEvaluateThere:
    """The pooled baseline trains on the pooled rows but is judged on every site's own splits."""

    def __init__(self, train: SimulationTransport, evaluate: SimulationTransport):
        self._train, self._eval = train, evaluate

    def site_ids(self) -> list[str]:
        return self._train.site_ids()

    @property
    def bytes_sent(self) -> int:
        return 0

    def fit(self, params: Params, requests: Mapping[str, FitRequest], extras: Params | None = None) -> FitResult:
        return self._train.fit(params, requests, extras)

    def evaluate(self, params: Params, site_ids: Sequence[str], splits: Sequence[Split]) -> dict[str, SiteMetrics]:
        return self._eval.evaluate(params, self._eval.site_ids(), splits)
