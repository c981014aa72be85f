"""The coordinator service's run: prepare the data with the sites, run the round engine over the
network, and write the same run folder a simulation writes.

State survives `kill -9`: the run and its rounds are rows in SQLite, the engine's checkpoint (params,
every piece's state, the metric rows) is written after each round, and the global params of every
completed round are kept as `rounds/round-N.safetensors`. A restarted coordinator finds a run that was
under way and resumes it at the round in progress; sites answer that round again (they cache their
reply to a task they already answered, so a round is never trained twice).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedcare.federation.checkpoint import Checkpoints
from fedcare.core.compression import parse_scheme
from fedcare.core.config import FederationConfig, make_config
from fedcare.core.errors import ConfigError, DataError, FedcareError
from fedcare.core.params import Params
from fedcare.core.serialization import params_to_bytes
from fedcare.data.answers import SiteAnswerError
from fedcare.data.defaults import with_dataset_defaults
from fedcare.data.prepare import PreparedDataset, prepare
from fedcare.federation.engine import RoundEngine, RoundRecord
from fedcare.federation.plan import make_plan
from fedcare.federation.runfolder import RunFolder, metric_rows
from fedcare.federation.tracking import JsonlTracker
from fedcare.federation.summary import RunFacts, summarize
from fedcare.transports.network.board import Board, Refused, RunStopped
from fedcare.transports.network.store import Store
from fedcare.transports.network.transport import NetworkTransport, Timing

log = logging.getLogger("fedcare.coordinator")
ReportRenderer = Callable[[Mapping, list[dict], Mapping], str]
LIVE_ROUNDS = 50  # rounds the live view shows (the run folder holds them all)
DISK_RETRY = 5.0  # seconds between attempts at a write the disk refused


@dataclass(frozen=True)
class ServiceSettings:
    state: Path                              # the coordinator's folder: coordinator.db, runs/
    sites: tuple[str, ...]                   # the federation's sites, in order (the engine's site order)
    deadline: float = 600.0                  # seconds a task waits before it may close on quorum
    max_body: int = 512 * 1024 * 1024        # largest upload accepted, bytes
    poll_wait: float = 20.0                  # longest a site's poll is held open, seconds
    database: Path | None = None             # the SQLite file (default <state>/coordinator.db)
    max_json: int = 4 * 1024 * 1024          # largest JSON answer accepted, bytes


def for_sites(cfg: FederationConfig) -> FederationConfig:
    """The config as a coordinator runs it: a bundled dataset's own defaults for the keys it leaves unset
    (as `fedcare simulate` applies them, so the two runs agree); the sites hold the data files, so a
    `data` path is dropped (with a warning) rather than naming the run after one hospital's file."""
    cfg = with_dataset_defaults(cfg)
    if cfg.tracking.track:
        raise ConfigError("track (MLflow, TensorBoard) covers fedcare simulate for now; a networked run's "
                          "metrics.jsonl grows round by round in its run folder: drop the track key")
    if not cfg.data.files:
        return cfg
    log.warning("the config's 'data' key is ignored: each site reads its own file (fedcare site --data)")
    return cfg.replace(data=())


def plan_message(cfg: FederationConfig, run_id: str, sites: list[str], prepared: PreparedDataset | None) -> dict:
    """The declarative plan every task carries: the config (no file paths) and the data's shape.
    A site builds its model and training from it; no code is ever sent."""
    config = {k: v for k, v in cfg.flat(mode="json").items() if k not in ("data", "out", "track")}
    shape = None if prepared is None else prepared.shape.to_json()
    return {"run": run_id, "config": config, "shape": shape, "sites": list(sites)}


def _appended(write) -> None:
    """metrics.jsonl as the run goes is a convenience (the checkpoints hold the rows, and the run folder
    writes the whole file at the end): a disk that refuses it is a warning, not a pause."""
    try:
        write()
    except OSError as exc:
        log.warning("cannot extend metrics.jsonl (%s); the run goes on and writes it whole at the end", exc.strerror)


class Coordinator:
    def __init__(self, cfg: FederationConfig, settings: ServiceSettings, render_report: ReportRenderer | None = None):
        if cfg.data.treatment is not None:  # the effects' exchange (fedcare.federation.effects) has no network route yet
            raise ConfigError("treatment effects are estimated by fedcare simulate only, not yet over the network; "
                              "drop treatment from the coordinator's config")
        self.cfg = cfg
        self.render_report = render_report  # report.html from (summary, metric rows): given by the interfaces
        self.settings = settings
        self.store_path = settings.database or settings.state / "coordinator.db"
        self.store = Store(self.store_path)
        self.board = Board()
        self.max_body = settings.max_body
        self.max_json = settings.max_json
        self._train_rows: dict[str, int] = {}  # what each site declared in preparation: bounds its num_examples
        self.poll_wait = settings.poll_wait
        self._thread: threading.Thread | None = None
        self._run_id: str | None = None
        self._halt = threading.Event()  # set by stop(): ends a wait for the disk too
        self.recent: deque[RoundRecord] = deque(maxlen=LIVE_ROUNDS)  # the live view's rounds of this run
        # a live federation (phases.py) sets these: who may call, whom a run asks, what it starts from
        self.members: Callable[[], list[str]] | None = None
        self.phase_sites: Callable[[], list[str]] | None = None
        self.warm_start: Callable[[], Params | None] | None = None
        self.fitted: Callable[[], PreparedDataset | None] | None = None  # the transforms a phase encodes with
        self.extra_status: Callable[[], dict] | None = None
        self.before_rounds: Callable[[str, NetworkTransport, PreparedDataset, int], None] | None = None
        self.summary_extra: Callable[[str], dict] | None = None  # blocks a phase adds to its summary (its drift)
        # set by a live federation: a site silent through a preparation question's deadline is dropped
        # from the phase (and told here); without it, preparation waits for every site
        self.on_silent: Callable[[str], None] | None = None

    def participants(self) -> list[str]:
        return self.members() if self.members else list(self.settings.sites)

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def train_rows(self, site_id: str) -> int | None:
        return self._train_rows.get(site_id)

    # ----- admin --------------------------------------------------------------------------------

    def start(self, config: Mapping | None = None) -> str:
        """Start a run: with the coordinator's config, or with `config` (flat keys, from `fedcare admin
        start --config`), which then stays the config of the runs that follow."""
        if self._thread is not None and self._thread.is_alive():
            raise Refused(409, f"run {self._run_id} is under way; stop it first")
        if config is not None:
            try:
                self.cfg = for_sites(make_config(config))
            except FedcareError as exc:
                raise Refused(422, f"config refused: {exc}") from None
        run_id = uuid.uuid4().hex[:12]
        self.store.create_run(run_id, self.cfg.to_yaml())
        self._launch(run_id, resume=False)
        return run_id

    def recover(self) -> str | None:
        """At start-up: resume the run a crash interrupted, if there is one: the database's, or, when
        the database lost it (deleted, emptied), the one a run folder's checkpoint holds."""
        latest = self.store.latest_run()
        if latest is None:
            return self._recover_from_disk()
        if latest["status"] not in ("running", "paused"):
            return None
        self.cfg = make_config(yaml.safe_load(latest["config"]))
        self._launch(latest["run_id"], resume=True)
        return latest["run_id"]

    def _recover_from_disk(self) -> str | None:
        """A run folder with a checkpoint and no summary.json is a run that was under way: its config,
        its data preparation and its checkpoint are all in the folder, so it resumes from them."""
        found = sorted((p.parents[1] for p in (self.settings.state / "runs").glob("*/checkpoints/coordinator.safetensors")
                        if not (p.parents[1] / "summary.json").exists()), key=lambda d: d.stat().st_mtime)
        if not found:
            return None
        run_dir = found[-1]
        aside = f"or move '{run_dir}' aside to start afresh"
        try:
            cfg = make_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
        except (OSError, yaml.YAMLError, FedcareError) as exc:
            raise ConfigError(f"the database holds no run, and the unfinished run in '{run_dir}' has no readable "
                              f"config.yaml ({exc}); restore it from a backup, {aside}") from None
        prepared = Checkpoints(run_dir).load_prepared(aside)
        log.warning("the database holds no run, but '%s' holds an unfinished run's checkpoint: resuming it", run_dir)
        self.store.create_run(run_dir.name, cfg.to_yaml())
        self.store.save_prepared(run_dir.name, prepared)
        self.cfg = cfg
        self._launch(run_dir.name, resume=True)
        return run_dir.name

    def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise Refused(409, "no run is under way")
        self._halt.set()
        self.board.stop("stopped by the admin")

    def status(self) -> dict:
        latest = self.store.latest_run()
        live = {"live": self.extra_status()} if self.extra_status else {}
        if latest is None:
            return {"status": "idle", "sites": self.participants(), "runs": [], **live}
        open_task = self.board.open_task() if latest["status"] in ("running", "paused") else None
        waiting = [s for s in open_task["sites"] if s not in open_task["answered"]] if open_task else []
        return {"run_id": latest["run_id"], "status": latest["status"], "reason": latest["reason"],
                "sites": self.participants(), "open_task": open_task, "waiting_for": waiting,
                "rounds": self.store.rounds(latest["run_id"]), "runs": self.store.runs(), **live}

    # ----- the run ------------------------------------------------------------------------------

    def _launch(self, run_id: str, resume: bool) -> None:
        self._run_id = run_id
        self.recent.clear()
        self._train_rows = {}
        old, self.board = self.board, Board(on_status=lambda status, reason: self._status(run_id, status, reason))
        old.retire()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._drive, args=(run_id, resume), name=f"run-{run_id}", daemon=True)
        self._thread.start()

    def _status(self, run_id: str, status: str, reason: str) -> None:
        self.store.set_status(run_id, status, reason)
        (log.warning if status == "paused" else log.info)("run %s %s%s", run_id, status, f": {reason}" if reason else "")

    def _drive(self, run_id: str, resume: bool) -> None:
        try:
            self._run(run_id, resume)
            self._status(run_id, "completed", f"run folder {self.run_dir(run_id)}")
        except RunStopped as exc:
            self._status(run_id, "stopped", str(exc))
            self.board.finish({"run": run_id, "status": "stopped", "reason": str(exc)})
        except FedcareError as exc:
            self._status(run_id, "failed", str(exc))
            self.board.finish({"run": run_id, "status": "failed", "reason": str(exc)})
        except Exception as exc:  # a bug: record it, keep serving
            log.exception("run %s failed", run_id)
            self._status(run_id, "failed", f"{type(exc).__name__}: {exc}")
            self.board.finish({"run": run_id, "status": "failed", "reason": "internal error; see the coordinator's log"})

    def _durably(self, run_id: str, what: str, write: Callable[[], object]) -> None:
        """A write to the run folder, retried while the disk refuses it (made read-only, full): the run
        waits, paused, says why, and goes on once the write succeeds. Every write retried here is whole
        (files renamed into place; checkpoints.save rewrites its round's rows), so a retry adds nothing twice."""
        said = None
        while True:
            try:
                write()
            except OSError as exc:
                reason = (f"cannot write {what} in '{self.run_dir(run_id)}' ({exc.strerror}); restore write access "
                          f"(or free disk space): the run retries every {DISK_RETRY:g} s")
                if reason != said:
                    self._status(run_id, "paused", reason)
                    said = reason
                if self._halt.wait(DISK_RETRY):
                    raise RunStopped("stopped by the admin") from None
                continue
            if said is not None:
                self._status(run_id, "running", "")
            return

    def run_dir(self, run_id: str) -> Path:
        return Path(self.cfg.run.out) if self.cfg.run.out else self.settings.state / "runs" / run_id

    def _run(self, run_id: str, resume: bool) -> None:
        started = time.perf_counter()
        cfg, sites = self.cfg, self.phase_sites() if self.phase_sites else self.participants()
        timing = Timing(self.settings.deadline, cfg.algorithm.min_sites)
        folder, checkpoints = RunFolder(self.run_dir(run_id)), Checkpoints(self.run_dir(run_id))
        stored = self.store.latest_run()
        if resume and stored and stored["prepared"]:
            prepared = PreparedDataset.from_json(stored["prepared"])
        else:
            self._durably(run_id, "config.yaml", lambda: folder.prepare(cfg))
            if checkpoints.path.exists():
                shutil.rmtree(checkpoints.path)
            asker = NetworkTransport(self.board, sites, timing, plan_message(cfg, run_id, sites, None))
            counter = iter(range(1, 1_000_000))

            def ask(phase: str, question: dict) -> dict[str, dict]:
                task_id = f"prepare.{next(counter)}"
                quorum = min(cfg.algorithm.min_sites, len(sites)) if self.on_silent else None
                answers = asker.ask_all(task_id, "prepare", {"phase": phase, "question": question}, None, sites,
                                        quorum=quorum)
                if len(answers) < len(sites):  # closed at the deadline on quorum: the others were silent
                    raise _Silent([s for s in sites if s not in answers], phase)
                for sid, a in answers.items():
                    if isinstance(a.get("declined"), str):  # outside the site's approval policy
                        raise DataError(f"site '{sid}' declined the run: {a['declined'][:300]}")
                return {sid: a.get("answer") for sid, a in answers.items()}

            prepared = self._prepare(cfg, sites, ask)
            self.store.save_prepared(run_id, prepared.to_json())
            self._durably(run_id, "the data preparation", lambda: checkpoints.save_prepared(prepared.to_json()))
        site_rows = prepared.preprocessing.get("site_rows", {})
        sites = [s for s in sites if s in site_rows] if site_rows else sites  # without the sites dropped in preparation
        self._train_rows = {site: rows["train"] for site, rows in site_rows.items()}
        plan = make_plan(cfg, prepared.shape, sites)
        initial = self._initial(run_id, plan.initial_params())
        loaded = checkpoints.load([]) if resume else None
        start, rows = (loaded[0], loaded[2]) if loaded else (None, [])
        message = plan_message(cfg, run_id, sites, prepared)
        broadcast = parse_scheme(cfg.compression.compress_broadcast)
        transport = NetworkTransport(self.board, sites, timing, message, start.bytes_sent if start else 0,
                                     secure=plan.secure, broadcast=broadcast,
                                     bytes_upload=start.bytes_upload if start else 0)
        if self.before_rounds is not None and start is None:  # a live phase's drift check, once per phase
            self.before_rounds(run_id, transport, prepared, min(cfg.algorithm.min_sites, len(sites)))
        pending: list[dict] = []

        def on_round(record: RoundRecord) -> None:
            self.recent.append(record)
            pending.extend(metric_rows("federated", [record]))
            answered = sorted(record.train)
            self.store.close_round(run_id, record.round, record.selected, answered,
                                   {s: e["refused"] for s, e in record.anomalies.items() if e.get("refused")})
            score = "" if record.val_score is None else f", validation {plan.task.headline} {record.val_score:.3f}"
            log.info("run %s round %d: %d of %d selected sites answered%s", run_id, record.round, len(answered),
                     len(record.selected), score)

        def on_checkpoint(checkpoint) -> None:
            # the round's global params exactly (a resume checks them): the bytes just sent to the
            # sites, or the full-precision params when broadcasts travel compressed (lossy)
            blob = (params_to_bytes(checkpoint.params) if broadcast.active
                    else transport.params_bytes(checkpoint.params)[0])
            self._durably(run_id, f"round {checkpoint.round}'s checkpoint",
                          lambda: (checkpoints.save_round(checkpoint.round, blob), checkpoints.save(checkpoint, {}, pending)))
            rows.extend(pending)
            _appended(lambda: history.log(pending))
            pending.clear()

        history = JsonlTracker(folder.path / "metrics.jsonl")  # grows round by round, so a crash leaves it
        _appended(lambda: history.start(cfg, rows))
        result = RoundEngine(plan.algorithm, transport, plan.settings, on_round, on_checkpoint).run(initial, start)
        bytes_sent = transport.bytes_sent
        final = params_to_bytes(result.params)  # the final model goes out at full precision, as it is saved
        quorum = min(cfg.algorithm.min_sites, len(sites))  # a site lost late in the run leaves a gap, not a hang
        per_model = {"federated": _metric(transport.ask_all("final.test", "evaluate", {"splits": ["test"]}, final,
                                                            quorum=quorum), "test")}
        if cfg.personalization.mode != "none":
            requests = {sid: {"request": plan.personalize_request(i).to_json()} for i, sid in enumerate(sites)}
            answers = transport.ask_all("final.personalize", "personalize", {"splits": ["val", "test"]}, final,
                                        quorum=quorum, per_site=requests)
            per_model["personalized"] = _metric(answers, "test")
        if cfg.run.baselines:
            answers = transport.ask_all("final.local", "local", {"splits": ["test"]}, None, quorum=quorum)
            per_model["local"] = _metric(answers, "test")
            rows += [row for a in answers.values() for row in a.get("rows", [])]
        facts = RunFacts(prepared.name, prepared.shape.task, prepared.shape.feature_names, prepared.preprocessing,
                         prepared.preprocessing.get("site_rows", {}), prepared.shape)
        summary = summarize(cfg, facts, plan.task, result, per_model, rows, bytes_sent, started, cfg.robustness.aggregator,
                            attacked=[])
        summary["baselines"] = {"pooled": "not run: pooling patient rows is what a federation avoids"}
        if self.summary_extra is not None:
            summary.update(self.summary_extra(run_id))
        self._durably(run_id, "the run's results", lambda: folder.write_result(cfg, facts, summary, rows,
                                                                               result.params, {}))
        if self.render_report is not None:
            html = self.render_report(summary, rows, cfg.flat(mode="json"))
            self._durably(run_id, "report.html", lambda: folder.write_report(html))
        self.board.finish({"run": run_id, "status": "completed", "summary": {k: summary[k] for k in ("rounds", "metric")}})

    def _initial(self, run_id: str, fresh: Params) -> Params:
        """A live phase starts from the current version when its arrays fit this phase's model; a
        model whose shape changed (the data's columns changed) starts afresh, and says so."""
        warm = self.warm_start() if self.warm_start else None
        if warm is None:
            return fresh
        if {k: v.shape for k, v in warm.items()} != {k: v.shape for k, v in fresh.items()}:
            reason = "the current version's arrays do not fit this phase's model (the data's columns changed): trained afresh"
            log.warning("run %s: %s", run_id, reason)
            self.store.audit(None, "live phase", 200, f"run {run_id}: {reason}")
            return fresh
        return {k: warm[k].astype(fresh[k].dtype, copy=True) for k in fresh}

    def _prepare(self, cfg: FederationConfig, sites: list[str], ask) -> PreparedDataset:
        """Data preparation with `sites`; a site whose answer cannot be read, or (live) that stayed
        silent through a question's deadline, is dropped from `sites` (its reason logged and audited)
        and preparation starts again without it."""
        while True:
            try:
                return prepare(cfg.data, sites, ask, reuse=self.fitted() if self.fitted else None)
            except SiteAnswerError as exc:
                self._drop(cfg, sites, [exc.site], 422, str(exc))
            except _Silent as exc:
                self._drop(cfg, sites, exc.sites, 408, f"no answer to the '{exc.phase}' preparation question within "
                                                       f"the deadline ({self.settings.deadline:g} s)")
                told = self.on_silent or (lambda site: None)  # set whenever _Silent can be raised
                for site in exc.sites:
                    told(site)

    def _drop(self, cfg: FederationConfig, sites: list[str], dropped: list[str], status: int, reason: str) -> None:
        for site in dropped:
            sites.remove(site)
            self.store.audit(site, "prepare", status, f"dropped from the run: {reason}")
            log.warning("site %s dropped from the run: %s", site, reason)
        if len(sites) < max(1, cfg.algorithm.min_sites):
            named = ", ".join(f"site '{s}'" for s in dropped)
            raise DataError(f"{reason}; without {named}, {len(sites)} sites remain and "
                            f"{cfg.algorithm.min_sites} are needed") from None


class _Silent(Exception):
    """Sites that gave no answer to a preparation question by its deadline."""

    def __init__(self, sites: list[str], phase: str):
        super().__init__(f"{', '.join(sites)} silent at '{phase}'")
        self.sites, self.phase = sites, phase


def _metric(answers: dict, split: str) -> dict:
    return {sid: a["metrics"][split] for sid, a in answers.items() if split in a.get("metrics", {})}

