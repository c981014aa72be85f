"""The Python API, mirroring `fedcare simulate`: load data, build sites, run the federation and its
two baselines through the same round engine, and write the run folder."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedcare.core.compression import NONE, parse_scheme
from fedcare.core.config import FederationConfig, load_config, resolve_config
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.data import load_dataset
from fedcare.data.dataset import FederatedDataset
from fedcare.data.defaults import with_dataset_defaults
from fedcare.federation.checkpoint import Checkpoints, EngineCheckpoint
from fedcare.federation.engine import EngineResult, RoundEngine, RoundRecord, mean_metric
from fedcare.federation.recommender import Recommender
from fedcare.federation.runfolder import RunFolder, clear_for_new_run, metric_rows
from fedcare.federation.summary import RunFacts, summarize
from fedcare.federation.tracking import Trackers
from fedcare.federation.transport import Transport
from fedcare.interfaces import htmlreport
from fedcare.interfaces.streamrun import simulate_stream
from fedcare.interfaces.trackers import open_trackers
from fedcare.learning import baseline_hazard
from fedcare.learning.calibration import calibration
from fedcare.learning.constant import constant_metrics, constant_output
from fedcare.learning.modelfile import load_model
from fedcare.learning.models import ModelFactory
from fedcare.learning.tasks import Task, load_plugins
from fedcare.transports.effects import check_treatment, simulate_effects
from fedcare.transports.backends import Backend, open_backend, start_workers
from fedcare.transports.modalities import modality_block
from fedcare.transports.simulated import Federation, attacker_ids, honest, personalize, pooled_site
from fedcare.transports.simulation import SimulationTransport, TrainHereEvaluateThere

__all__ = ["Progress", "Run", "load_model", "recommend", "resolve_config", "resume", "simulate"]

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

    def recommend(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per patient of `frame` (a run with --treatment): each arm's predicted outcome, each treated
        arm's effect against the control with its 95 % interval, and the recommended arm."""
        return recommend(self.path, frame)


def recommend(run_dir: str | Path, frame: pd.DataFrame) -> pd.DataFrame:
    """`Run.recommend` for a run folder on disk (what `fedcare recommend` calls)."""
    return Recommender.load(Path(run_dir)).recommend(frame)


def simulate(config: FederationConfig | Mapping | str | Path | None = None, *,
             model_factory: ModelFactory | None = None, aggregator: object | None = None,
             progress: Progress | None = None, prepared: FederatedDataset | None = None, **overrides: object) -> Run:
    """Run a federation in this process and write its run folder.

    `model_factory(inputs, task) -> torch.nn.Module` replaces the model zoo: it gets the input shapes
    by name and the task, and its module takes a batch's inputs as a mapping name -> tensor;
    `aggregator` is a built-in rule's name ("median", "krum", ...: the config key) or any aggregator
    piece of your own, which replaces the rule (see fedcare.algorithms); `prepared` is data already
    loaded (and prepared) in this process, used instead of loading the config's (config.yaml then
    re-runs on the config's data, not on this).
    """
    started = time.perf_counter()
    if isinstance(aggregator, str):
        overrides["aggregator"], aggregator = aggregator, None
    cfg = with_dataset_defaults(resolve_config(config, **overrides))  # a bundled dataset's validated settings
    if cfg.stream.active:  # --time-column: a replay window by window (interfaces/streamrun.py)
        if model_factory is not None or aggregator is not None or prepared is not None:
            raise ConfigError("a stream replay builds its data, model and rule from the config; drop model_factory, "
                              "aggregator and prepared, or --time-column")
        return simulate_stream(cfg, Run)
    return _execute(cfg, started, model_factory, aggregator, progress, resume=False, dataset=prepared)


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
             progress: Progress | None, resume: bool, dataset: FederatedDataset | None = None) -> Run:
    load_plugins()  # installed packages' tasks, before the data layer checks the task's name
    pool = start_workers(cfg, model_factory)  # they warm up while the data is read
    try:
        dataset = load_dataset(cfg.data) if dataset is None else dataset
        if cfg.data.treatment is not None:
            check_treatment(dataset, cfg.data)  # before training, not after it
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    cfg = cfg.replace(data=[str(Path(p).resolve()) for p in cfg.data.files],  # re-runnable anywhere
                      images=str(Path(cfg.data.images).resolve()) if cfg.data.images else None,
                      inputs=[{"kind": i.kind, "file": [str(Path(p).resolve()) for p in i.file]} for i in cfg.data.inputs])
    backend = open_backend(cfg, dataset, model_factory=model_factory, aggregator=aggregator, pool=pool)
    try:
        return _tracked(cfg, started, dataset, backend, aggregator, progress, resume)
    finally:
        backend.close()


def _tracked(cfg: FederationConfig, started: float, dataset: FederatedDataset, backend: Backend,
             aggregator: object | None, progress: Progress | None, resume: bool) -> Run:
    fed = backend.federation
    trackers = open_trackers(cfg)  # metrics.jsonl grows round by round; --track adds MLflow, TensorBoard
    folder = RunFolder(cfg.run_dir)
    checkpoints = Checkpoints(cfg.run_dir)
    sites = honest(fed.federated_sites)
    start, rows = None, []
    if resume:
        loaded = checkpoints.load(sites)
        if loaded is not None:
            start, states, rows = loaded
            for sid, state in states.items():
                sites[sid].load_site_state(state)
    else:
        clear_for_new_run(cfg.run_dir)  # a fresh run never mixes with (or resumes) an older one's files
        folder.prepare(cfg)
    trackers.start(cfg, rows)
    try:
        run = _train(cfg, started, dataset, backend, aggregator, progress, trackers, start, rows)
    except BaseException:
        trackers.finish(None, cfg.run_dir)
        raise
    trackers.finish(run.summary, cfg.run_dir)
    return run


def _train(cfg: FederationConfig, started: float, dataset: FederatedDataset, backend: Backend,
           aggregator: object | None, progress: Progress | None, trackers: Trackers,
           start: EngineCheckpoint | None, rows: list[dict]) -> Run:
    """The rounds, the final models, the baselines and the run folder's files (from `start` on a resume)."""
    fed = backend.federation
    plan, folder, checkpoints, sites = fed.plan, RunFolder(cfg.run_dir), Checkpoints(cfg.run_dir), honest(fed.federated_sites)
    federation = backend.transport(start.bytes_sent if start else 0, start.bytes_upload if start else 0,
                                   parse_scheme(cfg.compression.compress_broadcast))
    judge = backend.transport(0, 0, NONE)  # final models are judged as saved: at full precision
    pending: list[dict] = []  # this round's rows
    unsaved: list[dict] = []  # the rows since the last checkpoint (checkpoint_every > 1: several rounds')

    def on_round(record: RoundRecord) -> None:
        pending.extend(metric_rows("federated", [record]))
        if progress:
            progress("federated", record)

    def on_checkpoint(checkpoint) -> None:
        every, last = cfg.run.checkpoint_every, checkpoint.round == cfg.algorithm.rounds
        unsaved.extend(pending)
        if every and (checkpoint.round % every == 0 or last):
            checkpoints.save(checkpoint, {sid: site.site_state() for sid, site in sites.items()}, unsaved)
            unsaved.clear()
        rows.extend(pending)
        trackers.log(pending)
        pending.clear()

    result = RoundEngine(plan.algorithm, federation, plan.settings, on_round, on_checkpoint).run(fed.initial, start)
    bytes_sent = federation.bytes_sent  # before baselines reuse the transport for evaluation
    run = Run(cfg.run_dir, cfg, {}, result.params, history=result.history)
    per_model = {"federated": _test_metrics(judge, result.params)}
    if cfg.personalization.mode != "none":
        personal = personalize(fed, result.params)
        run.site_params = personal
        scores = {sid: site.evaluate(personal[sid], ["val", "test"]) for sid, site in sites.items()}
        per_model["personalized"] = {sid: m["test"] for sid, m in scores.items() if "test" in m}
        run.personal_val_score = mean_metric(scores, "val", plan.task.headline)
    calibrated = {"federated": calibration({sid: site.calibration_bins(result.params) for sid, site in sites.items()})}
    if run.site_params:
        calibrated["personalized"] = calibration({sid: site.calibration_bins(run.site_params[sid])
                                                  for sid, site in sites.items()})
    baseline = _baseline_hazard(sites, result.params)  # survival: the federated Breslow H0, for the card
    if cfg.run.baselines:
        rows += _baselines(fed, judge, run, per_model, progress, trackers.log)
    facts = RunFacts(dataset.name, dataset.task, tuple(dataset.feature_names), dataset.preprocessing,
                     {sd.site_id: sd.sizes() for sd in dataset.sites}, dataset.shape)
    aggregator_name = cfg.robustness.aggregator if aggregator is None else type(aggregator).__name__
    run.summary = summarize(cfg, facts, plan.task, result, per_model, rows, bytes_sent, started, aggregator_name,
                            attacked=attacker_ids(cfg, {s.site_id: s.num_train for s in fed.sites}),
                            constant=_constant_metrics(dataset, plan.task))
    if calibrated["federated"] is not None:  # binary tasks: Brier and reliability bins for the report
        run.summary["calibration"] = calibrated
    if cfg.model.name == "fusion" and cfg.backend.backend == "in-process":  # against each single input
        run.summary["modalities"] = modality_block(cfg, dataset, {s.site_id: s for s in fed.sites},
                                                   _fused_models(run, [s.site_id for s in fed.sites]))
    elif cfg.model.name == "fusion":
        run.summary["warnings"].append(f"no report by modality with backend {cfg.backend.backend}: it needs the "
                                       "sites in this process (backend in-process)")
    effects = simulate_effects(cfg, dataset) if cfg.data.treatment is not None else None
    if effects is not None:
        run.summary["treatment"] = effects.block
    folder.write_result(cfg, facts, run.summary, rows, result.params, run.site_params, baseline)
    folder.write_report(htmlreport.render(run.summary, rows, cfg.flat(mode="json")))
    if effects is not None:
        effects.recommender.save(cfg.run_dir)
    return run


def _fused_models(run: Run, site_ids: list[str]) -> dict[str, dict[str, Params]]:
    """The run's models as the params each site judges: its own for local and personalized."""
    models = {"federated": {sid: run.global_params for sid in site_ids}}
    if run.site_params:
        models["personalized"] = dict(run.site_params)
    if run.local_params:
        models["local"] = dict(run.local_params)
    if run.pooled_params is not None:
        models["pooled"] = {sid: run.pooled_params for sid in site_ids}
    return models


def _baseline_hazard(sites: Mapping, params: Params) -> dict | None:
    """A survival run's Breslow cumulative baseline hazard of the final model, from the sites' sums on
    their training rows (learning/baseline_hazard.py): first each site's longest follow-up makes the
    common grid, then each site's per-interval events and at-risk sums are added. None for another task."""
    grid = baseline_hazard.time_grid(site.follow_up() for site in sites.values())
    if grid is None:
        return None
    return baseline_hazard.breslow((site.hazard_sums(params, grid) for site in sites.values()), grid)


def _baselines(fed: Federation, federation: Transport, run: Run, per_model: dict,
               progress: Progress | None, log: Callable[[list[dict]], None]) -> list[dict]:
    """Local (each site alone) and pooled (all training rows in one place): the same engine with one
    site, the same algorithm and budget, no site weights or selection. Fills run and per_model;
    returns the metrics.jsonl rows. SCAFFOLD with one site is FedAvg (c = cᵢ every round), so the
    baselines run fedavg and leave the cᵢ the sites hold from the federated run untouched."""
    algorithm, settings = fed.plan.baseline()

    def engine(name: str, transport) -> EngineResult:
        callback = (lambda rec: progress(name, rec)) if progress else None
        return RoundEngine(algorithm, transport, settings, callback).run(fed.initial)

    rows: list[dict] = []
    per_model["local"] = {}
    for site in fed.sites:
        local = engine(f"local:{site.site_id}", SimulationTransport([site]))
        run.local_params[site.site_id] = local.params
        rows += (done := list(metric_rows("local", local.history)))
        log(done)
        if site.num_examples("test"):  # a site too small to split trains, and has nothing to test on
            per_model["local"][site.site_id] = site.evaluate(local.params, ["test"])["test"]
    pooled = engine("pooled", TrainHereEvaluateThere(SimulationTransport([pooled_site(fed)]), federation))
    run.pooled_params = pooled.params
    rows += (done := list(metric_rows("pooled", pooled.history)))
    log(done)
    per_model["pooled"] = _test_metrics(federation, pooled.params)
    return rows


def _constant_metrics(dataset: FederatedDataset, task: Task) -> dict[str, dict] | None:
    """The constant predictor (from every site's training targets) on each site's test rows."""
    def targets(examples) -> dict:
        return examples.take(np.arange(len(examples)), task.targets)

    output = constant_output(task, [targets(sd.splits["train"]) for sd in dataset.sites])
    if output is None:
        return None
    return {sd.site_id: constant_metrics(task, output, targets(sd.splits["test"]))
            for sd in dataset.sites if len(sd.splits["test"])}


def _test_metrics(transport: Transport, params: Params) -> dict[str, dict]:
    return {sid: m["test"] for sid, m in transport.evaluate(params, transport.site_ids(), ["test"]).items()
            if "test" in m}
